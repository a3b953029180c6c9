"""Run the hub: Daphne serving the admin, the HTTP API, the feed and publish sockets.

Unlike `runserver`, the WebSocket size limits follow the project's message size
limit (Daphne's 1 MiB default also applies to outgoing frames and kills a socket
with 1011), the access log passes through the secret-redacting filter, a socket
closed by the application carries its close reason to the client, a socket's
sends wait while its connection's send buffer is full, and a client that offers
permessage-deflate gets each message compressed once per hub process.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from pprint import pformat

from autobahn.websocket import protocol as autobahn_protocol
from autobahn.websocket.compress_deflate import (
    PerMessageDeflate,
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
)
from daphne.endpoints import build_endpoint_description_strings
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.management.base import BaseCommand

from controlplane.lib.wire import deflate
from producers.snapshots import redact_url

logger = logging.getLogger("candlecast.hub")

# Daphne's send never waits: a burst of replies (100 pairs x 600 KB) to a consumer
# that reads slowly sat whole in the hub's memory, once per consumer (4.8 GB with 50
# consumers on a loaded machine), and the hub's pings queued behind it until the
# ping timeout dropped the socket, which then asked for everything again. A socket's
# send now waits while more than this is buffered for its connection.
SEND_BUFFER_HIGH_WATER = 1 << 20
DRAIN_POLL_SECONDS = 0.005
PING_INTERVAL, PING_TIMEOUT = 20, 30
# A socket that missed a pong gets a close frame behind what it has not read yet, and
# a FIN, so that a reader that was only stopped (SIGSTOP, a swapping host) reads why
# when it wakes. Torn down (RST) if it has not read it all this much later.
NO_PONG_GRACE_SECONDS = 30
CLOSE_TOO_SLOW = 4008  # producers.feed's


# Sockets whose handshake the application refused, until their disconnect.
_refused: OrderedDict[str, None] = OrderedDict()
REFUSED_KEPT = 10_000


def access_log(protocol: str, action: str, details: dict) -> None:
    """One line per request or socket state change; query strings never logged.

    Successful HTTP requests (mostly workers polling their config) go at DEBUG;
    failures at WARNING; socket connects and disconnects at INFO. A refused
    handshake (and the disconnect that follows it) goes at DEBUG: the socket logs
    why it refused, once per address and window when the address keeps failing
    (controlplane.lib.auth.FailureThrottle), which two access lines per attempt
    would defeat.
    """
    # Daphne's HTTP path is the whole URI: a FreqTrade-style ?token= would reach the
    # record, and only the console handler's filter would redact it.
    path = details.get("path", "").split("?", 1)[0]
    client = details.get("client", "?")
    if protocol == "http" and action == "complete":
        status = details["status"]
        level = logging.DEBUG if status < 400 else logging.WARNING
        logger.log(level, "HTTP %s %s %s [%s]", details["method"], path, status, client)
    elif protocol == "websocket" and action in ("connected", "disconnected"):
        refused = action == "disconnected" and _refused.pop(client, 0) is None
        level = logging.DEBUG if refused else logging.INFO
        logger.log(level, "WebSocket %s %s [%s]", action, path, client)
    elif protocol == "websocket" and action == "rejected":
        _refused[client] = None
        while len(_refused) > REFUSED_KEPT:
            _refused.popitem(last=False)
        logger.debug("WebSocket rejected %s [%s]", path, client)


class NoContextTakeoverAccept(PerMessageDeflateOfferAccept):
    """Accept a deflate offer and say that the hub compresses each message on its
    own (RFC 7692 lets a server add server_no_context_takeover unasked)."""

    def __init__(self, offer: PerMessageDeflateOffer) -> None:
        super().__init__(
            offer,
            request_no_context_takeover=offer.accept_no_context_takeover,
            no_context_takeover=True,
        )

    def get_extension_string(self) -> str:
        text = super().get_extension_string()
        if not self.offer.request_no_context_takeover:
            text += "; server_no_context_takeover"
        return text


def accept_deflate(offers: list) -> NoContextTakeoverAccept | None:
    """The first permessage-deflate offer, accepted; None: no compression."""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return NoContextTakeoverAccept(offer)
    return None


class ReasonedWebSocketProtocol(WebSocketProtocol):
    """Daphne 4.2 drops the ``reason`` of an application's websocket.close; a feed
    socket closed for a revoked or expired token must say so to the client.

    Daphne (autobahn) negotiates no compression by default, and would compress
    every message once per socket. A client's deflate offer is accepted without
    server context takeover, so a message's compressed payload does not depend on
    the socket: it is built once per hub process (wire.deflate.shared) and written
    as a ready frame (RSV1 set) to every socket that negotiated deflate.
    """

    # A plain function: autobahn logs its options' reprs before Daphne has set the
    # fields a bound method's repr (the protocol's) reads.
    perMessageCompressionAccept = staticmethod(accept_deflate)  # noqa: N815

    def serverSend(self, content: str | bytes, binary: bool = False) -> None:  # noqa: N802
        if self.state not in (self.STATE_OPEN, self.STATE_CONNECTING):
            # The client closed while the application was answering it (a reply
            # racing the close): autobahn would raise "Attempt to send on a closed
            # protocol" into Daphne's log as a traceback, and nobody is left to
            # read the message. (CONNECTING: Daphne accepts, then sends.)
            logger.debug(
                "dropped a %d-byte send to a closing socket [%s]",
                len(content),
                getattr(self, "client_addr", None),
            )
            return
        pmce = self._perMessageCompress
        if (
            self.state == self.STATE_OPEN
            and isinstance(pmce, PerMessageDeflate)
            and pmce.server_no_context_takeover
        ):
            payload = deflate.shared.payload(content, pmce.server_max_window_bits)
            if not 0 < self.maxMessagePayloadSize < len(payload):
                self.trafficStats.outgoingWebSocketMessages += 1
                self.sendFrame(opcode=2 if binary else 1, payload=payload, rsv=4)
                return
        super().serverSend(content, binary)  # raises on an oversized payload

    no_pong = False

    def onAutoPingTimeout(self) -> None:  # noqa: N802
        # autobahn resets the connection: a stopped reader would lose what it has
        # not read and never learn why. (Each ping has its own timer: said once.)
        self.autoPingTimeoutCall = None
        if self.no_pong or self.state != self.STATE_OPEN:
            return
        self.no_pong = True
        client = ":".join(map(str, self.client_addr or ("?",)))
        unread = buffered_bytes(self.transport) / 2**20
        logger.warning(
            "WebSocket %s [%s]: no pong within %d s of a ping (%.1f MiB unsent): "
            "closing it as too slow (code %d)",
            self.request.path,
            client,
            PING_TIMEOUT,
            unread,
            CLOSE_TOO_SLOW,
        )
        reason = (
            f"too slow: no pong within {PING_TIMEOUT} s ({unread:.1f} MiB unread); "
            "reconnect and request history"
        )
        self.sendClose(code=CLOSE_TOO_SLOW, reason=reason)
        self.transport.loseConnection()  # after the buffer: the close frame, a FIN
        # Daphne runs Twisted on the asyncio loop.
        asyncio.get_event_loop().call_later(NO_PONG_GRACE_SECONDS, self._tear_down)

    def onCloseHandshakeTimeout(self) -> None:  # noqa: N802
        if self.no_pong:  # the peer reads nothing now: _tear_down ends it
            self.closeHandshakeTimeoutCall = None
            return
        super().onCloseHandshakeTimeout()

    def _tear_down(self) -> None:
        if self.state != self.STATE_CLOSED:
            self.dropConnection(abort=True)

    def onClose(self, wasClean, code, reason) -> None:  # noqa: N802, N803
        # The application hears why: FeedSocket counts the socket as closed slow.
        super().onClose(wasClean, CLOSE_TOO_SLOW if self.no_pong else code, reason)

    def handle_reply(self, message: dict) -> None:
        if message.get("type") == "websocket.close" and (
            self.state != self.STATE_CONNECTING  # else: refuse with HTTP 403
        ):
            reason = message.get("reason") or None  # truncated to 123 bytes
            self.sendClose(code=message.get("code") or 1000, reason=reason)
            return
        super().handle_reply(message)


def buffered_bytes(transport: object) -> int:
    """Bytes written to a Twisted TCP transport and not yet taken by the kernel.

    Reads the buffer fields of Twisted's FileDescriptor (private, checked with
    Twisted 26.10 by tests/test_runhub.py); any other
    transport (TLS terminated in Daphne) reads as empty, i.e. no flow control.
    """
    data = getattr(transport, "dataBuffer", b"")
    pending = getattr(transport, "_tempDataLen", 0)
    return len(data) - getattr(transport, "offset", 0) + pending


class FlowControlledServer(Server):
    """Daphne whose websocket.send waits until the connection's buffer drains."""

    async def handle_reply(self, protocol, message: dict) -> None:
        await super().handle_reply(protocol, message)
        if message.get("type") != "websocket.send":
            return
        while buffered_bytes(protocol.transport) > SEND_BUFFER_HIGH_WATER:
            state = self.connections.get(protocol)
            if state is None or "disconnected" in state:
                return
            await asyncio.sleep(DRAIN_POLL_SECONDS)


