"""The producers' part of the status snapshot: worker heartbeat, pairs, subscribers.

A producer is offline when no worker holds a publish socket, late when it stopped
publishing, and a pair stale when it falls behind the producer's newest candle or
no candle came for two candle intervals on the producer's own clock.
"""

from __future__ import annotations

from typing import TypedDict

from controlplane.lib import contracts, counterdocs
from controlplane.lib.candles import timeframe_ms, timeframe_seconds
from controlplane.lib.wording import duration, interval_words, iso_ms, parse_iso
from producers.models import Producer

# A producer is late, and a pair stale, after two candle intervals without a candle;
# never sooner than this, so a fast demo clock does not flicker.
MIN_LATE_SECONDS = 15.0
# A publish message the hub refused stays on the producer's card this long.
REJECTION_SHOWN_SECONDS = 600.0


class PairRow(TypedDict):
    pair: str
    last_candle: str | None  # the newest candle's open time, ISO 8601 UTC
    rows: int
    received: float | None  # when the hub stored it, epoch seconds
    la: float | None  # when the producer analysed it
    state: str  # ok | stale | waiting
    reason: str


class SubscriberRow(TypedDict):
    id: str
    who: str  # the consumer's name, else the feed token's label
    consumer: str | None
    address: str
    since: float
    behind: str  # "" while it keeps up; else since when and how much it holds


class UpstreamRow(TypedDict):
    """The FreqTrade bot a relay follows, as the relay last reported it."""

    url: str
    state: str  # connected | down | refused | mismatch | unknown
    reason: str
    since: float | None  # epoch seconds: connected since, or down since
    reconnects: int
    pairs_held: int
    newest_candle: str | None
    reported: float | None  # when the hub received the report
    following: str  # "primary" or "standby"
    switches: int  # from one bot to the other
    standby: str  # with a standby bot, in words: which is followed, the other's state


# One of the producer worker's analysis processes, as it last reported.
AnalysisProcessRow = contracts.AnalysisProcess


class AnalysisRow(TypedDict):
    workers: int  # 1: the worker analyses in its own process
    candle_seconds: float | None  # the last candle's analysis, all pairs (wall)
    reported: float | None  # when the hub received the report
    processes: list[AnalysisProcessRow]
    words: str  # the processes, their pairs and times, in one line


class WorkerRow(TypedDict):
    """One named producer worker of the producer's pool (``--worker-name``)."""

    name: str
    address: str
    since: float
    pairs: int | None  # assigned to it by the hub; None until its first assignment
    candle_seconds: float | None  # its last candle's analysis, as it reported


class ProducerRow(TypedDict):
    name: str
    enabled: bool
    timeframe: str
    candle_type: str
    interval: float  # seconds between candles on the producer's clock
    fast_clock: bool
    state: str  # online | late | offline | disabled
    reason: str
    worker: str | None  # the connected producer worker's address
    worker_since: float | None
    last_publish: float | None
    newest_candle: str | None
    last_analysis: float | None
    minute: dict[str, int]  # counts within the last minute
    totals: dict[str, int]  # since the hub processes started
    pairs: list[PairRow]
    subscribers: list[SubscriberRow]
    upstream: UpstreamRow | None  # a relay's FreqTrade bot; None otherwise
    analysis: AnalysisRow | None  # the worker's analysis processes; None: no report
    workers: list[WorkerRow]  # the pool's named workers, by name
    pool: str  # the pool in words; "" without named workers
    rejection: str  # the newest refused publish message, in words; "" if none recent


def candle_interval(producer: Producer) -> float:
    """Seconds between candles as the worker produces them (a demo clock runs fast)."""
    options = (
        producer.source_options if isinstance(producer.source_options, dict) else {}
    )
    fast = options.get("seconds_per_candle")
    if isinstance(fast, int | float) and fast > 0:
        return float(fast)
    return float(timeframe_seconds(producer.timeframe))


