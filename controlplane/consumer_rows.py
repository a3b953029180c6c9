"""The consumers' part of the status snapshot: online or not, and lag per pair.

A consumer worker reports every 10 s (consumers.views.status); it is offline after
CANDLECAST_CONSUMER_OFFLINE_SECONDS without a report, or as soon as every feed socket
of its tokens closed after its last report. Lag compares its newest candle per pair
with the producer's newest as the hub held it when the report was sent.
"""

from __future__ import annotations

from typing import TypedDict

from django.conf import settings

from consumers.models import Consumer, Follow
from controlplane.lib import counterdocs
from controlplane.lib.candles import epoch_ms, timeframe_ms
from controlplane.lib.wording import duration, iso_ms, parse_iso
from producers.models import FeedToken, Producer

# A consumer's candle is compared with the producer's as it was this long before the
# consumer's report arrived: a broadcast in flight is not a lag.
LAG_TOLERANCE_SECONDS = 1.0


class LagRow(TypedDict):
    pair: str
    last_candle: str | None
    producer_candle: str | None
    lag: int | None  # candles behind the producer; None: cannot tell
    rows: int


class FollowRow(TypedDict):
    name: str
    kind: str  # candlecast | freqtrade
    producer: str | None
    target: str
    connected: bool | None  # None: not in the last report
    reconnects: int
    last_error: str | None
    state: str  # ok | disconnected | lagging | unknown
    reason: str
    newest_candle: str | None  # its newest candle over the pairs
    lag: int | None  # its worst lag over the pairs
    pairs: list[LagRow]


class ConsumerRow(TypedDict):
    name: str
    enabled: bool
    state: str  # online | offline | never | disabled
    reason: str
    problem: bool
    last_report: float | None
    started: str | None
    follows: list[FollowRow]
    signals: list[str]


def token_owners(consumers: list[Consumer]) -> dict[int, str]:
    """Feed token id -> the consumer whose follow hands it out (rotations included)."""
    successors = dict(FeedToken.objects.values_list("id", "successor_id"))
    owners: dict[int, str] = {}
    for consumer in consumers:
        for follow in consumer.follows.all():
            token = follow.feed_token_id
            while token is not None and token not in owners:
                owners[token] = consumer.name
                token = successors.get(token)
    return owners


def consumer_row(
    consumer: Consumer,
    stored: dict | None,
    producers: dict[str, tuple[Producer, counterdocs.ProducerDoc | None]],
    hub: counterdocs.HubState,
    owners: dict[int, str],
    now: float,
) -> ConsumerRow:
    report = stored["status"] if stored else None
    received = parse_iso(stored["received"]) if stored else None
    follows = [
        follow_row(f, report, received, producers) for f in consumer.follows.all()
    ]
    state, reason = consumer_state(consumer, received, hub, owners, now)
    if state != "online":
        for follow in follows:  # what the last report said, no longer known
            if follow["state"] != "unknown":
                follow["state"], follow["reason"] = "unknown", "as of its last report"
    if state == "online":
        failing = [f for f in follows if f["state"] not in ("ok", "unknown")]
        reason = "; ".join(f"{f['name']}: {f['reason']}" for f in failing)
    signals = (report or {}).get("signals") or {}
    return {
        "name": consumer.name,
        "enabled": consumer.enabled,
        "state": state,
        "reason": reason,
        "problem": state in ("offline", "never") or bool(reason and state == "online"),
        "last_report": received,
        "started": (report or {}).get("started"),
        "follows": follows,
        "signals": signal_lines(signals),
    }


def consumer_state(
    consumer: Consumer,
    received: float | None,
    hub: counterdocs.HubState,
    owners: dict[int, str],
    now: float,
) -> tuple[str, str]:
    if not consumer.enabled:
        return "disabled", "disabled in the admin"
    if received is None:
        return "never", "no status report yet: is its consumer worker running?"
    limit = settings.CANDLECAST_CONSUMER_OFFLINE_SECONDS
    if now - received > limit:
        return "offline", f"no status report for {duration(now - received)}"
    left = feed_departure(consumer.name, hub, owners)
    if left is not None and left > received:
        # Its worker closed every feed socket after its last report: stopped, or
        # about to say in its next report why it is reconnecting.
        return "offline", (
            f"its feed connections closed {duration(now - left)} ago; "
            "no status report since"
        )
    return "online", ""


