"""The hub's own counters: producer heartbeats, publishes, feed sockets and deliveries.

Sockets count in process memory (an integer add per delivery). A flusher task on the
hub's event loop writes this process's document to Django's cache about once a second
and tells the "status" group that something changed. Readers merge the documents of
every live hub process, so counts add up when several hub processes share Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from channels.layers import get_channel_layer
from django.core.cache import cache

from controlplane.lib.counterdocs import (
    COUNTERS,
    REFUSALS,
    TICKS_KEPT,
    HubState,
    PairDoc,
    PairUpdate,
    ProcessDoc,
    ProducerDoc,
    RejectionDoc,
    SocketDoc,
    merge,
)

logger = logging.getLogger(__name__)

# Channel-layer group of every StatusSocket, and the message that wakes them.
STATUS_GROUP = "status"
STATUS_CHANGED = "status.changed"
FLUSH_SECONDS = 1.0
# A quiet process still rewrites its document this often: that is the heartbeat of
# the publish sockets it holds.
REFRESH_SECONDS = 5.0
# A document (and so a producer worker's connection in it) counts this long after
# its last write: a hub process that died takes its sockets with it after 30 s.
PROCESS_TTL = 30
WINDOW_SECONDS = 60  # "per minute" figures cover the last 60 s
DEPARTURES_KEPT = 3600  # seconds a token's last feed departure is remembered
REGISTRY_KEY = "status:processes"


def _socket_id(channel_name: str) -> str:
    return hashlib.sha256(channel_name.encode()).hexdigest()[:12]


class Meter:
    """One producer's counts and sockets in this process."""

    def __init__(self) -> None:
        # One attribute per name in COUNTERS, added to on the sockets' hot paths.
        self.publishes = self.frames = self.candles = self.bytes_in = 0
        self.deliveries = self.bytes_out = self.replies = self.reply_bytes = 0
        self.dropped = self.oversize = self.rejected = 0
        self.superseded = self.slow_closed = 0
        self.pairs: dict[str, PairDoc] = {}
        self.ticks: deque[list[float]] = deque(maxlen=TICKS_KEPT)
        self.publishers: dict[str, SocketDoc] = {}
        self.subscribers: dict[str, SocketDoc] = {}
        self.last_publish: float | None = None
        self.departures: dict[str, float] = {}
        self.last_rejection: RejectionDoc | None = None
        self.samples: deque[tuple[float, tuple[int, ...]]] = deque()

    def totals(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in COUNTERS)

    def sample(self, now: float) -> None:
        self.samples.append((now, self.totals()))
        while self.samples and now - self.samples[0][0] > WINDOW_SECONDS:
            self.samples.popleft()

    def document(self, now: float) -> ProducerDoc:
        totals = self.totals()
        base = self.samples[0][1] if self.samples else (0,) * len(COUNTERS)
        for token, left in list(self.departures.items()):
            if now - left > DEPARTURES_KEPT:
                del self.departures[token]
        return {
            "totals": dict(zip(COUNTERS, totals, strict=True)),
            "minute": {
                n: t - b for n, t, b in zip(COUNTERS, totals, base, strict=True)
            },
            "pairs": {pair: doc.copy() for pair, doc in self.pairs.items()},
            "ticks": [list(tick) for tick in self.ticks],
            "publishers": [doc.copy() for doc in self.publishers.values()],
            "subscribers": [doc.copy() for doc in self.subscribers.values()],
            "last_publish": self.last_publish,
            "departures": dict(self.departures),
            "last_rejection": self.last_rejection,
        }