def late_after(interval: float) -> float:
    return max(2 * interval, MIN_LATE_SECONDS)


def producer_row(
    producer: Producer,
    doc: counterdocs.ProducerDoc | None,
    owners: dict[int, str],
    now: float,
) -> ProducerRow:
    doc = doc or counterdocs.empty_producer()
    interval = candle_interval(producer)
    state, reason = producer_state(producer, doc, interval, now)
    upstream = upstream_row(producer, now)
    if upstream and state in ("online", "late") and upstream["state"] != "connected":
        # The relay holds its publish socket, but nothing new can come.
        state, reason = "offline", upstream["reason"]
    pairs = pair_rows(producer, doc, interval, now, upstream)
    newest = max((d["last"] for d in doc["pairs"].values()), default=None)
    worker = max(doc["publishers"], key=lambda s: s["since"], default=None)
    return {
        "name": producer.name,
        "enabled": producer.enabled,
        "timeframe": producer.timeframe,
        "candle_type": producer.candle_type,
        "interval": interval,
        "fast_clock": interval != timeframe_seconds(producer.timeframe),
        "state": state,
        "reason": reason,
        "worker": worker["address"] if worker else None,
        "worker_since": worker["since"] if worker else None,
        "last_publish": doc["last_publish"],
        "newest_candle": iso_ms(newest),
        "last_analysis": max((d["la"] for d in doc["pairs"].values()), default=None),
        "minute": doc["minute"],
        "totals": doc["totals"],
        "pairs": pairs,
        "subscribers": subscriber_rows(doc, owners, now),
        "upstream": upstream,
        "analysis": analysis_row(producer),
        **pool_rows(producer, doc),
        "rejection": rejection_words(doc, now),
    }


class PoolRows(TypedDict):
    workers: list[WorkerRow]
    pool: str


def pool_rows(producer: Producer, doc: counterdocs.ProducerDoc) -> PoolRows:
    """The named workers holding publish sockets, with their shares and times."""
    named = sorted(
        (s for s in doc["publishers"] if "worker" in s), key=lambda s: s["worker"]
    )
    reports = producer.worker_analysis_statuses([s["worker"] for s in named])
    workers: list[WorkerRow] = []
    for s in named:
        report = reports.get(s["worker"])
        workers.append(
            {
                "name": s["worker"],
                "address": s["address"],
                "since": s["since"],
                "pairs": s.get("pairs"),
                "candle_seconds": report["status"]["candle_seconds"]
                if report
                else None,
            }
        )
    return {"workers": workers, "pool": pool_words(workers)}


def pool_words(workers: list[WorkerRow]) -> str:
    """``2 workers: a (50 pairs, 0.41 s per candle); b (50 pairs, 0.40 s ...)``."""
    if not workers:
        return ""
    parts = []
    for w in workers:
        count = w["pairs"]
        share = (
            "no share yet"
            if count is None
            else f"{count} pair{'s' if count != 1 else ''}"
        )
        took = w["candle_seconds"]
        timing = "" if took is None else f", {took:.2f} s per candle"
        parts.append(f"{w['name']} ({share}{timing})")
    head = f"{len(workers)} worker{'s' if len(workers) != 1 else ''}"
    return f"{head}: " + "; ".join(parts)


def rejection_words(doc: counterdocs.ProducerDoc, now: float) -> str:
    """Why the hub refused the producer's newest rejected publish, if recent."""
    rejection = doc.get("last_rejection")
    if rejection is None or now - rejection["at"] > REJECTION_SHOWN_SECONDS:
        return ""
    recent = doc["minute"].get("rejected", 0)
    count = f"{recent} in the last minute, " if recent > 1 else ""
    return (
        f"the hub refused its worker's publish ({count}last "
        f"{duration(now - rejection['at'])} ago): {rejection['text']}"
    )


