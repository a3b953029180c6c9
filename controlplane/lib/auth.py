"""Shared authentication helpers for the hub's token routes.

One place reads a credential from a WebSocket or HTTP request, checks a sent Origin
and throttles addresses that keep failing, so the feed, the publish socket and the
HTTP API refuse the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import parse_qs, urlparse

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


class FailureThrottle:
    """Counts failed handshakes per address in a sliding window.

    An address over the limit is refused before any token check, and that is logged
    once per address and window rather than once per attempt.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}
        self._announced: dict[str, float] = {}

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

    def blocked(self, address: str) -> bool:
        now = time.monotonic()
        with self._lock:
            over = len(self._recent(address, now)) >= (
                settings.CANDLECAST_AUTH_FAILURES_PER_WINDOW
            )
            window = settings.CANDLECAST_AUTH_WINDOW_SECONDS
            if over and now - self._announced.get(address, -window) >= window:
                self._announced[address] = now
                logger.warning(
                    "throttling %s: %d failed handshakes within %d s; refusing it "
                    "without checking until the window passes",
                    address,
                    settings.CANDLECAST_AUTH_FAILURES_PER_WINDOW,
                    window,
                )
            return over

    def failed(self, address: str) -> None:
        with self._lock:
            self._failures.setdefault(address, []).append(time.monotonic())

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()
            self._announced.clear()


throttle = FailureThrottle()
