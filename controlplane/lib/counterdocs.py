"""The documents of the hub's counters, and how several hub processes' add up.

Pure module: controlplane.lib.counters fills a ProcessDoc per hub process and stores it
in
the cache; merge() sums the documents of every live process into one HubState.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NotRequired, TypedDict

TICKS_KEPT = 32  # recent publishes kept per producer, to judge consumers' lag
COUNTERS = (
    "publishes",  # publish messages from the producer worker
    "frames",  # analysed frames stored (one per pair and publish)
    "candles",  # new candles among them
    "bytes_in",  # size of the publish messages
    "deliveries",  # messages sent to feed subscribers (broadcasts)
    "bytes_out",  # their size
    "replies",  # answers to subscribers' requests (history, whitelist)
    "reply_bytes",
    "dropped",  # broadcasts a feed socket never received (layer overflow)
    "oversize",  # replies refused for the message size limit
    "rejected",  # publish messages the hub refused (malformed, rewound, ...)
    "superseded",  # broadcasts a socket behind skipped: a newer one replaced them
    "slow_closed",  # feed sockets closed as too slow (over their cap, no pong)
)
REFUSALS = ("throttled", "credentials", "disabled", "worker_name")


class PairDoc(TypedDict):
    last: int  # the newest candle's date (open time), ms since the epoch
    rows: int  # rows the hub holds for the pair
    received: float  # when the hub stored that candle, epoch seconds
    la: float  # when the producer analysed it, epoch seconds


class SocketDoc(TypedDict):
    id: str  # short digest of the channel name: stable, reveals nothing
    address: str
    since: float
    label: str
    token_id: int | None
    behind: float | None  # a feed socket behind since (epoch seconds); None: keeps up
    held: int  # bytes the hub holds unsent for it (while behind)
    # A publish socket of a named producer worker (the pool): its name, and how
    # many pairs the hub assigned it (None until the first assignment).
    worker: NotRequired[str]
    pairs: NotRequired[int | None]


class RejectionDoc(TypedDict):
    at: float  # when the hub refused the publish message, epoch seconds
    text: str  # why, in the words sent back to the producer worker


class ProducerDoc(TypedDict):
    totals: dict[str, int]  # since each hub process started
    minute: dict[str, int]  # within the last WINDOW_SECONDS
    pairs: dict[str, PairDoc]
    ticks: list[list[float]]  # [received, newest candle ms] of recent publishes
    publishers: list[SocketDoc]  # connected producer workers
    subscribers: list[SocketDoc]  # connected feed sockets
    last_publish: float | None
    departures: dict[str, float]  # token id -> when its last feed socket closed
    last_rejection: RejectionDoc | None  # the newest refused publish message


class HubState(TypedDict):
    processes: int
    producers: dict[str, ProducerDoc]
    refused: dict[str, int]  # feed and publish handshakes refused, by reason


class ProcessDoc(HubState):
    process: str
    written: float


@dataclass(frozen=True)
class PairUpdate:
    pair: str
    last: int  # ms
    rows: int
    la: float  # epoch seconds


def empty_producer() -> ProducerDoc:
    return {
        "totals": dict.fromkeys(COUNTERS, 0),
        "minute": dict.fromkeys(COUNTERS, 0),
        "pairs": {},
        "ticks": [],
        "publishers": [],
        "subscribers": [],
        "last_publish": None,
        "departures": {},
        "last_rejection": None,
    }


def merge(docs: list[ProcessDoc]) -> HubState:
    producers: dict[str, ProducerDoc] = {}
    refused = dict.fromkeys(REFUSALS, 0)
    for doc in docs:
        for reason, count in doc["refused"].items():
            refused[reason] = refused.get(reason, 0) + count
        for name, part in doc["producers"].items():
            _merge_producer(producers.setdefault(name, empty_producer()), part)
    for merged in producers.values():
        merged["ticks"] = sorted(merged["ticks"])[-TICKS_KEPT:]
    return {"processes": len(docs), "producers": producers, "refused": refused}


def _merge_producer(into: ProducerDoc, part: ProducerDoc) -> None:
    for name in COUNTERS:
        into["totals"][name] += part["totals"].get(name, 0)
        into["minute"][name] += part["minute"].get(name, 0)
    for pair, doc in part["pairs"].items():
        # A worker that reconnected through another hub process: newest wins.
        if (
            pair not in into["pairs"]
            or doc["received"] > into["pairs"][pair]["received"]
        ):
            into["pairs"][pair] = doc
    into["ticks"].extend(part["ticks"])
    into["publishers"].extend(part["publishers"])
    into["subscribers"].extend(part["subscribers"])
    if part["last_publish"] is not None:
        into["last_publish"] = max(into["last_publish"] or 0, part["last_publish"])
    for token, left in part["departures"].items():
        into["departures"][token] = max(into["departures"].get(token, 0), left)
    rejection, newest = part.get("last_rejection"), into["last_rejection"]
    if rejection is not None and (newest is None or rejection["at"] > newest["at"]):
        into["last_rejection"] = rejection
