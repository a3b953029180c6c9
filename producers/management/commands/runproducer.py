"""Start a producer worker: `manage.py runproducer NAME`.

Needs the hub's URL (CANDLECAST_HUB_URL, default http://127.0.0.1:$PORT) and the
producer key (CANDLECAST_PRODUCER_KEY or CANDLECAST_PRODUCER_KEY_FILE). `--workers N`
analyses the pairs on N processes (default: one per core). `--worker-name NAME`
(default host:pid) names this worker in its producer's pool: several workers of one
producer share its pairs, and take over a lost one's.
"""

from __future__ import annotations

import os
import socket
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from controlplane.lib.wire.publish import MAX_WORKER_NAME, worker_name_refusal
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
        parser.add_argument(
            "--worker-name",
            default=None,
            help="this worker's name in the producer's pool, unique among its "
            "workers (default: host:pid); letters, digits and . _ : @ -",
        )

    def handle(self, *args, name: str, workers: int, worker_name, **options):
        if workers < 1:
            raise CommandError(f"--workers must be 1 or more, not {workers}")
        worker_name = worker_name or default_worker_name()
        why = worker_name_refusal(worker_name)
        if why is not None:
            raise CommandError(f"--worker-name: {why}")
        config = worker.WorkerConfig(
            name=name,
            hub_url=hub_url(),
            key=read_secret("CANDLECAST_PRODUCER_KEY"),
            message_size_limit=settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB << 20,
            workers=workers,
            worker_name=worker_name,
        )
        status = run_until_signalled(lambda stop: worker.run(config, stop))
        if status:
            sys.exit(status)


def default_worker_name() -> str:
    """host:pid, the host's name cut and cleaned to fit a worker name."""
    pid = str(os.getpid())
    host = "".join(
        c if (c.isascii() and c.isalnum()) or c in "._-" else "-"
        for c in socket.gethostname()
    )
    host = host.lstrip("._-")[: MAX_WORKER_NAME - len(pid) - 1] or "worker"
    return f"{host}:{pid}"
