"""Start a producer worker: `manage.py runproducer NAME`.

Needs the hub's URL (CANDLECAST_HUB_URL, default http://127.0.0.1:$PORT) and the
producer key (CANDLECAST_PRODUCER_KEY or CANDLECAST_PRODUCER_KEY_FILE). `--workers N`
analyses the pairs on N processes (default: one per core).
"""

from __future__ import annotations

import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from controlplane.lib.workers import hub_url, read_secret, run_until_signalled
from producers import worker


class Command(BaseCommand):
    help = "Run the producer worker for producer NAME (publishes to the hub)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the producer's name")
        parser.add_argument(
            "--workers",
            type=int,
            default=os.cpu_count() or 1,
            help="analysis processes, each with a fixed share of the pairs "
            "(default: the cores, %(default)s here; 1: analyse in this process)",
        )

    def handle(self, *args, name: str, workers: int, **options):
        if workers < 1:
            raise CommandError(f"--workers must be 1 or more, not {workers}")
        config = worker.WorkerConfig(
            name=name,
            hub_url=hub_url(),
            key=read_secret("CANDLECAST_PRODUCER_KEY"),
            message_size_limit=settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB << 20,
            workers=workers,
        )
        status = run_until_signalled(lambda stop: worker.run(config, stop))
        if status:
            sys.exit(status)
