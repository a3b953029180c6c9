"""The status snapshot in Prometheus' text exposition format (version 0.0.4).

Counters are summed over the live hub processes; when a hub process stops, its part
leaves the sums, which Prometheus reads as a counter reset.
"""

from __future__ import annotations

from collections.abc import Iterator

from controlplane.overview import StatusSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# (key in a producer's totals, help text)
PRODUCER_COUNTERS = [
    ("publishes", "publish messages received from the producer worker"),
    ("frames", "analysed frames stored (one per pair and publish)"),
    ("candles", "new candles published"),
    ("bytes_in", "bytes of publish messages received"),
    ("deliveries", "broadcast messages sent to feed subscribers"),
    ("bytes_out", "bytes of broadcast messages sent to feed subscribers"),
    ("replies", "replies sent to feed subscribers' requests"),
    ("reply_bytes", "bytes of replies sent to feed subscribers' requests"),
    ("dropped", "broadcasts lost before reaching a feed socket (layer overflow)"),
    ("oversize", "replies refused for the message size limit"),
    ("rejected", "publish messages the hub refused (malformed, or a rewound history)"),
    ("superseded", "broadcasts a feed socket behind skipped for a newer one"),
    ("slow_closed", "feed sockets closed as too slow (over their cap or no pong)"),
]
PRODUCER_STATES = ("online", "late", "offline", "disabled")
CONSUMER_STATES = ("online", "offline", "never", "disabled")


def render(snapshot: StatusSnapshot) -> str:
    lines = [
        *hub_lines(snapshot),
        *producer_lines(snapshot),
        *analysis_lines(snapshot),
        *pool_lines(snapshot),
        *pair_lines(snapshot),
        *consumer_lines(snapshot),
    ]
    return "\n".join(lines) + "\n"


def escape(value: object) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sample(name: str, value: float, **labels: object) -> str:
    inner = ",".join(f'{key}="{escape(v)}"' for key, v in labels.items())
    number = f"{value:.3f}" if isinstance(value, float) else str(value)
    return (
        f"candlecast_{name}{{{inner}}} {number}"
        if inner
        else f"candlecast_{name} {number}"
    )


