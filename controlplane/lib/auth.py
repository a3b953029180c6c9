"""Shared authentication helpers for the hub's token routes.

One place reads a credential from a WebSocket or HTTP request, checks a sent Origin
and throttles addresses that keep failing, so the feed, the publish socket and the
HTTP API refuse the same way.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from urllib.parse import parse_qs, urlparse

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import validate_host

logger = logging.getLogger(__name__)


def header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return None


def scope_token(scope: dict, *, allow_query: bool) -> str | None:
    """The credential of a WebSocket scope: `Authorization: Bearer`, else `?token=`.

    FreqTrade's consumer can only send the query string; our own workers always use
    the header, which keeps the secret out of URLs and access logs.
    """
    token = bearer(header(scope, b"authorization"))
    if token or not allow_query:
        return token
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


def scope_address(scope: dict) -> str:
    client = scope.get("client") or ("unknown", 0)
    return str(client[0])


class OptionalOriginValidator:
    """Accept a missing Origin (bots send none); check one that is sent.

    Channels' own OriginValidator refuses a missing Origin, which would lock out every
    FreqTrade consumer; browsers always send one, so cross-site pages are still refused.
    """

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        origin = header(scope, b"origin")
        if origin is not None and not self.allowed(origin):
            logger.warning("refused a WebSocket from origin %s", origin[:200])
            denier = WebsocketDenier()
            return await denier(scope, receive, send)
        return await self.application(scope, receive, send)

    @staticmethod
    def allowed(origin: str) -> bool:
        host = urlparse(origin).hostname
        if not host:
            return False
        return validate_host(host, settings.ALLOWED_HOSTS)


class TokenSocket(AsyncWebsocketConsumer):
    """The base of the token routes' sockets (feed, publish): Channels' consumer
    without its sync-thread hop per message.

    Channels (4.2 on) runs ``close_old_connections`` through ``sync_to_async``
    before every message it dispatches and after a disconnect: two thread hops for
    a refused handshake that never touches the database, and one per message
    forwarded. These sockets reach the ORM only through ``database_sync_to_async``
    methods, which close stale connections themselves, before and after each call.
    """

    async def dispatch(self, message: dict) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict) -> None:
        for group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        await self.disconnect(message["code"])
        raise StopConsumer()


class FailureThrottle:
    """Failed credentials per address in a sliding window, and the secrets that
    failed lately.

    It never refuses a valid credential. It exists against guessing, and a
    43-character random secret cannot be guessed; refusing an address outright
    would let one bad client lock out every client behind the same load balancer
    (without proxy headers they all share its address). What it bounds instead:

    - the log: an address over the limit is logged once per window, and its further
      failures are refused quietly (counted as "throttled"; the HTTP APIs answer
      429 rather than 403);
    - the CPU: a secret that failed as unknown is remembered by its 16-byte hash,
      never its plaintext, for the window (and forgotten at once if this process
      issues it), so sending it again is refused on the event loop with no thread
      hop and no database query, as is a secret of the wrong shape
      (``Credential.refusal``). Only a fresh well-formed wrong secret costs a
      thread hop, one lookup by prefix and at most one HMAC, as a valid one does.
      docs/benchmarks.md (the throttle section) gives the target and the figures.
    """

    MAX_SECRETS = 10_000  # secrets remembered as failed, oldest forgotten first

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}
        self._announced: dict[str, float] = {}
        self._bad: OrderedDict[bytes, float] = OrderedDict()

    def _recent(self, address: str, now: float) -> list[float]:
        window = settings.CANDLECAST_AUTH_WINDOW_SECONDS
        stamps = [t for t in self._failures.get(address, []) if now - t < window]
        if stamps:
            self._failures[address] = stamps
        else:
            self._failures.pop(address, None)
            if now - self._announced.get(address, now) >= window:
                del self._announced[address]
        return stamps

    def over(self, address: str) -> bool:
        """The address has failed the limit's number of times within the window."""
        with self._lock:
            return len(self._recent(address, time.monotonic())) >= (
                settings.CANDLECAST_AUTH_FAILURES_PER_WINDOW
            )

    def failed(self, address: str) -> bool:
        """Count a failure; True when the address is over the limit (say nothing
        more of it: it was logged once for this window)."""
        limit = settings.CANDLECAST_AUTH_FAILURES_PER_WINDOW
        window = settings.CANDLECAST_AUTH_WINDOW_SECONDS
        now = time.monotonic()
        with self._lock:
            stamps = self._recent(address, now)
            stamps.append(now)
            self._failures[address] = stamps[-limit:]  # all the count needs
            if len(stamps) <= limit:
                return False
            if now - self._announced.get(address, -window) >= window:
                self._announced[address] = now
                logger.warning(
                    "throttling %s: %d failed attempts within %d s; its further "
                    "failures are refused without a log line each until the window "
                    "passes (valid credentials are still accepted)",
                    address,
                    limit,
                    window,
                )
            return True

    @staticmethod
    def _fingerprint(secret: str) -> bytes:
        return hashlib.blake2b(secret.encode(), digest_size=16).digest()

    def known_bad(self, secret: str) -> bool:
        """The secret failed as unknown within the window."""
        key = self._fingerprint(secret)
        with self._lock:
            when = self._bad.get(key)
            if when is None:
                return False
            if time.monotonic() - when >= settings.CANDLECAST_AUTH_WINDOW_SECONDS:
                del self._bad[key]
                return False
            return True

    def remember_bad(self, secret: str) -> None:
        key = self._fingerprint(secret)
        with self._lock:
            self._bad[key] = time.monotonic()
            self._bad.move_to_end(key)
            while len(self._bad) > self.MAX_SECRETS:
                self._bad.popitem(last=False)

    def forget_bad(self, secret: str) -> None:
        """It is valid now (just issued): never refuse it as known bad."""
        with self._lock:
            self._bad.pop(self._fingerprint(secret), None)

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()
            self._announced.clear()
            self._bad.clear()


throttle = FailureThrottle()
