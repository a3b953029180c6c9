"""Print a new feed token for a producer on stdout, and nothing else there."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from producers.models import FeedToken, Producer


class Command(BaseCommand):
    help = "Issue a feed token for PRODUCER and print it (only the token) on stdout."

    def add_arguments(self, parser):
        parser.add_argument("producer", help="the producer's name")
        parser.add_argument("--label", default="", help="who will use the token")
        parser.add_argument(
            "--for-worker",
            action="store_true",
            help="for a candlecast consumer worker (kept encrypted: config API)",
        )

    def handle(self, *args, producer: str, label: str, for_worker: bool, **options):
        try:
            target = Producer.objects.get(name=producer)
        except Producer.DoesNotExist:
            names = ", ".join(Producer.objects.values_list("name", flat=True))
            raise CommandError(
                f"no producer named {producer!r} (producers: {names or 'none'})"
            ) from None
        token, plaintext = FeedToken.issue(target, label, for_worker=for_worker)
        self.stderr.write(
            f"issued feed token {token.prefix}… for producer {target.name}"
        )
        self.stdout.write(plaintext)