def family(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP candlecast_{name} {text}", f"# TYPE candlecast_{name} {kind}"]


def hub_lines(snapshot: StatusSnapshot) -> Iterator[str]:
    yield from family(
        "hub_processes", "gauge", "Hub processes whose counters are live."
    )
    yield sample("hub_processes", snapshot["processes"])
    yield from family(
        "handshakes_refused_total",
        "counter",
        "Feed and publish handshakes refused, by reason (throttled: too many "
        "failures from one address).",
    )
    for reason, count in sorted(snapshot["refused"].items()):
        yield sample("handshakes_refused_total", count, reason=reason)


def producer_lines(snapshot: StatusSnapshot) -> Iterator[str]:
    producers = snapshot["producers"]
    yield from family("producer_state", "gauge", "1 for the producer's state.")
    for p in producers:
        for state in PRODUCER_STATES:
            value = int(p["state"] == state)
            yield sample("producer_state", value, producer=p["name"], state=state)
    for key, text in PRODUCER_COUNTERS:
        yield from family(f"producer_{key}_total", "counter", f"{text.capitalize()}.")
        for p in producers:
            yield sample(f"producer_{key}_total", p["totals"][key], producer=p["name"])
    yield from family("feed_subscribers", "gauge", "Feed sockets connected.")
    for p in producers:
        yield sample("feed_subscribers", len(p["subscribers"]), producer=p["name"])
    text = "Feed sockets that read slower than the feed (the hub holds their backlog)."
    yield from family("feed_subscribers_behind", "gauge", text)
    for p in producers:
        behind = sum(1 for s in p["subscribers"] if s["behind"])
        yield sample("feed_subscribers_behind", behind, producer=p["name"])
    relays = [
        (p["name"], p["upstream"])
        for p in producers
        if p["upstream"] and p["upstream"]["standby"]
    ]
    yield from family(
        "relay_switches_total",
        "counter",
        "Switches between a relay's primary and standby FreqTrade bots.",
    )
    for name, upstream in relays:
        yield sample("relay_switches_total", upstream["switches"], producer=name)
    yield from family(
        "relay_following_standby", "gauge", "1 while a relay follows its standby bot."
    )
    for name, upstream in relays:
        following = int(upstream["following"] == "standby")
        yield sample("relay_following_standby", following, producer=name)
    yield from family(
        "producer_last_publish_timestamp_seconds",
        "gauge",
        "When the hub last received a publish from the producer worker.",
    )
    for p in producers:
        if p["last_publish"] is not None:
            yield sample(
                "producer_last_publish_timestamp_seconds",
                float(p["last_publish"]),
                producer=p["name"],
            )


def analysis_lines(snapshot: StatusSnapshot) -> Iterator[str]:
    """The producer workers' analysis processes, as each worker last reported."""
    reports = [(p["name"], p["analysis"]) for p in snapshot["producers"]]
    analyses = [(name, a) for name, a in reports if a is not None]
    yield from family(
        "producer_analysis_processes",
        "gauge",
        "The producer worker's analysis processes (1: its own process).",
    )
    for name, a in analyses:
        yield sample("producer_analysis_processes", a["workers"], producer=name)
    yield from family(
        "producer_candle_analysis_seconds",
        "gauge",
        "Seconds the last candle's analysis took, all pairs.",
    )
    for name, a in analyses:
        if a["candle_seconds"] is not None:
            value = float(a["candle_seconds"])
            yield sample("producer_candle_analysis_seconds", value, producer=name)
    processes = [(name, p) for name, a in analyses for p in a["processes"]]
    yield from family(
        "producer_analysis_process_seconds",
        "gauge",
        "The analysis process's time for the last candle.",
    )
    for name, p in processes:
        if p["seconds"] is not None:
            yield sample(
                "producer_analysis_process_seconds",
                float(p["seconds"]),
                producer=name,
                process=p["index"],
            )
    yield from family(
        "producer_analysis_process_pairs", "gauge", "Pairs pinned to the process."
    )
    for name, p in processes:
        count = len(p["pairs"])
        yield sample(
            "producer_analysis_process_pairs", count, producer=name, process=p["index"]
        )
    yield from family(
        "producer_analysis_process_restarts_total",
        "counter",
        "Times the analysis process was replaced after it died.",
    )
    for name, p in processes:
        yield sample(
            "producer_analysis_process_restarts_total",
            p["restarts"],
            producer=name,
            process=p["index"],
        )


def pool_lines(snapshot: StatusSnapshot) -> Iterator[str]:
    """The named producer workers of each producer's pool."""
    workers = [(p["name"], w) for p in snapshot["producers"] for w in p["workers"]]
    yield from family(
        "producer_worker_pairs",
        "gauge",
        "Pairs the hub assigned to the pool's producer worker.",
    )
    for name, w in workers:
        if w["pairs"] is not None:
            yield sample(
                "producer_worker_pairs", w["pairs"], producer=name, worker=w["name"]
            )
    yield from family(
        "producer_worker_candle_seconds",
        "gauge",
        "Seconds the pool worker's last candle's analysis took, its pairs.",
    )
    for name, w in workers:
        if w["candle_seconds"] is not None:
            yield sample(
                "producer_worker_candle_seconds",
                float(w["candle_seconds"]),
                producer=name,
                worker=w["name"],
            )


def pair_lines(snapshot: StatusSnapshot) -> Iterator[str]:
    now = snapshot["generated"]
    yield from family(
        "pair_candle_age_seconds",
        "gauge",
        "Seconds since the hub received the pair's newest candle.",
    )
    for p in snapshot["producers"]:
        for row in p["pairs"]:
            if row["received"] is not None:
                age = float(max(0.0, now - row["received"]))
                yield sample(
                    "pair_candle_age_seconds", age, producer=p["name"], pair=row["pair"]
                )
    yield from family("pair_stale", "gauge", "1 when the pair is stale or waiting.")
    for p in snapshot["producers"]:
        for row in p["pairs"]:
            value = int(row["state"] != "ok")
            yield sample("pair_stale", value, producer=p["name"], pair=row["pair"])


def consumer_lines(snapshot: StatusSnapshot) -> Iterator[str]:
    consumers = snapshot["consumers"]
    yield from family("consumer_state", "gauge", "1 for the consumer's state.")
    for c in consumers:
        for state in CONSUMER_STATES:
            value = int(c["state"] == state)
            yield sample("consumer_state", value, consumer=c["name"], state=state)
    yield from family(
        "consumer_lag_candles",
        "gauge",
        "Candles the consumer's newest candle is behind the producer's, per pair.",
    )
    for c in consumers:
        for follow in c["follows"]:
            for row in follow["pairs"]:
                if row["lag"] is not None:
                    yield sample(
                        "consumer_lag_candles",
                        row["lag"],
                        consumer=c["name"],
                        follow=follow["name"],
                        pair=row["pair"],
                    )
    yield from family(
        "consumer_reconnects_total", "counter", "Reconnects the consumer reported."
    )
    for c in consumers:
        for follow in c["follows"]:
            yield sample(
                "consumer_reconnects_total",
                follow["reconnects"],
                consumer=c["name"],
                follow=follow["name"],
            )