def feed_departure(
    name: str, hub: counterdocs.HubState, owners: dict[int, str]
) -> float | None:
    """When the consumer's last feed socket closed; None while one is connected."""
    tokens = {token for token, owner in owners.items() if owner == name}
    left = None
    for doc in hub["producers"].values():
        if any(s["token_id"] in tokens for s in doc["subscribers"]):
            return None
        for token, at in doc["departures"].items():
            if int(token) in tokens:
                left = max(left or 0, at)
    return left


def follow_row(
    follow: Follow,
    report: dict | None,
    received: float | None,
    producers: dict[str, tuple[Producer, counterdocs.ProducerDoc | None]],
) -> FollowRow:
    reported = ((report or {}).get("producers") or {}).get(follow.name)
    producer = follow.producer.name if follow.producer is not None else None
    row: FollowRow = {
        "name": follow.name,
        "kind": follow.kind,
        "producer": producer,
        "target": producer or f"{follow.host}:{follow.port}",
        "connected": None,
        "reconnects": 0,
        "last_error": None,
        "state": "unknown",
        "reason": "not in the consumer's last report",
        "newest_candle": None,
        "lag": None,
        "pairs": [],
    }
    if reported is None:
        return row
    row["connected"] = bool(reported.get("connected"))
    row["reconnects"] = int(reported.get("reconnects") or 0)
    row["last_error"] = reported.get("last_error")
    found = producers.get(producer) if producer else None
    row["pairs"] = lag_rows(reported.get("pairs") or {}, found, received)
    row["newest_candle"] = max(
        (r["last_candle"] for r in row["pairs"] if r["last_candle"]), default=None
    )
    row["lag"] = max(
        (r["lag"] for r in row["pairs"] if r["lag"] is not None), default=None
    )
    row["state"], row["reason"] = follow_state(row)
    return row


def follow_state(row: FollowRow) -> tuple[str, str]:
    if not row["connected"]:
        return "disconnected", f"not connected ({row['last_error'] or 'no error yet'})"
    lags = [(r["lag"], r) for r in row["pairs"] if r["lag"]]
    if lags:
        lag, worst = max(lags, key=lambda pair: pair[0])
        lagging = [r for _, r in lags]
        return "lagging", (
            f"{lag} candle{'s' if lag > 1 else ''} behind the producer on "
            f"{worst['pair']}"
            + (f" and {len(lagging) - 1} more" if lagging[1:] else "")
        )
    return "ok", ""


def lag_rows(
    pairs: dict,
    found: tuple[Producer, counterdocs.ProducerDoc | None] | None,
    received: float | None,
) -> list[LagRow]:
    rows: list[LagRow] = []
    for label, state in sorted(pairs.items()):
        pair = label.split(" ")[0]  # "PAIR TIMEFRAME TYPE" when a pair has several
        mine = parse_iso(state.get("last_candle"))
        expected = None
        if found is not None and found[1] is not None and received is not None:
            at = received - LAG_TOLERANCE_SECONDS
            expected = expected_candle(found[1], pair, at)
        lag = None
        if found is not None and expected is not None and mine is not None:
            step = timeframe_ms(found[0].timeframe)
            lag = max(0, (expected - epoch_ms(mine)) // step)
        rows.append(
            {
                "pair": label,
                "last_candle": iso_ms(None if mine is None else epoch_ms(mine)),
                "producer_candle": iso_ms(expected),
                "lag": lag,
                "rows": int(state.get("rows") or 0),
            }
        )
    return rows


def expected_candle(doc: counterdocs.ProducerDoc, pair: str, at: float) -> int | None:
    """The producer's newest candle of ``pair`` as the hub held it at ``at``."""
    found = doc["pairs"].get(pair)
    if found is None:
        return None
    if found["received"] <= at:
        return found["last"]
    # Stored since: the publishes before ``at`` say how far the producer was then.
    before = [newest for received, newest in doc["ticks"] if received <= at]
    return min(found["last"], int(max(before))) if before else None


def signal_lines(signals: dict) -> list[str]:
    lines = []
    for pair, fired in sorted(signals.items()):
        if isinstance(fired, dict) and (fired.get("fired") or fired.get("tags")):
            names = list(fired.get("fired") or []) + [
                f"{k}={v}" for k, v in (fired.get("tags") or {}).items()
            ]
            candle = str(fired.get("candle", ""))[:16].replace("T", " ")
            lines.append(f"{pair} {candle}: {' '.join(names)}")
    return lines[:8]
