"""PublishSocket: where producer workers hand analysed rows to the hub.

The worker authenticates with its producer key (Authorization header only). Each
publish updates the snapshots, then the tick's broadcast is encoded once per wire
format: FreqTrade's text frames to the producer's feed group, and one native
(candlecast.v1) binary message carrying every pair's new rows to its native group.
Each is one layer message, so a subscriber receives only its own format's bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from controlplane.lib import counters
from controlplane.lib.auth import scope_address, scope_token, throttle
from controlplane.lib.wire import native, protocol
from producers.groups import FEED_BROADCAST, FEED_NATIVE, feed_group, native_group
from producers.models import Producer
from producers.snapshots import SnapshotStoreUnavailable, get_store

logger = logging.getLogger(__name__)


@dataclass
class _Tick:
    """One publish's broadcast, in both formats."""

    messages: list[tuple[str, str]] = field(default_factory=list)  # FreqTrade's
    blocks: list[bytes] = field(default_factory=list)  # native frames, one per pair
    pairs: list[str] = field(default_factory=list)  # the pair of each block
    whitelist: list[str] | None = None  # a changed whitelist
    topics: set[str] = field(default_factory=set)  # what the tick carries


class PublishSocket(AsyncWebsocketConsumer):
    producer: Producer | None = None
    accepted = False

    async def connect(self) -> None:
        self.address = scope_address(self.scope)
        if throttle.blocked(self.address):
            counters.handshake_refused("throttled")
            await self.close()
            return
        key = scope_token(self.scope, allow_query=False)
        self.producer = await self._producer_for(key) if key else None
        if self.producer is None:
            throttle.failed(self.address)
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
        if not self.producer.enabled:
            logger.warning(
                "publish: refused %s: producer %s is disabled",
                self.address,
                self.producer.name,
            )
            counters.handshake_refused("disabled")
            await self.close()
            return
        await self.accept()
        self.accepted, self.broadcasts = True, 0
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
        updates: list[counters.PairUpdate] = []
        tick = _Tick()
        try:
            message = protocol.parse_publish(text)
            seq = message["seq"]
            await self._apply(message["data"], updates, tick)
        except protocol.ProtocolError as exc:
            logger.warning(
                "publish: %s sent a bad message: %s", self.producer.name, exc
            )
            await self.send(protocol.error_message(seq, str(exc)))
            return
        except (SnapshotStoreUnavailable, ValueError) as exc:
            logger.error(
                "publish: cannot store %s's frames: %s", self.producer.name, exc
            )
            await self.send(protocol.error_message(seq, str(exc)))
            return
        new_candles = sum(1 for kind, _ in tick.messages if kind == "new_candle")
        counters.published(self.producer.name, updates, len(text), new_candles)
        if tick.messages:
            await self._broadcast(tick)
        await self.send(protocol.ack_message(seq))

    async def _broadcast(self, tick: _Tick) -> None:
        # Numbered, so that a feed socket notices a broadcast the layer dropped; both
        # groups share the numbers (a socket is in one group only).
        self.broadcasts += 1
        common = {"origin": self.channel_name, "seq": self.broadcasts}
        await self.channel_layer.group_send(
            feed_group(self.producer.name),
            {"type": FEED_BROADCAST, "messages": tick.messages, **common},
        )
        limit = settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB << 20
        packed, oversize = native.tick_messages(tick.blocks, tick.whitelist, limit)
        for number in oversize:
            logger.error(
                "publish: %s's native rows for %s are over the %d MiB message size "
                "limit and were not broadcast; native consumers ask for them when "
                "they notice the gap",
                self.producer.name,
                tick.pairs[number],
                settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB,
            )
        if packed:
            await self.channel_layer.group_send(
                native_group(self.producer.name),
                {
                    "type": FEED_NATIVE,
                    "messages": packed,
                    "topics": sorted(tick.topics),
                    **common,
                },
            )

    async def _apply(
        self,
        data: protocol.PublishData,
        updates: list[counters.PairUpdate],
        tick: _Tick,
    ) -> None:
        """Store the frames; collect the tick's broadcast in both formats."""
        store = get_store()
        whitelist = data.get("whitelist")
        if whitelist is not None and await store.set_whitelist(
            self.producer.name, whitelist
        ):
            tick.messages.append(("whitelist", protocol.whitelist_message(whitelist)))
            tick.whitelist = whitelist
            tick.topics.add("whitelist")
        for frame in data["frames"]:
            await self._store_frame(store, frame, updates, tick)

    async def _store_frame(
        self,
        store,
        frame: protocol.PublishFrame,
        updates: list[counters.PairUpdate],
        tick: _Tick,
    ) -> None:
        pair, timeframe, candle_type = frame["key"]
        if (timeframe, candle_type) != (
            self.producer.timeframe,
            self.producer.candle_type,
        ):
            raise protocol.ProtocolError(
                f"frame key {frame['key']} does not match producer "
                f"{self.producer.name} ({self.producer.timeframe}, "
                f"{self.producer.candle_type}): restart the producer worker after "
                "changing the producer's definition"
            )
        key = (self.producer.name, pair, timeframe, candle_type)
        rows, dates = protocol.frame_rows(frame)
        packed = protocol.packed_rows(frame)
        la = protocol.parse_datetime(frame["la"])
        update = store.replace if frame["full"] else store.upsert
        await update(
            key,
            frame["columns"],
            rows,
            dates,
            la,
            packed=packed,
            dtypes=frame.get("dtypes"),
        )
        # FreqTrade broadcasts only the newest row(s), never a full frame: consumers
        # that are connected append it; new ones ask for the history.
        fresh = min(len(rows), 1 if frame["full"] else len(rows))
        if not fresh:
            return
        snapshot = await store.tail(key, fresh)
        if snapshot is None or not snapshot.rows:
            return
        rows_held = snapshot.first_index + len(snapshot.rows)
        updates.append(counters.PairUpdate(pair, dates[-1], rows_held, la.timestamp()))
        split = protocol.split_document(
            snapshot.columns, snapshot.rows, snapshot.first_index
        )
        tick.messages.append(
            ("analyzed_df", protocol.analyzed_df_message(frame["key"], split, la))
        )
        tick.blocks.append(
            native.frame_block(
                frame["key"],
                snapshot.native_columns(),
                len(snapshot.rows),
                snapshot.first_index,
                la,
                new_candle=frame["new_candle"],
            )
        )
        tick.pairs.append(pair)
        tick.topics.add("analyzed_df")
        if frame["new_candle"]:
            tick.messages.append(
                ("new_candle", protocol.new_candle_message(frame["key"]))
            )
            tick.topics.add("new_candle")

    @database_sync_to_async
    def _producer_for(self, key: str) -> Producer | None:
        return Producer.for_key(key)
