"""PublishSocket: where producer workers hand analysed rows to the hub.

The worker authenticates with its producer key (Authorization header only). Each
publish (controlplane/lib/wire/publish.py) is checked whole, then updates the
snapshots; the tick's broadcast is encoded once per feed format (wire.FORMATS) and
sent as one layer message to that format's group, so a feed socket receives only
its own format's bytes.

A worker that names itself (the X-Candlecast-Worker header) joins its producer's pool:
it holds a lease (producers/leases.py), is told its pairs with assign messages, and
its frames for any other pair are refused; those of a pair it lost moments ago (it
had not heard yet) are left to their new worker quietly, a handover and not a fault.
A socket without a name publishes any of the producer's pairs, as before the pool.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime

from channels.db import database_sync_to_async
from django.conf import settings

from controlplane.lib import counters
from controlplane.lib.auth import (
    TokenSocket,
    header,
    scope_address,
    scope_token,
    throttle,
)
from controlplane.lib.wire import FORMATS, publish
from controlplane.lib.wire.columns import ProtocolError, parse_datetime
from controlplane.lib.wire.shapes import Tick, TickFrame
from producers.feed import CLOSE_TOKEN_EXPIRED, CLOSE_TOKEN_REVOKED
from producers.groups import (
    FEED_TICK,
    POOL_CHANGED,
    PUBLISH_REPLACED,
    KeyRevokeMessage,
    TickMessage,
    feed_group,
    publish_group,
)
from producers.leases import LEASE_SECONDS, REFRESH_SECONDS, leases
from producers.models import Producer, ProducerKey
from producers.snapshots import (
    SnapshotStore,
    SnapshotStoreUnavailable,
    StreamKey,
    get_store,
)

logger = logging.getLogger(__name__)

# Close codes (application range, HTTP's numbers) for a message the hub cannot take.
CLOSE_MALFORMED = 4400
CLOSE_TOO_BIG = 4413
# How often a pool socket re-reads its producer's pairs (admin edits).
PAIRS_RELOAD_SECONDS = 5.0
# A worker that lost a pair may publish it once more before its assign reaches it
# (an analysis started on the old share): that long, its frames of the pair are a
# handover, dropped without a refusal.
HANDOVER_GRACE_SECONDS = 30.0
_WORKER_HEADER = publish.WORKER_HEADER.lower().encode()


class PublishSocket(TokenSocket):
    producer: Producer  # once accepted
    key: ProducerKey  # once accepted
    accepted = False
    watch: asyncio.Task | None = None
    worker: str | None = None  # a pool worker's name; None: publishes any pair
    pool: asyncio.Task | None = None

    async def connect(self) -> None:
        self.address = scope_address(self.scope)
        named = header(self.scope, _WORKER_HEADER)
        why = None if named is None else publish.worker_name_refusal(named)
        if why is not None:
            # A configuration error: the worker must be restarted with another name,
            # so the handshake is refused (the worker checks its name itself first).
            counters.handshake_refused("worker_name")
            logger.warning("publish: refused %s: %s", self.address, why)
            await self.close()
            return
        secret = scope_token(self.scope, allow_query=False)
        key, why = await self._key_for(secret)
        if key is None:
            if throttle.failed(self.address):  # logged once for the window
                counters.handshake_refused("throttled")
            else:
                counters.handshake_refused("credentials")
                logger.warning("publish: refused %s: %s", self.address, why)
            await self.close()
            return
        producer = key.producer
        if not producer.enabled:
            logger.warning(
                "publish: refused %s: producer %s is disabled",
                self.address,
                producer.name,
            )
            counters.handshake_refused("disabled")
            await self.close()
            return
        # In the key's group before the accept, so a revocation from now on is heard.
        self.group = publish_group(producer.name)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.producer, self.key, self.accepted, self.broadcasts = producer, key, True, 0
        self.watch = asyncio.create_task(self._watch_key())
        counters.producer_connected(
            self.producer.name, self.channel_name, self.address, named
        )
        logger.info(
            "publish: producer worker %s%s connected from %s",
            self.producer.name,
            "" if named is None else f" ({named})",
            self.address,
        )
        if named is not None:
            await self._join_pool(named)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:
            # A failing channel layer (Redis down) ends the socket without any
            # websocket.disconnect: it would stay listed as connected for good.
            if self.accepted:
                logger.error(
                    "publish: lost producer worker %s: %s (is the channel layer's "
                    "Redis up?)",
                    self.producer.name,
                    exc,
                )
                counters.producer_disconnected(self.producer.name, self.channel_name)
                self._stop_watching()
                try:
                    await self._leave_pool()
                except Exception as drop_error:  # the cache is Redis too
                    logger.warning(
                        "publish: cannot end producer worker %s's lease either "
                        "(%s): its pairs go to the other workers when it lapses, "
                        "within %.0f s",
                        self.worker,
                        drop_error,
                        LEASE_SECONDS,
                    )
            raise

    async def disconnect(self, code: int) -> None:
        if self.accepted:
            counters.producer_disconnected(self.producer.name, self.channel_name)
            self._stop_watching()
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self._leave_pool()
            logger.info(
                "publish: producer worker %s%s disconnected (code %s)",
                self.producer.name,
                "" if self.worker is None else f" ({self.worker})",
                code,
            )

    async def receive(self, text_data=None, bytes_data=None) -> None:
        seq = None
        text = text_data if text_data is not None else bytes_data
        limit = settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB << 20
        if len(text or b"") > limit:  # Daphne's own limit ends bigger ones first
            await self._refuse(
                CLOSE_TOO_BIG,
                f"a {len(text) >> 20} MiB message, over the "
                f"{settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB} MiB message size limit",
            )
            return
        try:
            message = publish.parse_publish(text)
        except ProtocolError as exc:
            await self._refuse(CLOSE_MALFORMED, str(exc))
            return
        seq = message["seq"]
        refused = await self._foreign_frames(message["data"]) if self.worker else ""
        try:
            tick, updates = await store_publish(
                self.producer, message["data"], pool=self.worker is not None
            )
        except ProtocolError as exc:
            logger.warning(
                "publish: %s sent a bad message: %s", self.producer.name, exc
            )
            counters.publish_rejected(self.producer.name, str(exc))
            await self.send(publish.error_message(seq, str(exc)))
            return
        except (SnapshotStoreUnavailable, ValueError) as exc:
            logger.error(
                "publish: cannot store %s's frames: %s", self.producer.name, exc
            )
            await self.send(publish.error_message(seq, str(exc)))
            return
        new_candles = sum(frame.new_candle for frame in tick.frames)
        counters.published(self.producer.name, updates, len(text), new_candles)
        if tick.frames or tick.whitelist is not None:
            await self._broadcast(tick)
        if refused:
            await self.send(publish.error_message(seq, refused))
        else:
            await self.send(publish.ack_message(seq))

    async def _refuse(self, code: int, why: str) -> None:
        """A message that breaks the protocol ends the socket: a worker that sends
        garbage is out of step with the hub, and a retry starts it afresh. The
        error goes first as a reply, then as the close reason."""
        logger.warning(
            "publish: closing %s's socket from %s (code %s): %s",
            self.producer.name,
            self.address,
            code,
            why,
        )
        counters.publish_rejected(self.producer.name, why)
        await self.send(publish.error_message(None, why))
        await self.close(code=code, reason=why)

    async def _broadcast(self, tick: Tick) -> None:
        # Numbered, so that a feed socket notices a broadcast the layer dropped; the
        # formats share the numbers (a socket is in one format's group only).
        self.broadcasts += 1
        limit = settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB << 20
        for fmt in FORMATS:
            messages, left_out = fmt.tick(tick, limit)
            for pair in left_out:
                logger.error(
                    "publish: %s's %s rows for %s are over the %d MiB message size "
                    "limit and were not broadcast; its consumers ask for them when "
                    "they notice the gap",
                    self.producer.name,
                    fmt.name,
                    pair,
                    settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB,
                )
            if messages:
                event: TickMessage = {
                    "type": FEED_TICK,
                    "messages": messages,
                    "origin": self.channel_name,
                    "seq": self.broadcasts,
                }
                await self.channel_layer.group_send(
                    feed_group(self.producer.name, fmt), event
                )

    ### The pool

    async def _join_pool(self, worker: str) -> None:
        self.worker, self.since = worker, time.time()
        self.pairs = list(self.producer.pairs)  # the definition's, re-read now and then
        self.assigned: list[str] | None = None
        self.handed_over: dict[str, float] = {}  # pair -> monotonic() it was lost
        self.assigning = asyncio.Lock()
        self.woken = asyncio.Event()
        self.leaving = False
        if await self._hold_lease():
            await self._assign()
            self.pool = asyncio.create_task(self._keep_lease())
        await self._tell_the_pool()

    async def _leave_pool(self) -> None:
        if self.worker is None:
            return
        await self._stop_refreshing()
        await asyncio.to_thread(
            leases.drop, self.producer.name, self.worker, self.channel_name
        )
        await self._tell_the_pool()

    async def _tell_the_pool(self) -> None:
        """Wake the producer's pool sockets on every hub process: their shares
        change now, not at their next refresh."""
        await self.channel_layer.group_send(self.group, {"type": POOL_CHANGED})

    async def pool_changed(self, event: dict) -> None:
        if self.worker is not None and self.accepted:
            self.woken.set()

    async def _stop_refreshing(self) -> None:
        """End the refresh task after its step in flight. Cancelling it would not
        stop a refresh already in its thread, which could write the lease again
        after the drop: a dead worker's pairs would wait 5 s for its expiry."""
        self.leaving = True
        if self.pool is None or self.pool is asyncio.current_task():
            return
        self.woken.set()
        await asyncio.wait({self.pool}, timeout=10)
        self.pool.cancel()

    async def _keep_lease(self) -> None:
        """Refresh the lease every REFRESH_SECONDS and re-check the assignment
        then, and at once when a pool worker joins or leaves (on any hub)."""
        reloaded, failing = time.monotonic(), False
        while not self.leaving:
            try:
                await asyncio.wait_for(self.woken.wait(), REFRESH_SECONDS)
            except TimeoutError:
                pass
            self.woken.clear()
            if self.leaving:
                return
            try:
                if time.monotonic() - reloaded >= PAIRS_RELOAD_SECONDS:
                    reloaded = time.monotonic()
                    self.pairs = await self._definition_pairs()
                if not await self._hold_lease():
                    return
                await self._assign()
            except Exception as exc:  # the cache (Redis) is down: the lease lapses
                if not failing:
                    logger.error(
                        "publish: cannot refresh producer worker %s's lease (%s): "
                        "the pool gives its pairs to others until the cache is back",
                        self.worker,
                        exc,
                    )
                failing = True
            else:
                failing = False

    async def _hold_lease(self) -> bool:
        """Take or refresh the lease; False when a newer socket holds the name
        (this socket is closed then)."""
        assert self.worker is not None
        other = await asyncio.to_thread(
            leases.hold, self.producer.name, self.worker, self.channel_name, self.since
        )
        if other == self.channel_name:
            await self._replaced("another socket of this name connected later")
            return False
        if other is not None:
            await self.channel_layer.send(
                other, {"type": PUBLISH_REPLACED, "address": self.address}
            )
        return True

    async def publish_replaced(self, event: dict) -> None:
        """A newer socket took this worker name: this one is its ghost."""
        await self._replaced(f"it connected again from {event['address']}")

    async def _replaced(self, why: str) -> None:
        await self._stop_refreshing()
        await self._end(
            publish.CLOSE_REPLACED,
            f"producer worker {self.worker} is replaced: {why}; this older socket "
            "is closed",
        )

    async def _assign(self) -> None:
        """Tell the worker its pairs when they changed (one check at a time, so an
        older answer never follows a newer one)."""
        assert self.worker is not None
        async with self.assigning:
            shares = await asyncio.to_thread(
                leases.shares, self.producer.name, self.pairs
            )
            mine = shares.get(self.worker, [])
            if mine == self.assigned:
                return
            now = time.monotonic()
            for pair in set(self.assigned or ()).difference(mine):
                self.handed_over[pair] = now
            for pair in mine:
                self.handed_over.pop(pair, None)
            self.assigned = mine
            await self.send(publish.assign_message(mine))
            counters.worker_assigned(self.producer.name, self.channel_name, len(mine))
            logger.info(
                "publish: producer %s's worker %s publishes %d of %d pairs "
                "(workers in the pool: %d)",
                self.producer.name,
                self.worker,
                len(mine),
                len(self.pairs),
                len(shares),
            )

    async def _foreign_frames(self, data: publish.PublishData) -> str:
        """Take out of ``data`` the frames of pairs not assigned to this worker;
        why, in words ("" when all are its own). The whitelist is the definition's.

        Checked against the assignment as of now, not as last told: the worker
        that lost a pair may not have heard yet, and two workers' rows must never
        mix for one candle.
        """
        await self._assign()
        mine = set(self.assigned or ())
        foreign = [f["key"][0] for f in data["frames"] if f["key"][0] not in mine]
        if data["whitelist"] is not None:
            data["whitelist"] = list(self.pairs)
        if not foreign:
            return ""
        data["frames"] = [f for f in data["frames"] if f["key"][0] in mine]
        now = time.monotonic()
        lost = self.handed_over
        late = [
            pair
            for pair in foreign
            if pair in lost and now - lost[pair] < HANDOVER_GRACE_SECONDS
        ]
        if late:
            logger.info(
                "publish: %s: worker %s sent frames for %s, which the pool handed to "
                "another worker %.1f s ago: left to that worker",
                self.producer.name,
                self.worker,
                ", ".join(late),
                now - max(lost[pair] for pair in late),
            )
            foreign = [pair for pair in foreign if pair not in late]
            if not foreign:
                return ""
        why = (
            f"frames for {', '.join(foreign)} refused: not assigned to producer "
            f"worker {self.worker} (the pool gave them to another worker, or the "
            "producer has no such pair); its other frames were stored"
        )
        logger.warning("publish: %s: %s", self.producer.name, why)
        counters.publish_rejected(self.producer.name, why)
        return why

    @database_sync_to_async
    def _definition_pairs(self) -> list[str]:
        pairs = Producer.objects.filter(pk=self.producer.pk).values_list(
            "pairs", flat=True
        )
        return list(pairs.first() or self.pairs)

    ### The producer key

    async def publish_revoke(self, event: KeyRevokeMessage) -> None:
        """A revoked (or deleted) key: its worker must stop publishing at once."""
        if self.accepted and self.key.pk in event["key_ids"]:
            await self._end(CLOSE_TOKEN_REVOKED, event["reason"])

    async def _watch_key(self) -> None:
        """Re-join the group and re-read the key now and then: groups expire, a
        layer message can be lost (Redis down), and a key expires on its own."""
        while True:
            delay = settings.CANDLECAST_TOKEN_RECHECK_SECONDS * random.uniform(0.8, 1.2)
            await asyncio.sleep(delay)
            await self.channel_layer.group_add(self.group, self.channel_name)
            ended = await self._key_ended()
            if ended is not None:
                await self._end(*ended)
                return

    async def _end(self, code: int, reason: str) -> None:
        logger.warning(
            "publish: closing producer worker %s's socket from %s (code %s): %s",
            self.producer.name,
            self.address,
            code,
            reason,
        )
        await self.close(code=code, reason=reason)

    def _stop_watching(self) -> None:
        if self.watch is not None and self.watch is not asyncio.current_task():
            self.watch.cancel()

    @database_sync_to_async
    def _key_ended(self) -> tuple[int, str] | None:
        """The close code and reason if the key stopped being valid, else None."""
        name = f"producer key {self.key.prefix}…"
        key = ProducerKey.objects.filter(pk=self.key.pk).first()
        if key is None:
            return CLOSE_TOKEN_REVOKED, f"{name} was deleted"
        state = key.state()
        if state == ProducerKey.State.REVOKED:
            return CLOSE_TOKEN_REVOKED, f"{name} was revoked"
        if state == ProducerKey.State.EXPIRED:
            return CLOSE_TOKEN_EXPIRED, f"{name} expired"
        return None

    async def _key_for(self, secret: str | None) -> tuple[ProducerKey | None, str]:
        """The valid key (with its producer), or None and why. What needs no
        database is refused here on the event loop (no thread hop, no query)."""
        if not secret:
            return None, "no Authorization: Bearer header"
        reason = ProducerKey.refusal(secret)
        if reason is not None:
            return None, reason
        return await self._authenticate(secret)

    @database_sync_to_async
    def _authenticate(self, secret: str) -> tuple[ProducerKey | None, str]:
        """By prefix only: one query."""
        key, why = ProducerKey.objects.select_related("producer").authenticate(secret)
        if key is not None:
            key.record_use(self.address)
        return key, why


