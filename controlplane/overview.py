"""build_status_snapshot(): what the status page, status.json and the StatusSocket show.

It joins the definitions (database) with the hub's counters (controlplane.lib.counters)
and
the consumer workers' reports (cache), and judges freshness: which producer is offline
or late, which pair is stale, which consumer is offline or lagging, and why in words.
"""

from __future__ import annotations

import time
from typing import TypedDict

from django.conf import settings
from django.core.cache import cache

from consumers.models import Consumer
from controlplane.consumer_rows import ConsumerRow, consumer_row, token_owners
from controlplane.lib import counters
from controlplane.producer_rows import MIN_LATE_SECONDS, ProducerRow, producer_row
from producers.models import Producer


class Rules(TypedDict):
    heartbeat_seconds: int
    consumer_offline_seconds: int
    window_seconds: int
    min_late_seconds: float


class StatusSnapshot(TypedDict):
    generated: float
    processes: int
    refused: dict[str, int]
    producers: list[ProducerRow]
    consumers: list[ConsumerRow]
    problems: list[str]
    rules: Rules


def build_status_snapshot(now: float | None = None) -> StatusSnapshot:
    """The whole status, judged at ``now`` (epoch seconds). Runs ORM queries."""
    now = time.time() if now is None else now
    hub = counters.read_state(now)
    producers = list(Producer.objects.all())
    consumers = list(
        Consumer.objects.prefetch_related("follows__producer", "follows__feed_token")
    )
    owners = token_owners(consumers)
    rows = [
        producer_row(p, hub["producers"].get(p.name), owners, now) for p in producers
    ]
    by_name = {p.name: (p, hub["producers"].get(p.name)) for p in producers}
    reports = cache.get_many([c.status_cache_key for c in consumers])
    consumer_rows = [
        consumer_row(c, reports.get(c.status_cache_key), by_name, hub, owners, now)
        for c in consumers
    ]
    return {
        "generated": now,
        "processes": hub["processes"],
        "refused": hub["refused"],
        "producers": rows,
        "consumers": consumer_rows,
        "problems": problems(rows, consumer_rows),
        "rules": {
            "heartbeat_seconds": counters.PROCESS_TTL,
            "consumer_offline_seconds": settings.CANDLECAST_CONSUMER_OFFLINE_SECONDS,
            "window_seconds": counters.WINDOW_SECONDS,
            "min_late_seconds": MIN_LATE_SECONDS,
        },
    }


def problems(producers: list[ProducerRow], consumers: list[ConsumerRow]) -> list[str]:
    """One line per thing that needs a look, for the page's banner."""
    lines = []
    for p in producers:
        if p["state"] not in ("online", "disabled"):
            lines.append(f"Producer {p['name']} is {p['state']}: {p['reason']}")
        if p["rejection"]:
            lines.append(f"Producer {p['name']}: {p['rejection']}")
        stale = [r for r in p["pairs"] if r["state"] == "stale"]
        if stale and p["state"] == "online":
            lines.append(
                f"Producer {p['name']}: {len(stale)} stale pair(s), e.g. "
                f"{stale[0]['pair']}: {stale[0]['reason']}"
            )
    for c in consumers:
        if c["problem"] and c["state"] == "online":
            lines.append(f"Consumer {c['name']}: {c['reason']}")
        elif c["problem"]:
            lines.append(f"Consumer {c['name']} is {c['state']}: {c['reason']}")
    return lines