class LazyFormat:
    """pformat() of a value, computed only if a log line is written with it."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return pformat(self.value)


def quiet_connection_dump() -> None:
    """Autobahn pretty-prints its ~30 options for every new connection, for a debug
    line nobody reads (0.7 ms of CPU per connection, half of what a refused
    handshake costs the hub); the line is formatted only when logged."""
    setattr(autobahn_protocol, "pformat", LazyFormat)  # noqa: B010 (typed as a function)


def proxy_headers() -> dict[str, str]:
    """Daphne's options to trust a reverse proxy (CANDLECAST_PROXY_HEADERS)."""
    if not settings.CANDLECAST_PROXY_HEADERS:
        return {}
    return {
        "proxy_forwarded_address_header": "X-Forwarded-For",
        "proxy_forwarded_port_header": "X-Forwarded-Port",
        "proxy_forwarded_proto_header": "X-Forwarded-Proto",
    }


class Command(BaseCommand):
    help = "Run the candlecast hub (Daphne): admin, API, feed and publish sockets."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument(
            "--port", type=int, default=int(os.environ.get("PORT", "8000"))
        )

    def handle(self, *args, host: str, port: int, **options):
        from controlplane.asgi import application

        WebSocketFactory.protocol = ReasonedWebSocketProtocol
        quiet_connection_dump()
        limit = settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB << 20
        logger.info(
            "hub listening on http://%s:%s (message size limit %d MiB, %s)",
            host,
            port,
            settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB,
            "Redis " + redact_url(settings.REDIS_URL)
            if settings.REDIS_URL
            else "in-memory channel layer",
        )
        FlowControlledServer(
            application=ASGIStaticFilesHandler(application),
            endpoints=build_endpoint_description_strings(host=host, port=port),
            action_logger=access_log,
            websocket_max_message_size=limit,
            websocket_max_frame_size=limit,
            websocket_handshake_timeout=10,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            application_close_timeout=5,
            **proxy_headers(),
        ).run()
        logger.info("hub stopped")
