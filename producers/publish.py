"""PublishSocket: where producer workers hand analysed rows to the hub.

The worker authenticates with its producer key (Authorization header only). Each
publish (controlplane/lib/wire/publish.py) is checked whole, then updates the
snapshots; the tick's broadcast is encoded once per feed format (wire.FORMATS) and
sent as one layer message to that format's group, so a feed socket receives only
its own format's bytes.
"""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from controlplane.lib import counters
from controlplane.lib.auth import scope_address, scope_token, throttle
from controlplane.lib.wire import FORMATS, publish
from controlplane.lib.wire.columns import ProtocolError, parse_datetime
from controlplane.lib.wire.shapes import Tick, TickFrame
from producers.groups import FEED_TICK, TickMessage, feed_group
from producers.models import Producer
from producers.snapshots import SnapshotStore, SnapshotStoreUnavailable, get_store

logger = logging.getLogger(__name__)


class PublishSocket(AsyncWebsocketConsumer):
    producer: Producer  # once accepted
    accepted = False

    async def connect(self) -> None:
        self.address = scope_address(self.scope)
        key = scope_token(self.scope, allow_query=False)
        producer = await self._producer_for(key) if key else None
        if producer is None:
            if throttle.failed(self.address):  # logged once for the window
                counters.handshake_refused("throttled")
            else:
                counters.handshake_refused("credentials")
                logger.warning(
                    "publish: refused %s: %s",
                    self.address,
                    "no Authorization: Bearer header"
                    if not key
                    else "unknown producer key",
                )
            await self.close()
            return
        if not producer.enabled:
            logger.warning(
                "publish: refused %s: producer %s is disabled",
                self.address,
                producer.name,
            )
            counters.handshake_refused("disabled")
            await self.close()
            return
        await self.accept()
        self.producer, self.accepted, self.broadcasts = producer, True, 0
        counters.producer_connected(self.producer.name, self.channel_name, self.address)
        logger.info(
            "publish: producer worker %s connected from %s",
            self.producer.name,
            self.address,
        )

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
            raise

    async def disconnect(self, code: int) -> None:
        if self.accepted:
            counters.producer_disconnected(self.producer.name, self.channel_name)
            logger.info(
                "publish: producer worker %s disconnected (code %s)",
                self.producer.name,
                code,
            )

    async def receive(self, text_data=None, bytes_data=None) -> None:
        seq = None
        text = text_data if text_data is not None else bytes_data
        try:
            message = publish.parse_publish(text)
            seq = message["seq"]
            tick, updates = await store_publish(self.producer, message["data"])
        except ProtocolError as exc:
            logger.warning(
                "publish: %s sent a bad message: %s", self.producer.name, exc
            )
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
        await self.send(publish.ack_message(seq))

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

    @database_sync_to_async
    def _producer_for(self, key: str) -> Producer | None:
        return Producer.for_key(key)


async def store_publish(
    producer: Producer, data: publish.PublishData
) -> tuple[Tick, list[counters.PairUpdate]]:
    """Store a checked publish's whitelist and frames; the tick to broadcast, and
    each stored pair's counters for the status page.

    Raises:
        ProtocolError: a frame does not belong to this producer, or holds a value
            with no wire form.
        SnapshotStoreUnavailable: the shared store (Redis) cannot be reached.
    """
    store = get_store()
    tick, updates = Tick(), []
    whitelist = data.get("whitelist")
    if whitelist is not None and await store.set_whitelist(producer.name, whitelist):
        tick.whitelist = whitelist
    for frame in data["frames"]:
        stored = await store_frame(store, producer, frame)
        if stored is not None:
            tick.frames.append(stored[0])
            updates.append(stored[1])
    return tick, updates


async def store_frame(
    store: SnapshotStore, producer: Producer, frame: publish.PublishFrame
) -> tuple[TickFrame, counters.PairUpdate] | None:
    """Store one frame; its rows to broadcast (None: nothing new to send)."""
    pair, timeframe, candle_type = frame["key"]
    if (timeframe, candle_type) != (producer.timeframe, producer.candle_type):
        raise ProtocolError(
            f"frame key {frame['key']} does not match producer "
            f"{producer.name} ({producer.timeframe}, {producer.candle_type}): "
            "restart the producer worker after changing the producer's definition"
        )
    key = (producer.name, pair, timeframe, candle_type)
    rows, dates = publish.frame_rows(frame)
    la = parse_datetime(frame["la"])
    update = store.republish if frame["full"] else store.upsert
    changed = await update(
        key,
        frame["columns"],
        rows,
        publish.packed_rows(frame),
        dates,
        la,
        dtypes=frame["dtypes"],
    )
    # FreqTrade broadcasts only the newest row(s), never a full frame: consumers
    # that are connected append it; new ones ask for the history. A history whose
    # older rows changed (a restarted producer re-analysed them) goes out from its
    # first changed row, so that connected consumers end equal to the hub.
    fresh = changed if frame["full"] else len(rows)
    if not fresh:
        return None
    snapshot = await store.tail(key, fresh)
    if snapshot is None or not snapshot.rows:
        return None
    held = snapshot.first_index + len(snapshot.rows)
    counted = counters.PairUpdate(pair, dates[-1], held, la.timestamp())
    return TickFrame(
        (pair, timeframe, candle_type), snapshot, frame["new_candle"]
    ), counted