async def store_publish(
    producer: Producer, data: publish.PublishData, *, pool: bool = False
) -> tuple[Tick, list[counters.PairUpdate]]:
    """Store a checked publish's whitelist and frames; the tick to broadcast, and
    each stored pair's counters for the status page.

    Every frame is checked and encoded before the first is stored: a bad frame
    anywhere leaves the snapshots as they were, never half a message applied.
    ``pool``: from a pool worker, whose history of a pair it just took over may
    end a candle before the previous owner's newest (see SnapshotStore.republish).

    Raises:
        ProtocolError: a frame does not belong to this producer, or holds a value
            with no wire form.
        SnapshotStoreUnavailable: the shared store (Redis) cannot be reached.
    """
    ready = [
        prepare_frame(producer, frame, f"frame {number}")
        for number, frame in enumerate(data["frames"])
    ]
    store = get_store()
    tick, updates = Tick(), []
    whitelist = data.get("whitelist")
    if whitelist is not None and await store.set_whitelist(producer.name, whitelist):
        tick.whitelist = whitelist
    for frame in ready:
        stored = await store_frame(store, frame, handover=pool)
        if stored is not None:
            tick.frames.append(stored[0])
            updates.append(stored[1])
    return tick, updates


@dataclass(frozen=True)
class ReadyFrame:
    """A frame checked against its producer and encoded, ready to store."""

    key: StreamKey
    frame: publish.PublishFrame
    rows: list[bytes]  # JSON, for FreqTrade's protocol
    packed: list[bytes]  # msgpack, for the native one
    dates: list[int]
    la: datetime


