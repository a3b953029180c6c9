"""One followed producer: a WebSocket link kept alive, feeding its FrameStore.

Speaks the consumer side of FreqTrade's feed protocol (shared/PROTOCOL-freqtrade.md
§5-§9) to candlecast hubs and real FreqTrade bots alike, without FreqTrade's faults
(§14): a backoff with jitter after every disconnect, gap-fill requests that survive
reconnects, an over-size frame handled without a reconnect loop, big frames decoded off
the event loop so other producers keep flowing. This module keeps the link; requests.py
says what to ask for, dispatch.py what to do with each message.

On every connect it also offers the ``candlecast.v1`` subprotocol (wire/native.py): a
candlecast hub selects it and sends one binary message per tick with every pair's new
rows, exact to the bit; a FreqTrade bot or an older hub selects nothing, and the
link speaks FreqTrade's protocol, unchanged. Either way each frame reaches the
FrameStore through the same steps (gap detection, requests, on_stored).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.frames import CloseCode
from websockets.typing import Subprotocol

from controlplane.lib import wire
from controlplane.lib.backoff import Backoff
from controlplane.lib.contracts import (
    ConsumerSettings,
    Follow,
    FollowStatus,
    PairStatus,
)
from controlplane.lib.feedclient.dispatch import Dispatch
from controlplane.lib.feedclient.framestore import (
    FrameStore,
    Stored,
)
from controlplane.lib.feedclient.requests import Requests
from controlplane.lib.hubclient import wait_or_stop
from controlplane.lib.wire import native

logger = logging.getLogger(__name__)

# A link that stayed up this long was healthy: the next backoff starts again at
# sleep_time. A link that keeps dying young backs off further each time.
STABLE_SECONDS = 60.0
BACKOFF_CAP_SECONDS = 300.0
MIN_SLEEP = 0.01  # never reconnect instantly, even with sleep_time 0
OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0


class LinkDead(Exception):
    """The producer stopped answering pings."""


def link_backoff(sleep_time: float) -> Backoff:
    """A link's reconnect delays: from ``sleep_time`` to ten times it, at most 5 min."""
    return Backoff(*_bounds(sleep_time))


def _bounds(sleep_time: float) -> tuple[float, float]:
    initial = max(sleep_time, MIN_SLEEP)
    return initial, min(10 * initial, BACKOFF_CAP_SECONDS)


