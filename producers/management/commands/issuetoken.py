"""Print a new feed token for a producer on stdout, and nothing else there.

The issue is recorded like one made in the admin: in the log always, and in the
admin's history when --by names the staff user who asked for it.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from producers.credentials import acting_as
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
        parser.add_argument(
            "--by",
            metavar="USERNAME",
            help="the staff user issuing it: recorded in the admin's history "
            "(without it, only the log records the issue)",
        )

    def handle(self, *args, producer: str, label: str, for_worker: bool, **options):
        target = self.producer(producer)
        user = self.staff_user(options.get("by"))
        with acting_as(user, via="manage.py issuetoken"):
            token, plaintext = FeedToken.issue(target, label, for_worker=for_worker)
        self.stderr.write(
            f"issued feed token {token.prefix}… for producer {target.name}"
        )
        self.stdout.write(plaintext)

    def producer(self, name: str) -> Producer:
        try:
            return Producer.objects.get(name=name)
        except Producer.DoesNotExist:
            names = ", ".join(Producer.objects.values_list("name", flat=True))
            raise CommandError(
                f"no producer named {name!r} (producers: {names or 'none'})"
            ) from None

    def staff_user(self, username: str | None):
        if username is None:
            return None
        user = get_user_model().objects.filter(username=username).first()
        if user is None or not user.is_staff or not user.is_active:
            raise CommandError(
                f"--by {username}: no active staff user of that name; give the "
                "username you log in to the admin with"
            )
        return user
