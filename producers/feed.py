"""FeedSocket: the FreqTrade-compatible feed at /api/v1/message/ws.

A feed token selects the producer; the subprotocols the client offers select the
feed format (controlplane/lib/wire: ``candlecast.v1`` for our consumer workers, which
FreqTrade never offers; FreqTrade's protocol, byte for byte, for everyone else).
Requests are JSON either way and answered from the hub's snapshots (replies cached
per key, limit and format); broadcasts arrive from the channel layer already encoded
in this socket's format, one layer message per tick, and are only forwarded here.
A socket lives only
as long as its token: it is closed when the token is revoked (a layer message, from
any hub process) and at the moment it expires (a timer the layer can reschedule).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from datetime import datetime

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from controlplane.lib import counters, wire
from controlplane.lib.auth import TokenSocket, scope_address, scope_token, throttle
from controlplane.lib.hubclient import wait_or_stop
from controlplane.lib.outbox import Outbox, SocketTooSlow, stream_key
from controlplane.lib.wire import freqtrade
from controlplane.lib.wire.columns import ProtocolError, escaped
from producers.groups import (
    ExpiryMessage,
    RevokeMessage,
    TickMessage,
    feed_group,
    token_group,
)
from producers.models import FeedToken
from producers.snapshots import SnapshotStoreUnavailable, StreamKey, get_store

logger = logging.getLogger(__name__)

VALID_TOPICS = frozenset(freqtrade.MESSAGE_TYPES)
# Close codes (application range) for a token that stopped being valid while
# connected. FreqTrade clients reconnect after any close; the next handshake is
# refused with HTTP 403, which they back off from.
CLOSE_TOKEN_REVOKED = 4001
CLOSE_TOKEN_EXPIRED = 4002
# Too slow: over its cap of unsent broadcasts, or no pong (runhub). Our worker and
# FreqTrade reconnect and request history; a live socket merely behind is not closed.
CLOSE_TOO_SLOW = 4008
# Requests waiting for their replies; more from a client that does not read: too slow.
MAX_PENDING_REQUESTS = 1000
# A socket with broadcasts unsent for this long shows as behind on the status page.
BEHIND_SECONDS = 1.0
# Reads of a reply while ticks keep arriving, before it is sent as it is (the next
# candle then heals any rewind: the consumer sees the hole and asks for it).
REPLY_READS = 3


class FeedSocket(TokenSocket):
    token: FeedToken | None = None
    format: wire.FeedFormat = wire.FREQTRADE  # what this client speaks
    tasks: Sequence[asyncio.Task] = ()
    expires_at: datetime | None = None  # the token's, kept up to date

    async def connect(self) -> None:
        self.address = scope_address(self.scope)
        self.subscriptions: frozenset[str] = frozenset()
        self.in_feed_group = False  # from the first subscription on
        token, reason = await self._resolve(scope_token(self.scope, allow_query=True))
        if token is None:
            if throttle.failed(self.address):  # logged once for the window
                counters.handshake_refused("throttled")
            else:
                counters.handshake_refused("credentials")
                logger.warning("feed: refused %s: %s", self.address, reason)
            await self.close()  # before accept: Daphne answers HTTP 403
            return
        self.format = wire.negotiate(self.scope.get("subprotocols", ()))
        if not await self._join(token):
            await self.close()
            return
        await self.accept(subprotocol=self.format.subprotocol)
        self.link = counters.feed_connected(
            self.producer.name,
            self.channel_name,
            label=token.label or f"token {token.prefix}…",
            address=self.address,
            token_id=token.pk,
        )
        self.token_changed = asyncio.Event()
        self.outbox = Outbox(settings.CANDLECAST_FEED_SOCKET_CAP_MB << 20)
        self.ticks = 0  # ticks queued in the outbox, to see one arrive during a read
        self.sending = asyncio.Lock()  # one message at a time, in a whole order
        self.requests: asyncio.Queue = asyncio.Queue(MAX_PENDING_REQUESTS)
        self.tasks = [
            asyncio.create_task(self._keep_group()),
            asyncio.create_task(self._watch_token()),
            asyncio.create_task(self._drain()),
            asyncio.create_task(self._serve()),
        ]
        logger.info(
            "feed: %s connected to %s with token %s (%s)",
            self.address,
            self.producer.name,
            token.prefix,
            self.format.name,
        )

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:
            # A failing channel layer (Redis down) ends the socket without any
            # websocket.disconnect: it would stay listed as connected for good.
            if self.token is not None:
                logger.error(
                    "feed: lost %s: %s (is the channel layer's Redis up?)",
                    self.address,
                    exc,
                )
                self._forget()
            raise

    async def disconnect(self, code: int) -> None:
        if self.token is None:
            return
        if code == CLOSE_TOO_SLOW:  # runhub: no pong, said in its log
            self.link.closed_slow()
        self._forget()
        await self.channel_layer.group_discard(self.token_group, self.channel_name)
        if self.in_feed_group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        logger.info(
            "feed: %s left %s (code %s)", self.address, self.producer.name, code
        )

    async def receive(self, text_data=None, bytes_data=None) -> None:
        # Served by _serve: a reply waiting on a client that does not read must not
        # hold up this socket's broadcasts (the layer would queue them meanwhile).
        try:
            self.requests.put_nowait(text_data if text_data is not None else bytes_data)
        except asyncio.QueueFull:
            await self._too_slow(f"{MAX_PENDING_REQUESTS} requests left unanswered")

    async def _handle(self, text_data=None, bytes_data=None) -> None:
        try:
            request = freqtrade.parse_request(
                text_data if text_data is not None else bytes_data
            )
        except ProtocolError as exc:
            # Once per connection at INFO: a client repeating a mistake would
            # otherwise flood the log. Every one gets its exception reply.
            self.bad_requests = getattr(self, "bad_requests", 0) + 1
            level = logging.INFO if self.bad_requests == 1 else logging.DEBUG
            logger.log(level, "feed: bad request from %s: %s", self.address, exc)
            await self.send(freqtrade.exception_message(str(exc)))
            return
        try:
            await getattr(self, f"_on_{request.type}")(request)
        except SnapshotStoreUnavailable as exc:
            logger.error("feed: cannot answer %s: %s", request.type, exc)
            await self.send(freqtrade.exception_message("Error processing request"))

    async def feed_tick(self, event: TickMessage) -> None:
        """Forward one tick's messages, already encoded in this socket's format.

        A message goes when the socket subscribed to any topic it carries (a native
        message carries the whole tick; the client skips what it did not ask for).
        """
        if self.link.slow:
            return  # closing as too slow: nothing more is queued for it
        sent = size = 0
        superseded = self.outbox.superseded
        for position, (topics, data) in enumerate(event["messages"]):
            if self.subscriptions.intersection(topics):
                try:
                    self.outbox.put(stream_key(data, position), data)
                except SocketTooSlow as exc:
                    await self._too_slow(str(exc))
                    return
                sent += 1
                size += len(data)
        self.ticks += 1
        self.link.delivered(event, sent, size)
        self._report_backlog(superseded)

    async def feed_revoke(self, event: RevokeMessage) -> None:
        if self.token is not None and self.token.pk in event["token_ids"]:
            await self._end(CLOSE_TOKEN_REVOKED, event["reason"])

    async def feed_expiry(self, event: ExpiryMessage) -> None:
        """The token's expiry changed (a rotation, an edit): re-plan the close."""
        if self.token is not None and self.token.pk in event["token_ids"]:
            expires_at = event["expires_at"]
            self.expires_at = datetime.fromisoformat(expires_at) if expires_at else None
            self.token_changed.set()

    ### Requests

    async def _on_subscribe(self, request: freqtrade.Request) -> None:
        if not request.topics:
            return  # FreqTrade: an empty list changes nothing
        unknown = sorted(set(request.topics) - VALID_TOPICS)
        if unknown:
            # FreqTrade ignores such a request silently; we say why (a few of them,
            # escaped: the client's strings come back in our words).
            named = ", ".join(escaped(topic) for topic in unknown[:3])
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            await self.send(
                freqtrade.exception_message(
                    f"Unknown topic(s) {named}{more}: subscription unchanged; "
                    f"valid topics: {', '.join(freqtrade.MESSAGE_TYPES)}"
                )
            )
            return
        self.subscriptions = frozenset(request.topics)
        if not self.in_feed_group:
            # Ticks go to subscribed sockets only: a socket that subscribed to
            # nothing costs the layer and the event loop nothing per tick (500 of
            # them added 110 ms to the others' tick latency, docs/benchmarks.md).
            await self.channel_layer.group_add(self.group, self.channel_name)
            self.in_feed_group = True

    async def _on_whitelist(self, request: freqtrade.Request) -> None:
        # After the broadcasts already queued, as a frame reply: an older queued
        # whitelist sent after this newer reply would take the consumer back.
        async with self.sending:
            await self._send_queued()
            text = freqtrade.whitelist_message(await self._whitelist())
            await self.send(text)
        self.link.replied(len(text))

    async def _on_analyzed_df(self, request: freqtrade.Request) -> None:
        pairs = [request.pair] if request.pair else await self._whitelist()
        limit_bytes = settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB << 20
        for pair in pairs:
            key = (
                self.producer.name,
                pair,
                self.producer.timeframe,
                self.producer.candle_type,
            )
            async with self.sending:
                text = await self._fresh_reply(key, request.limit)
                if len(text) > limit_bytes:
                    self.link.refused_oversize()
                    await self.send(
                        freqtrade.exception_message(
                            f"The {pair} frame is {len(text) / 2**20:.1f} MiB, over "
                            f"the {settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB} MiB "
                            "message size limit: request fewer candles with a "
                            "smaller limit"
                        )
                    )
                    continue
                await self._send(text)
            self.link.replied(len(text))

    async def _fresh_reply(self, key: StreamKey, limit: int | None) -> str | bytes:
        """A reply no older than any broadcast sent before it (under ``sending``).

        A reply sent after a newer candle of its pair would rewind the consumer's
        frame (FreqTrade's and ours: an older first date cuts the stored rows). So
        the broadcasts queued before it go first, and a reply read while a tick
        arrived (the hub stores a tick before broadcasting it) is read again.
        """
        for _ in range(REPLY_READS):
            await self._send_queued()
            ticks = self.ticks
            text = await get_store().reply(key, limit, self.format)
            if self.ticks == ticks:
                break
        return text

    ### Sending: broadcasts latest-wins, requests in order

    async def _drain(self) -> None:
        while True:
            await self.outbox.ready()
            async with self.sending:
                await self._send_queued(1)

    async def _send_queued(self, most: int | None = None) -> None:
        """Send what the outbox holds now (at most ``most``), oldest first."""
        for _ in range(len(self.outbox.items) if most is None else most):
            data = self.outbox.pop()
            if data is None:
                return
            await self._send(data)  # waits while the connection's buffer is full
            self.outbox.sent()
            if self.outbox.behind_since is None:
                self._report_backlog(self.outbox.superseded)

    async def _serve(self) -> None:
        while True:
            text = await self.requests.get()
            if isinstance(text, str):
                await self._handle(text_data=text)
            else:
                await self._handle(bytes_data=text)

    def _report_backlog(self, superseded_before: int) -> None:
        box = self.outbox
        since = None
        if box.behind_since is not None and box.items:
            lag = time.monotonic() - box.behind_since
            since = time.time() - lag if lag >= BEHIND_SECONDS else None
        self.link.behind(since, box.nbytes, box.superseded - superseded_before)

    async def _too_slow(self, reason: str) -> None:
        self.link.closed_slow()
        self.outbox.items.clear()  # what it would have read: gone with the socket
        await self._end(CLOSE_TOO_SLOW, reason)

    ### Helpers

    async def _send(self, data: str | bytes) -> None:
        if self.format.binary:
            await self.send(bytes_data=data)
        else:
            await self.send(text_data=data)

    def _forget(self) -> None:
        """Leave the status page and stop this socket's timers (idempotent)."""
        counters.feed_disconnected(self.producer.name, self.channel_name)
        for task in self.tasks:
            task.cancel()

    async def _whitelist(self) -> list[str]:
        pairs = await get_store().whitelist(self.producer.name)
        return list(self.producer.pairs) if pairs is None else pairs

    async def _join(self, token: FeedToken) -> bool:
        """Join the token's group; False if the token ended meanwhile.

        The producer's feed group (the ticks) is joined at the first subscription.
        """
        self.token, self.producer = token, token.producer
        self.expires_at = token.expires_at
        # A socket is in its format's group only: a native one never receives (or
        # costs the layer) FreqTrade's per-pair texts, nor the reverse.
        self.group = feed_group(self.producer.name, self.format)
        self.token_group = token_group(token.pk)
        await self.channel_layer.group_add(self.token_group, self.channel_name)
        # A revocation committed after _resolve but before group_add was sent before
        # this socket could hear it: read the token once more, now that it listens.
        ended = await self._recheck()
        if ended is None:
            return True
        await self.channel_layer.group_discard(self.token_group, self.channel_name)
        logger.warning("feed: refused %s: %s", self.address, ended[1])
        self.token = None
        return False

    async def _keep_group(self) -> None:
        # Layer groups expire (24 h by default): re-join well before that so a
        # consumer connected for days keeps receiving.
        interval = max(settings.CHANNEL_GROUP_EXPIRY / 4, 1)
        while True:
            await asyncio.sleep(interval)
            await self.channel_layer.group_add(self.token_group, self.channel_name)
            if self.in_feed_group:
                await self.channel_layer.group_add(self.group, self.channel_name)

    async def _watch_token(self) -> None:
        """Close this socket when its token expires, and re-read the token now and
        then: a layer message can be lost (Redis down, a change made elsewhere)."""
        while True:
            delay = settings.CANDLECAST_TOKEN_RECHECK_SECONDS * random.uniform(0.8, 1.2)
            if self.expires_at is not None:
                delay = min(delay, (self.expires_at - timezone.now()).total_seconds())
            woken = await wait_or_stop(self.token_changed, delay)
            self.token_changed.clear()
            if woken:
                continue  # the expiry moved: plan again
            ended = self._expired() or await self._recheck()
            if ended is not None:
                await self._end(*ended)
                return

    def _expired(self) -> tuple[int, str] | None:
        if self.token is None:
            return None
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return CLOSE_TOKEN_EXPIRED, f"token {self.token.prefix}… expired"
        return None

    async def _end(self, code: int, reason: str) -> None:
        level = logging.WARNING if code == CLOSE_TOO_SLOW else logging.INFO
        logger.log(level, "feed: closing %s (code %s): %s", self.address, code, reason)
        await self.close(code=code, reason=reason)

    @database_sync_to_async
    def _recheck(self) -> tuple[int, str] | None:
        """The close code and reason if the token stopped being valid, else None."""
        if self.token is None:
            return None
        prefix = self.token.prefix
        row = (
            FeedToken.objects.filter(pk=self.token.pk)
            .values("revoked_at", "expires_at")
            .first()
        )
        if row is None:
            return CLOSE_TOKEN_REVOKED, f"token {prefix}… was deleted"
        if row["revoked_at"] is not None:
            return CLOSE_TOKEN_REVOKED, f"token {prefix}… was revoked"
        self.expires_at = row["expires_at"]
        return self._expired()

    async def _resolve(self, plaintext: str | None) -> tuple[FeedToken | None, str]:
        """The valid token, or None and why. What needs no database is refused
        here on the event loop (no thread hop, no query); the rest costs one hop."""
        if not plaintext:
            return None, "no token (send ?token= or an Authorization: Bearer header)"
        reason = FeedToken.refusal(plaintext)
        if reason is not None:
            return None, reason
        return await self._authenticate(plaintext)

    @database_sync_to_async
    def _authenticate(self, plaintext: str) -> tuple[FeedToken | None, str]:
        token, reason = FeedToken.objects.authenticate(plaintext)
        if token is not None:
            token.record_use(self.address)
        return token, reason