class ProducerClient:
    """Follows one producer until :meth:`close`: connect, request, store, repeat.

    ``on_stored(follow_name, stored)`` is called on the event loop for every frame
    stored; it must not block. ``native=False`` never offers ``candlecast.v1``;
    ``compression="deflate"`` offers permessage-deflate (benchmarks compare it);
    :attr:`protocol` names what the live link speaks (``"candlecast.v1"`` or
    ``"freqtrade"``; None while not connected).
    """

    def __init__(
        self,
        follow: Follow,
        settings: ConsumerSettings,
        store: FrameStore,
        on_stored: Callable[[str, Stored], None] | None = None,
        *,
        native: bool = True,
        compression: str | None = None,
    ) -> None:
        self.follow, self.settings, self.store = follow, settings, store
        self.on_stored = on_stored
        self.native = native
        self.compression = compression
        self.protocol: str | None = None
        self._said_protocol: str | None = None
        self.backoff = link_backoff(settings.sleep_time)
        self.connected = False
        self.reconnects = 0
        self.last_error: str | None = None
        self.requests = Requests(follow.name, settings.initial_candle_limit)
        self.dispatch = Dispatch(
            follow.name, store, self.requests, on_stored, self._error
        )
        self._ws: ClientConnection | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._relink = False
        self._attempts = 0

    @property
    def name(self) -> str:
        return self.follow.name

    @property
    def dropped(self) -> dict[str, int]:
        """Messages dropped, by reason."""
        return self.dispatch.dropped

    @property
    def row_cap(self) -> int | None:
        """After a frame over message_size_limit: request at most this many rows."""
        return self.requests.row_cap

    ### Lifecycle

    async def run(self) -> None:
        """Keep a link to the producer until :meth:`close`; never raises on its own."""
        while not self._closing:
            delay = await self._attempt()
            if self._closing:
                break
            if self._relink:  # settings changed: reconnect now, with the new ones
                delay = 0.0
                self.backoff.reset()
            else:
                logger.info("%s: reconnecting in %.1f s", self.name, delay)
            await wait_or_stop(self._wake, delay)

    async def close(self, code: int = CloseCode.GOING_AWAY) -> None:
        """Stop following; the live link, if any, is closed with ``code``."""
        self._closing = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            await ws.close(code, "consumer worker stopping")

    async def update(self, follow: Follow, settings: ConsumerSettings) -> None:
        """Apply new settings; reconnect only when the link depends on them.

        A new token alone keeps the live link (the old token stays valid through its
        grace period) and is used on the next connect; nothing stored is dropped.
        """
        relink = (
            follow.endpoint != self.follow.endpoint
            or settings.link != self.settings.link
        )
        new_token = follow.ws_token != self.follow.ws_token
        self.follow, self.settings = follow, settings
        self.requests.initial_limit = settings.initial_candle_limit
        self.store.remove_entry_exit_signals = settings.remove_entry_exit_signals
        self.backoff.configure(*_bounds(settings.sleep_time))
        if relink:
            self.requests.row_cap, self._relink = None, True
            self._wake.set()
            if self._ws is not None:
                await self._ws.close(
                    CloseCode.NORMAL_CLOSURE, "consumer settings changed"
                )
        elif new_token and self._ws is None:
            self._wake.set()  # maybe waiting after a refused token: try the new one now

    async def _attempt(self) -> float:
        """Connect once and follow until the link ends; returns the delay to wait."""
        self._wake.clear()
        self._relink = False  # this attempt uses the newest settings
        if self._attempts:
            self.reconnects += 1
        self._attempts += 1
        offer = [Subprotocol(name) for name in wire.offered()] if self.native else None
        self.dispatch.max_bytes = self.settings.message_size_limit << 20
        try:
            ws = await connect(
                self.follow.url(),
                additional_headers=self.follow.headers(),
                subprotocols=offer,
                # No deflate by default: a server with context takeover (FreqTrade's)
                # compresses each broadcast once per consumer (53x slower at 100
                # consumers). "deflate" offers it as FreqTrade's consumer does.
                compression=self.compression,
                max_size=self.settings.message_size_limit << 20,
                ping_interval=None,  # our own liveness check: see _ping
                open_timeout=OPEN_TIMEOUT,
                close_timeout=CLOSE_TIMEOUT,
            )
        except InvalidStatus as exc:
            return self._refused(exc)
        except InvalidURI:
            return self._retry(
                f"{self.follow.display_url} is not a valid URL: "
                "fix the producer's host and port in the admin",
                cap=True,
            )
        except (OSError, TimeoutError, ConnectionError) as exc:
            return self._retry(
                f"cannot connect to {self.follow.display_url} ({_describe(exc)})"
            )
        except Exception as exc:  # InvalidHandshake and the like: retry slowly
            return self._retry(
                f"handshake with {self.follow.display_url} failed ({_describe(exc)})",
                cap=True,
            )
        return await self._session(ws)

    async def _session(self, ws: ClientConnection) -> float:
        self._ws, self.connected = ws, True
        self.protocol = wire.by_subprotocol(ws.subprotocol).name
        started = time.monotonic()
        logger.info("%s: connected to %s", self.name, self.follow.display_url)
        self._say_protocol()
        try:
            if self._closing or self._relink:
                return 0.0
            await self._follow(ws)
        except ConnectionClosed as exc:
            return self._closed(exc, time.monotonic() - started)
        except (LinkDead, OSError, TimeoutError) as exc:
            ws.transport.abort()  # a close handshake would wait on a dead peer
            why = f"lost the connection: {str(exc) or _describe(exc)}"
            return self._retry(why, time.monotonic() - started)
        except Exception as exc:  # a bug must not end this producer's task for good
            logger.exception("%s: unexpected error", self.name)
            why = f"unexpected error: {_describe(exc)}"
            return self._retry(why, time.monotonic() - started)
        finally:
            self._ws, self.connected, self.protocol = None, False, None
            await ws.close()
        return 0.0  # not reached: _follow only ends by raising

    def _say_protocol(self) -> None:
        """Log which protocol the link speaks: once, and again only if it changes."""
        if self.protocol == self._said_protocol:
            return
        self._said_protocol = self.protocol
        if self.protocol in (native.SUBPROTOCOL, native.SUBPROTOCOL_ZSTD):
            logger.info("%s: speaking %s (native frames)", self.name, self.protocol)
        elif self.native:
            logger.info(
                "%s: the producer does not speak %s; speaking FreqTrade's protocol",
                self.name,
                native.SUBPROTOCOL,
            )
        else:
            logger.info("%s: speaking FreqTrade's protocol", self.name)

    ### Why a link ended, and how long to wait

    def _refused(self, exc: InvalidStatus) -> float:
        status = exc.response.status_code
        detail = _body_detail(exc.response.body)
        if status in (401, 403):
            self._error(
                f"the producer refused our token: HTTP {status}{detail}; check "
                "the token in the admin (a revoked or expired token is "
                "refused)",
                error=True,
            )
            return self.backoff.at_cap()
        if status == 404:
            return self._retry(
                f"{self.follow.display_url} answered 404: is it a "
                "FreqTrade API server or a candlecast hub?",
                cap=True,
            )
        if status >= 500:
            # Not a refusal: the server failed, e.g. a hub whose Redis or database
            # is down (it answers 500 and says why in its own log). Retry as usual.
            return self._retry(
                f"{self.follow.display_url} failed to open the connection: HTTP "
                f"{status}{detail}, a server error (its own log says why, e.g. its "
                "Redis or database is down)"
            )
        return self._retry(
            f"the producer refused the connection: HTTP {status}{detail}"
        )

    def _closed(self, exc: ConnectionClosed, lived: float) -> float:
        if self._closing or self._relink:
            return 0.0
        if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
            return self._too_big()
        close = exc.rcvd or exc.sent
        if close is None:
            why = "lost the connection: it dropped without a close frame"
        else:
            reason = f": {close.reason}" if close.reason else ""
            why = f"the producer closed the connection (code {close.code}{reason})"
        return self._retry(why, lived)

    def _too_big(self) -> float:
        # FreqTrade reconnects and asks for the same frame forever (§14.2). We wait at
        # the cap and ask for half as many rows per pair each time instead.
        limit = self.settings.message_size_limit
        cap = self.requests.halve()
        self._error(
            f"a frame was larger than message_size_limit ({limit} MiB); raise "
            "message_size_limit in the consumer's settings in the admin (up "
            "to 20 MiB), or have the producer send fewer columns; meanwhile "
            f"requesting at most {cap} rows per pair",
            error=True,
        )
        return self.backoff.at_cap()

    def _retry(self, why: str, lived: float = 0.0, cap: bool = False) -> float:
        """Log why; the delay before the next attempt (longer each time, unless the
        link that ended had been up for STABLE_SECONDS)."""
        self._error(why)
        if cap:
            return self.backoff.at_cap()
        if lived >= STABLE_SECONDS:
            self.backoff.reset()
        return self.backoff.next()

    def _error(self, text: str, error: bool = False) -> None:
        self.last_error = text
        logger.log(
            logging.ERROR if error else logging.WARNING, "%s: %s", self.name, text
        )

    ### The protocol

    async def _follow(self, ws: ClientConnection) -> None:
        self.requests.new_link()
        self.dispatch.new_link()
        for request in self.requests.opening():
            await ws.send(request)
        for missing in self.store.outstanding():  # requests the last link lost
            self.requests.queue(missing)
        await self.requests.flush(ws)
        while True:
            try:
                text = await asyncio.wait_for(ws.recv(), self.settings.wait_timeout)
            except TimeoutError:
                await self._ping(ws)
                continue
            await self.handle(text)
            await self.requests.flush(ws)

    def opening_requests(self) -> list[str]:
        return self.requests.opening()

    async def handle(self, text: str | bytes) -> None:
        """Act on one message from the producer (see dispatch.py)."""
        await self.dispatch.handle(text, self.protocol)

    async def _ping(self, ws: ClientConnection) -> None:
        # A FreqTrade producer never pings (§2): silence may be a dead link.
        pong = await ws.ping()
        try:
            latency = await asyncio.wait_for(pong, self.settings.ping_timeout)
        except TimeoutError:
            raise LinkDead(
                f"no pong within {self.settings.ping_timeout:g} s after "
                f"{self.settings.wait_timeout:g} s without a message"
            ) from None
        logger.debug("%s: still alive, latency %.0f ms", self.name, latency * 1000)

    ### Status

    def status(self) -> FollowStatus:
        pairs: dict[str, PairStatus] = {}
        keys = self.store.keys()
        shared = {k[0] for k in keys if sum(1 for o in keys if o[0] == k[0]) > 1}
        for key in keys:
            newest = self.store.newest(key)
            if newest is None:
                continue
            label = " ".join(key) if key[0] in shared else key[0]
            last, rows = newest
            pairs[label] = {"last_candle": last.isoformat(), "rows": rows}
        return {
            "connected": self.connected,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "pairs": pairs,
        }


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _body_detail(body: bytes | None) -> str:
    """The error text a refusing server sent, if any (our hub sends JSON)."""
    if not body:
        return ""
    try:
        text = str(orjson.loads(body).get("error") or "")
    except (orjson.JSONDecodeError, AttributeError):
        text = body.decode(errors="replace")
    return f" ({text.strip()[:200]})" if text.strip() else ""
