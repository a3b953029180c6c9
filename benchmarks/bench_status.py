"""What the status page costs the hub: CPU per status update with N pairs.

Run from the repository root: ``python benchmarks/bench_status.py [--pairs 100]
[--subscribers 100] [--redis redis://127.0.0.1:6379/15]``. It sets up a throwaway
SQLite database with one producer of N pairs and one consumer that follows it and
reports all N pairs, fills the hub's counters as a candle close would, then times
each step of the status path: the counting on the hot path, the flush to the cache
(once a second), build_status_snapshot() and its JSON (once per update, shared by
every StatusSocket of the process), /metrics, and the page's first paint.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def configure(redis_url: str | None) -> None:
    folder = tempfile.mkdtemp(prefix="bench-status-")
    os.environ["CANDLECAST_VAR_DIR"] = folder
    os.environ["DATABASE_URL"] = f"sqlite:///{folder}/bench.sqlite3"
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["DJANGO_SETTINGS_MODULE"] = "controlplane.settings"
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
        os.environ["CANDLECAST_REDIS_PREFIX"] = f"bench-status-{os.getpid()}"
    else:
        os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def cpu(step: Callable[[], object], repeat: int) -> float:
    """Median CPU seconds (process time) of one call."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    return statistics.median(times)


def seed(pairs: int, subscribers: int) -> list:
    from consumers.models import Consumer, Follow
    from controlplane.lib import counters
    from producers.models import Producer

    names = [f"C{n:03d}/USDT" for n in range(pairs)]
    producer = Producer.objects.create(
        name="bench", pairs=names, source_options={"seconds_per_candle": 5}
    )
    consumer = Consumer.objects.create(name="bench-consumer")
    Follow.objects.create(consumer=consumer, name="default", producer=producer)
    last = 1_793_527_200_000
    stamp = "2026-11-01T10:00:00+00:00"
    consumer.record_status(
        {
            "producers": {
                "default": {
                    "connected": True,
                    "reconnects": 0,
                    "last_error": None,
                    "pairs": {p: {"last_candle": stamp, "rows": 1500} for p in names},
                }
            },
            "started": stamp,
        }
    )
    counters.producer_connected("bench", "pub-1", "10.0.0.1")
    for n in range(subscribers):
        counters.feed_connected(
            "bench", f"feed-{n}", label=f"bot {n}", address=f"10.0.1.{n % 250}"
        )
    return [counters.PairUpdate(p, last, 1500, time.time()) for p in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--redis", default=None, help="a Redis URL for the cache")
    args = parser.parse_args()
    configure(args.redis)

    import orjson
    from django.template.loader import render_to_string
    from django.test import RequestFactory

    from controlplane import metrics
    from controlplane.lib import counters
    from controlplane.overview import build_status_snapshot

    updates = seed(args.pairs, args.subscribers)
    link = counters.feed_connected("bench", "feed-x", label="x", address="10.0.2.1")
    event = {"messages": [], "origin": "pub-1", "seq": 1}
    snapshot = build_status_snapshot()
    body = orjson.dumps({"type": "snapshot", "data": snapshot})
    request = RequestFactory().get("/status/")
    from django.contrib.auth.models import AnonymousUser

    request.user = AnonymousUser()
    context = {
        "snapshot": snapshot,
        "json_url": "/status.json",
        "chart_url": "/status/chart.json",
        "socket_path": "/ws/status",
        "request": request,
    }

    steps: list[tuple[str, Callable[[], object], str]] = [
        (
            "count one publish (hot path)",
            lambda: counters.published("bench", updates, 50_000, len(updates)),
            "once per publish message",
        ),
        (
            "count one delivery (hot path)",
            lambda: link.delivered(event, 2, 4_000),
            "once per subscriber and tick",
        ),
        (
            "flush this process's counters",
            lambda: counters.write_document(counters.counters.document(time.time())),
            "at most once a second",
        ),
        (
            "build_status_snapshot()",
            build_status_snapshot,
            "once per update, shared by the sockets",
        ),
        (
            "encode the snapshot (orjson)",
            lambda: orjson.dumps({"type": "snapshot", "data": snapshot}),
            "once per update and socket",
        ),
        ("render /metrics", lambda: metrics.render(snapshot), "per scrape"),
        (
            "render the page (first paint)",
            lambda: render_to_string("status/page.html", context),
            "per page load",
        ),
    ]
    print(
        f"status page cost: {args.pairs} pairs, {args.subscribers} feed subscribers, "
        f"cache {'Redis' if args.redis else 'local memory'}; median CPU of "
        f"{args.repeat} runs"
    )
    results = {}
    for name, step, when in steps:
        step()  # warm up
        results[name] = cpu(step, args.repeat)
        print(f"  {name:34s} {results[name] * 1e6:10.1f} us   ({when})")
    if args.redis:  # leave nothing behind in a shared Redis
        from django.core.cache import cache

        cache.delete_many([counters.REGISTRY_KEY, "consumer-status:bench-consumer"])
    update = (
        results["build_status_snapshot()"] + results["encode the snapshot (orjson)"]
    )
    print(f"  snapshot size: {len(body) / 1024:.1f} KiB per update")
    print(
        f"  CPU per status update (build + encode): {update * 1e3:.2f} ms; at the "
        f"most one update a second: {update * 100:.2f} % of one core"
    )


if __name__ == "__main__":
    main()
