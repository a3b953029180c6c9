"""FeedSocket: the FreqTrade-compatible feed at /api/v1/message/ws.

A feed token selects the producer. Requests are answered from the hub's snapshots
(replies cached per key and limit); broadcasts arrive from the channel layer already
encoded, one layer message per tick, and are only forwarded here.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from controlplane.auth import scope_address, scope_token, throttle
from producers import protocol
from producers.groups import feed_group
from producers.models import FeedToken
from producers.snapshots import SnapshotStoreUnavailable, get_store

logger = logging.getLogger(__name__)

VALID_TOPICS = frozenset(protocol.MESSAGE_TYPES)
# Close code for a token revoked or expired while connected (application range).
CLOSE_TOKEN_REVOKED = 4001


class FeedSocket(AsyncWebsocketConsumer):
    token: FeedToken | None = None

    async def connect(self) -> None:
        self.address = scope_address(self.scope)
        self.subscriptions: frozenset[str] = frozenset()
        if throttle.blocked(self.address):
            await self.close()  # before accept: Daphne answers HTTP 403
            return
        token, reason = await self._resolve(scope_token(self.scope, allow_query=True))
        if token is None:
            throttle.failed(self.address)
            logger.warning("feed: refused %s: %s", self.address, reason)
            await self.close()
            return
        self.token, self.producer = token, token.producer
        self.group = feed_group(self.producer.name)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.rejoin = asyncio.create_task(self._keep_group())
        logger.info(
            "feed: %s connected to %s with token %s",
            self.address,
            self.producer.name,
            token.prefix,
        )

    async def disconnect(self, code: int) -> None:
        if self.token is None:
            return
        self.rejoin.cancel()
        await self.channel_layer.group_discard(self.group, self.channel_name)
        logger.info(
            "feed: %s left %s (code %s)", self.address, self.producer.name, code
        )

    async def receive(self, text_data=None, bytes_data=None) -> None:
        try:
            request = protocol.parse_request(
                text_data if text_data is not None else bytes_data
            )
        except protocol.ProtocolError as exc:
            logger.info("feed: bad request from %s: %s", self.address, exc)
            await self.send(protocol.exception_message(str(exc)))
            return
        try:
            await getattr(self, f"_on_{request.type}")(request)
        except SnapshotStoreUnavailable as exc:
            logger.error("feed: cannot answer %s: %s", request.type, exc)
            await self.send(protocol.exception_message("Error processing request"))

    async def feed_broadcast(self, event: dict) -> None:
        """Forward one tick's frames, already encoded, in the subscribed types."""
        for kind, text in event["messages"]:
            if kind in self.subscriptions:
                await self.send(text)

    async def feed_revoke(self, event: dict) -> None:
        if self.token is not None and self.token.pk in event["token_ids"]:
            logger.info(
                "feed: closing %s: token %s %s",
                self.address,
                self.token.prefix,
                event["reason"],
            )
            await self.close(code=CLOSE_TOKEN_REVOKED, reason=event["reason"])

    ### Requests

    async def _on_subscribe(self, request: protocol.Request) -> None:
        if not request.topics:
            return  # FreqTrade: an empty list changes nothing
        unknown = sorted(set(request.topics) - VALID_TOPICS)
        if unknown:
            # FreqTrade ignores such a request silently; we say why.
            await self.send(
                protocol.exception_message(
                    f"Unknown topic(s) {', '.join(unknown)}: subscription unchanged; "
                    f"valid topics: {', '.join(protocol.MESSAGE_TYPES)}"
                )
            )
            return
        self.subscriptions = frozenset(request.topics)

    async def _on_whitelist(self, request: protocol.Request) -> None:
        await self.send(protocol.whitelist_message(await self._whitelist()))

    async def _on_analyzed_df(self, request: protocol.Request) -> None:
        pairs = [request.pair] if request.pair else await self._whitelist()
        store = get_store()
        limit_bytes = settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB << 20
        for pair in pairs:
            key = (
                self.producer.name,
                pair,
                self.producer.timeframe,
                self.producer.candle_type,
            )
            text = await store.analyzed_df_reply(key, request.limit)
            if len(text) > limit_bytes:
                await self.send(
                    protocol.exception_message(
                        f"The {pair} frame is {len(text) / 2**20:.1f} MiB, over the "
                        f"{settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB} MiB message size "
                        "limit: request fewer candles with a smaller limit"
                    )
                )
                continue
            await self.send(text)

    ### Helpers

    async def _whitelist(self) -> list[str]:
        pairs = await get_store().whitelist(self.producer.name)
        return list(self.producer.pairs) if pairs is None else pairs

    async def _keep_group(self) -> None:
        # Layer groups expire (24 h by default): re-join well before that so a
        # consumer connected for days keeps receiving.
        interval = max(settings.CHANNEL_GROUP_EXPIRY / 4, 1)
        while True:
            await asyncio.sleep(interval)
            await self.channel_layer.group_add(self.group, self.channel_name)

    @database_sync_to_async
    def _resolve(self, plaintext: str | None) -> tuple[FeedToken | None, str]:
        if not plaintext:
            return None, "no token (send ?token= or an Authorization: Bearer header)"
        token, reason = FeedToken.objects.authenticate(plaintext)
        if token is not None:
            token.record_use(self.address)
        return token, reason