class FeedLink:
    """A feed socket's handle on its producer's counts: kept for the socket's life.

    Its methods are the feed's hot path: a few integer adds, nothing else.
    """

    __slots__ = ("doc", "meter", "origin", "seq", "slow")

    def __init__(self, meter: Meter, doc: SocketDoc) -> None:
        self.meter, self.doc = meter, doc
        self.origin: str | None = None
        self.seq = 0
        self.slow = False

    def delivered(self, event: Mapping[str, Any], messages: int, nbytes: int) -> None:
        """One broadcast forwarded: ``messages`` sent, ``nbytes`` in all."""
        meter = self.meter
        meter.deliveries += messages
        meter.bytes_out += nbytes
        seq = event.get("seq")
        if seq is None:
            return
        origin = event.get("origin")
        if origin == self.origin and seq > self.seq + 1:
            # The channel layer drops group messages silently when a channel is
            # full: the publish socket numbers its broadcasts, so a gap is a loss.
            meter.dropped += seq - self.seq - 1
        self.origin, self.seq = origin, seq

    def replied(self, nbytes: int) -> None:
        self.meter.replies += 1
        self.meter.reply_bytes += nbytes

    def refused_oversize(self) -> None:
        self.meter.oversize += 1

    def behind(self, since: float | None, held: int, superseded: int) -> None:
        """The socket's unsent backlog: since when (epoch s; None: it keeps up), how
        many bytes, and how many broadcasts a newer one replaced since the last call."""
        self.meter.superseded += superseded
        doc = self.doc
        if (doc["behind"] is None) != (since is None):
            mark_changed()
        doc["behind"], doc["held"] = since, held

    def closed_slow(self) -> None:
        """The socket was closed as too slow (counted once)."""
        if not self.slow:
            self.slow = True
            self.meter.slow_closed += 1
            mark_changed()


class HubCounters:
    """This process's meters, and the task that flushes them to the cache."""

    def __init__(self) -> None:
        self.process = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.meters: dict[str, Meter] = {}
        self.refused: dict[str, int] = dict.fromkeys(REFUSALS, 0)
        self.dirty = False
        self.written = 0.0
        # The loop mutates sockets and pairs; the status page reads from a thread.
        self.lock = threading.Lock()
        self._task: asyncio.Task | None = None

    def meter(self, producer: str) -> Meter:
        meter = self.meters.get(producer)
        if meter is None:
            meter = self.meters[producer] = Meter()
            # Counted from zero: what happens before the first flush is in the minute.
            meter.samples.append((time.time(), (0,) * len(COUNTERS)))
        return meter

    def document(self, now: float) -> ProcessDoc:
        with self.lock:
            producers = {n: m.document(now) for n, m in self.meters.items()}
        return {
            "process": self.process,
            "written": now,
            "processes": 1,
            "producers": producers,
            "refused": dict(self.refused),
        }

    def ensure_flusher(self) -> None:
        """Start the flusher on the running loop unless it already runs there.

        Outside an event loop (a script, a sync test) there is nothing to start:
        read_state() still sees this process's live counts.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            self._task = loop.create_task(self._flush_forever(), name="status flusher")

    async def _flush_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception as exc:  # a cache outage must not end the flusher
                if not failing:
                    logger.error("status: cannot write the hub's counters: %s", exc)
                failing = True
            else:
                failing = False

    async def flush(self, now: float | None = None) -> bool:
        """Write this process's document when it changed (or to refresh it); when it
        changed, wake the StatusSockets. Returns whether it changed."""
        now = time.time() if now is None else now
        with self.lock:
            for meter in self.meters.values():
                meter.sample(now)
        changed, self.dirty = self.dirty, False
        if not changed and now - self.written < REFRESH_SECONDS:
            return False
        await asyncio.to_thread(write_document, self.document(now))
        self.written = now
        if changed:
            await get_channel_layer().group_send(STATUS_GROUP, {"type": STATUS_CHANGED})
        return changed


counters = HubCounters()


### The sockets' API


def mark_changed() -> None:
    """Something the status page shows changed; safe from any thread."""
    counters.dirty = True


def ensure_flusher() -> None:
    counters.ensure_flusher()


def producer_connected(
    producer: str, channel_name: str, address: str, worker: str | None = None
) -> None:
    """A publish socket was accepted; ``worker``: the pool worker's name."""
    doc: SocketDoc = {
        "id": _socket_id(channel_name),
        "address": address,
        "since": time.time(),
        "label": "",
        "token_id": None,
        "behind": None,
        "held": 0,
    }
    if worker is not None:
        doc["worker"], doc["pairs"] = worker, None
    with counters.lock:
        counters.meter(producer).publishers[channel_name] = doc
    mark_changed()
    counters.ensure_flusher()