def prepare_frame(
    producer: Producer, frame: publish.PublishFrame, where: str = "frame"
) -> ReadyFrame:
    """Check that a frame is this producer's and encode its rows (nothing stored).

    Raises:
        ProtocolError: the frame is another timeframe or candle type, or holds a
            value with no wire form.
    """
    pair, timeframe, candle_type = frame["key"]
    if (timeframe, candle_type) != (producer.timeframe, producer.candle_type):
        raise ProtocolError(
            f"{where} key {frame['key']} does not match producer "
            f"{producer.name} ({producer.timeframe}, {producer.candle_type}): "
            "restart the producer worker after changing the producer's definition"
        )
    rows, dates = publish.frame_rows(frame, where)
    packed = publish.packed_rows(frame, where)
    key = (producer.name, pair, timeframe, candle_type)
    return ReadyFrame(key, frame, rows, packed, dates, parse_datetime(frame["la"]))


async def store_frame(
    store: SnapshotStore, ready: ReadyFrame, *, handover: bool = False
) -> tuple[TickFrame, counters.PairUpdate] | None:
    """Store one prepared frame; its rows to broadcast (None: nothing new to send)."""
    frame, la = ready.frame, ready.la
    args = (ready.key, frame["columns"], ready.rows, ready.packed, ready.dates, la)
    if frame["full"]:
        changed = await store.republish(
            *args, dtypes=frame["dtypes"], keep_newer=handover
        )
    else:
        changed = await store.upsert(*args, dtypes=frame["dtypes"])
    # FreqTrade broadcasts only the newest row(s), never a full frame: consumers
    # that are connected append it; new ones ask for the history. A history whose
    # older rows changed (a restarted producer re-analysed them) goes out from its
    # first changed row, so that connected consumers end equal to the hub.
    fresh = changed if frame["full"] else len(ready.rows)
    if frame["full"]:
        logger.debug(
            "publish: %s's history of %s (%d rows): its newest %d go to subscribers",
            ready.key[0],
            ready.key[1],
            len(ready.rows),
            fresh,
        )
    if not fresh:
        return None
    snapshot = await store.tail(ready.key, fresh)
    if snapshot is None or not snapshot.rows:
        return None
    _, pair, timeframe, candle_type = ready.key
    held = snapshot.first_index + len(snapshot.rows)
    counted = counters.PairUpdate(pair, ready.dates[-1], held, la.timestamp())
    return TickFrame(
        (pair, timeframe, candle_type), snapshot, frame["new_candle"]
    ), counted
