"""Start a consumer worker: `manage.py runconsumer NAME [--strategy module.Class]`.

Needs the hub's URL (CANDLECAST_HUB_URL, default http://127.0.0.1:$PORT) and the
consumer key (CANDLECAST_CONSUMER_KEY or CANDLECAST_CONSUMER_KEY_FILE); everything else
(producers, feed tokens, settings) comes from the control plane.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand

from consumers import worker
from controlplane.lib.workers import hub_url, read_secret, run_until_signalled


class Command(BaseCommand):
    help = "Run the consumer worker for consumer NAME (follows its producers)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the consumer's name")
        parser.add_argument(
            "--strategy",
            default=worker.DEFAULT_STRATEGY,
            help="the consumer strategy as package.module.ClassName "
            f"(default {worker.DEFAULT_STRATEGY})",
        )
        parser.add_argument(
            "--dump",
            type=Path,
            metavar="DIR",
            help="a debugging aid: write the dataframes held at exit (on SIGTERM or "
            "Ctrl-C) as DIR/<producer>/<pair>.parquet, with / and : in the pair "
            "replaced by _, plus DIR/<producer>/whitelist.json",
        )

    def handle(
        self, *args, name: str, strategy: str, dump: Path | None = None, **options
    ):
        config = worker.WorkerConfig(
            name=name,
            hub_url=hub_url(),
            key=read_secret("CANDLECAST_CONSUMER_KEY"),
            strategy=strategy,
            dump=dump,
        )
        status = run_until_signalled(lambda stop: worker.run(config, stop))
        if status:
            sys.exit(status)