def analysis_row(producer: Producer) -> AnalysisRow | None:
    stored = None if producer.relays else producer.last_analysis_status()
    if stored is None:
        return None
    report = stored["status"]
    return {
        "workers": report["workers"],
        "candle_seconds": report["candle_seconds"],
        "reported": parse_iso(stored["received"]),
        "processes": report["processes"],
        "words": analysis_words(report),
    }


def analysis_words(report: contracts.AnalysisStatus) -> str:
    """``2 processes, the last candle in 0.84 s: #0 (pid 41, 50 pairs) 0.80 s;
    #1 ...``: where the pairs are analysed and how long each part took."""
    total = report["candle_seconds"]
    head = (
        "analysed in the worker's process"
        if report["workers"] == 1
        else f"analysed on {report['workers']} processes"
    )
    head += f", the last candle in {total:.2f} s" if total is not None else ""
    if report["workers"] == 1:
        return head
    parts = []
    for p in report["processes"]:
        who = (
            f"pid {p['pid']}" if p["pid"] is not None else "DEAD, replaced next candle"
        )
        took = f" {p['seconds']:.2f} s" if p["seconds"] is not None else ""
        again = f", restarted {p['restarts']}x" if p["restarts"] else ""
        count = f"{len(p['pairs'])} pair{'s' if len(p['pairs']) != 1 else ''}"
        parts.append(f"#{p['index']} ({who}, {count}{again}){took}")
    return f"{head}: " + "; ".join(parts)


def upstream_row(producer: Producer, now: float) -> UpstreamRow | None:
    if not producer.relays:
        return None
    stored = producer.last_upstream_status()
    where = f"{producer.upstream_host}:{producer.upstream_port}"
    if stored is None:
        return {
            "url": where,
            "state": "unknown",
            "reason": f"the relay has not reported on the FreqTrade bot at {where}",
            "since": None,
            "reconnects": 0,
            "pairs_held": 0,
            "newest_candle": None,
            "reported": None,
            "following": "primary",
            "switches": 0,
            "standby": "",
        }
    report, reported = stored["status"], parse_iso(stored["received"])
    since = parse_iso(report["since"])
    state, reason = upstream_state(report, since, now)
    return {
        "url": report["url"],
        "state": state,
        "reason": reason,
        "since": since if state == "connected" else None,
        "reconnects": report["reconnects"],
        "pairs_held": report["pairs_held"],
        "newest_candle": report["newest_candle"],
        "reported": reported,
        "following": report.get("following", "primary"),
        "switches": report.get("switches", 0),
        "standby": standby_words(report, now),
    }


def standby_words(report: contracts.UpstreamStatus, now: float) -> str:
    """Which of two bots the relay follows, and the other's state, in words."""
    other = report.get("other")
    if other is None:
        return ""
    switched = parse_iso(report.get("switched_at"))
    when = f" since {duration(now - switched)} ago" if switched is not None else ""
    state = (
        "connected"
        if other["connected"]
        else (f"unreachable ({other['last_error'] or 'not connected yet'})")
    )
    switches = report.get("switches", 0)
    count = f"; {switches} switch{'es' if switches != 1 else ''}" if switches else ""
    if report.get("following") == "standby":
        return (
            f"following the STANDBY bot{when}: the primary at {other['url']} is "
            f"{state}, newest candle {other['newest_candle'] or 'none'}; back to it "
            f"once it has caught up{count}"
        )
    return f"standby bot at {other['url']}: {state}{count}"


def upstream_state(
    report: contracts.UpstreamStatus, since: float | None, now: float
) -> tuple[str, str]:
    """The bot's state, and the reason in words when it is not serving us."""
    bot = f"the FreqTrade bot at {report['url']}"
    if report["mismatch"]:
        return "mismatch", f"{bot}: {report['mismatch']}"
    if report["refused"]:
        return "refused", (
            f"{bot} refused the ws_token: enter its api_server.ws_token again in "
            "the producer's upstream fields in the admin"
        )
    if not report["connected"]:
        error = report["last_error"] or "not connected yet"
        down = f" for {duration(now - since)}" if since is not None else ""
        return "down", (
            f"{bot} is unreachable{down} ({error}); the relay keeps retrying"
        )
    return "connected", ""


