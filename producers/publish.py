"""PublishSocket: where producer workers hand analysed rows to the hub.

The worker authenticates with its producer key (Authorization header only). Each
publish updates the snapshots, then the tick's broadcast frames are encoded once
and sent to the producer's feed group as one layer message.
"""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from controlplane import status
from controlplane.auth import scope_address, scope_token, throttle
from producers import protocol
from producers.groups import FEED_BROADCAST, feed_group
from producers.models import Producer
from producers.snapshots import SnapshotStoreUnavailable, get_store

logger = logging.getLogger(__name__)


class PublishSocket(AsyncWebsocketConsumer):
    producer: Producer | None = None
    accepted = False

    async def connect(self) -> None:
        self.address = scope_address(self.scope)
        if throttle.blocked(self.address):
            status.handshake_refused("throttled")
            await self.close()
            return
        key = scope_token(self.scope, allow_query=False)
        self.producer = await self._producer_for(key) if key else None
        if self.producer is None:
            throttle.failed(self.address)
            status.handshake_refused("credentials")
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
            status.handshake_refused("disabled")
            await self.close()
            return
        await self.accept()
        self.accepted, self.broadcasts = True, 0
        status.producer_connected(self.producer.name, self.channel_name, self.address)
        logger.info(
            "publish: producer worker %s connected from %s",
            self.producer.name,
            self.address,
        )

    async def disconnect(self, code: int) -> None:
        if self.accepted:
            status.producer_disconnected(self.producer.name, self.channel_name)
            logger.info(
                "publish: producer worker %s disconnected (code %s)",
                self.producer.name,
                code,
            )

    async def receive(self, text_data=None, bytes_data=None) -> None:
        seq = None
        text = text_data if text_data is not None else bytes_data
        updates: list[status.PairUpdate] = []
        try:
            message = protocol.parse_publish(text)
            seq = message["seq"]
            messages = await self._apply(message["data"], updates)
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
        new_candles = sum(1 for kind, _ in messages if kind == "new_candle")
        status.published(self.producer.name, updates, len(text), new_candles)
        if messages:
            # Numbered, so that a feed socket notices a broadcast the layer dropped.
            self.broadcasts += 1
            await self.channel_layer.group_send(
                feed_group(self.producer.name),
                {
                    "type": FEED_BROADCAST,
                    "messages": messages,
                    "origin": self.channel_name,
                    "seq": self.broadcasts,
                },
            )
        await self.send(protocol.ack_message(seq))

    async def _apply(
        self, data: protocol.PublishData, updates: list[status.PairUpdate]
    ) -> list[tuple[str, str]]:
        """Store the frames; return the tick's broadcast as (type, text) pairs."""
        store = get_store()
        messages: list[tuple[str, str]] = []
        whitelist = data.get("whitelist")
        if whitelist is not None and await store.set_whitelist(
            self.producer.name, whitelist
        ):
            messages.append(("whitelist", protocol.whitelist_message(whitelist)))
        for frame in data["frames"]:
            messages.extend(await self._store_frame(store, frame, updates))
        return messages

    async def _store_frame(
        self,
        store,
        frame: protocol.PublishFrame,
        updates: list[status.PairUpdate],
    ):
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
        la = protocol.parse_datetime(frame["la"])
        update = store.replace if frame["full"] else store.upsert
        await update(key, frame["columns"], rows, dates, la)
        # FreqTrade broadcasts only the newest row(s), never a full frame: consumers
        # that are connected append it; new ones ask for the history.
        fresh = min(len(rows), 1 if frame["full"] else len(rows))
        if not fresh:
            return []
        snapshot = await store.tail(key, fresh)
        if snapshot is None or not snapshot.rows:
            return []
        rows_held = snapshot.first_index + len(snapshot.rows)
        updates.append(status.PairUpdate(pair, dates[-1], rows_held, la.timestamp()))
        split = protocol.split_document(
            snapshot.columns, snapshot.rows, snapshot.first_index
        )
        messages = [
            ("analyzed_df", protocol.analyzed_df_message(frame["key"], split, la))
        ]
        if frame["new_candle"]:
            messages.append(("new_candle", protocol.new_candle_message(frame["key"])))
        return messages

    @database_sync_to_async
    def _producer_for(self, key: str) -> Producer | None:
        return Producer.for_key(key)