def worker_assigned(producer: str, channel_name: str, pairs: int) -> None:
    """The hub told a pool worker its share: ``pairs`` of the producer's."""
    with counters.lock:
        doc = counters.meter(producer).publishers.get(channel_name)
        if doc is not None:
            doc["pairs"] = pairs
    mark_changed()


def producer_disconnected(producer: str, channel_name: str) -> None:
    with counters.lock:
        counters.meter(producer).publishers.pop(channel_name, None)
    mark_changed()


def published(
    producer: str, updates: list[PairUpdate], nbytes: int, new_candles: int
) -> None:
    """One publish message stored: its pairs' newest candles and its size."""
    now = time.time()
    with counters.lock:
        meter = counters.meter(producer)
        meter.publishes += 1
        meter.frames += len(updates)
        meter.candles += new_candles
        meter.bytes_in += nbytes
        meter.last_publish = now
        for update in updates:
            meter.pairs[update.pair] = {
                "last": update.last,
                "rows": update.rows,
                "received": now,
                "la": update.la,
            }
        if updates:
            meter.ticks.append([now, max(update.last for update in updates)])
    mark_changed()


def publish_rejected(producer: str, text: str) -> None:
    """The hub refused one of the producer's publish messages, for ``text``."""
    with counters.lock:
        meter = counters.meter(producer)
        meter.rejected += 1
        meter.last_rejection = {"at": time.time(), "text": text}
    mark_changed()


def feed_connected(
    producer: str,
    channel_name: str,
    *,
    label: str,
    address: str,
    token_id: int | None = None,
) -> FeedLink:
    """A feed socket was accepted; keep the returned link to count its traffic."""
    with counters.lock:
        meter = counters.meter(producer)
        meter.subscribers[channel_name] = {
            "id": _socket_id(channel_name),
            "address": address,
            "since": time.time(),
            "label": label,
            "token_id": token_id,
            "behind": None,
            "held": 0,
        }
    mark_changed()
    counters.ensure_flusher()
    return FeedLink(meter, meter.subscribers[channel_name])


def feed_disconnected(producer: str, channel_name: str) -> None:
    with counters.lock:
        meter = counters.meter(producer)
        gone = meter.subscribers.pop(channel_name, None)
        token = None if gone is None else gone["token_id"]
        if token is not None and not any(
            s["token_id"] == token for s in meter.subscribers.values()
        ):
            meter.departures[str(token)] = time.time()
    mark_changed()


def handshake_refused(reason: str) -> None:
    """A feed or publish handshake was refused: throttled, credentials, disabled,
    or a producer worker's name that cannot be one."""
    if reason not in counters.refused:
        raise ValueError(f"unknown refusal {reason!r}: use one of {REFUSALS}")
    counters.refused[reason] += 1
    mark_changed()


### Reading: every live hub process, summed


def _doc_key(process: str) -> str:
    return f"status:process:{process}"


def write_document(doc: ProcessDoc) -> None:
    """Store a process's document, and list the process for readers."""
    cache.set(_doc_key(doc["process"]), doc, timeout=PROCESS_TTL)
    now = doc["written"]
    registry: dict[str, float] = cache.get(REGISTRY_KEY) or {}
    live = {p: seen for p, seen in registry.items() if now - seen <= PROCESS_TTL}
    # Rewritten when this entry ages or is missing (two processes writing at once
    # may drop one; it is back within a flush), and when dead ones must go.
    if now - live.get(doc["process"], 0) > PROCESS_TTL / 3 or len(live) < len(registry):
        live[doc["process"]] = now
        cache.set(REGISTRY_KEY, live, timeout=None)


def read_state(now: float | None = None) -> HubState:
    """The hub's counters: this process's live ones plus the other processes'."""
    now = time.time() if now is None else now
    registry: dict[str, float] = cache.get(REGISTRY_KEY) or {}
    others = [
        _doc_key(p)
        for p, seen in registry.items()
        if p != counters.process and now - seen <= PROCESS_TTL
    ]
    docs = [
        d for d in cache.get_many(others).values() if now - d["written"] <= PROCESS_TTL
    ]
    return merge([counters.document(now), *docs])


def reset() -> None:
    """Forget this process's counts (tests)."""
    global counters
    task = counters._task
    if task is not None and not task.done() and not task.get_loop().is_closed():
        task.cancel()
    counters = HubCounters()