def producer_state(
    producer: Producer, doc: counterdocs.ProducerDoc, interval: float, now: float
) -> tuple[str, str]:
    last = doc["last_publish"]
    if not producer.enabled:
        return "disabled", "disabled in the admin"
    if not doc["publishers"]:
        if last is None:
            return "offline", "no producer worker has connected since the hub started"
        return "offline", (
            f"no producer worker connected; last publish {duration(now - last)} ago"
        )
    if last is None:
        return "online", "connected, publishing its history"
    if now - last > late_after(interval):
        return "late", (
            f"its worker is connected but published nothing for {duration(now - last)}"
            f"; a candle is due {interval_words(interval)}"
        )
    return "online", ""


def pair_rows(
    producer: Producer,
    doc: counterdocs.ProducerDoc,
    interval: float,
    now: float,
    upstream: UpstreamRow | None = None,
) -> list[PairRow]:
    # The definition's pairs only: one removed from it keeps its rows in the hub
    # but is no longer published, and is no one's concern.
    pairs = list(producer.pairs)
    if not pairs and upstream is not None:
        # A relay of every pair its bot whitelists: the whitelist it relays.
        stored = producer.last_upstream_status()
        pairs = list(stored["status"]["whitelist"]) if stored else sorted(doc["pairs"])
    newest = max(
        (doc["pairs"][p]["last"] for p in pairs if p in doc["pairs"]), default=None
    )
    step_ms = timeframe_ms(producer.timeframe)
    rows: list[PairRow] = []
    for pair in pairs:
        found = doc["pairs"].get(pair)
        state, reason = pair_state(found, newest, step_ms, interval, now)
        rows.append(
            {
                "pair": pair,
                "last_candle": iso_ms(found["last"]) if found else None,
                "rows": found["rows"] if found else 0,
                "received": found["received"] if found else None,
                "la": found["la"] if found else None,
                "state": state,
                "reason": reason,
            }
        )
    return rows


def pair_state(
    found: counterdocs.PairDoc | None,
    newest: int | None,
    step_ms: int,
    interval: float,
    now: float,
) -> tuple[str, str]:
    if found is None:
        return "waiting", "no candle received yet"
    if newest is not None and (behind := (newest - found["last"]) // step_ms) >= 1:
        return "stale", (
            f"{behind} candle{'s' if behind > 1 else ''} behind the producer's "
            f"newest ({(iso_ms(newest) or '')[:16].replace('T', ' ')})"
        )
    age = now - found["received"]
    if age > late_after(interval):
        return "stale", (
            f"no new candle for {duration(age)}; one is due {interval_words(interval)}"
        )
    return "ok", ""


def subscriber_rows(
    doc: counterdocs.ProducerDoc, owners: dict[int, str], now: float
) -> list[SubscriberRow]:
    rows: list[SubscriberRow] = []
    for s in sorted(doc["subscribers"], key=lambda s: s["since"]):
        consumer = owners.get(s["token_id"]) if s["token_id"] is not None else None
        who = consumer or s["label"] or "unlabelled feed token"
        rows.append(
            {
                "id": s["id"],
                "who": who,
                "consumer": consumer,
                "address": s["address"],
                "since": s["since"],
                "behind": behind_words(s, now),
            }
        )
    return rows


def behind_words(s: counterdocs.SocketDoc, now: float) -> str:
    """A feed socket that reads slower than the feed: what the hub holds for it."""
    since = s.get("behind")  # absent in a document from an older hub process
    if since is None:
        return ""
    return (
        f"behind for {duration(now - since)}: {s.get('held', 0) / 2**20:.1f} MiB "
        "unsent, the newest candle of each pair kept"
    )
