"""permessage-deflate on the hub: accepted without server context takeover, and
each message compressed once per hub process whatever the number of sockets."""

import zlib

import pytest
from autobahn.websocket.compress_deflate import (
    PerMessageDeflate,
    PerMessageDeflateOffer,
)

from controlplane.lib.wire import deflate
from controlplane.management.commands.runhub import (
    NoContextTakeoverAccept,
    ReasonedWebSocketProtocol,
)


class Factory:
    isServer = True
    maskServerFrames = False


def open_socket(negotiated: bool) -> ReasonedWebSocketProtocol:
    socket = ReasonedWebSocketProtocol()
    socket.factory = Factory()
    socket.state = socket.STATE_OPEN
    socket.send_state = socket.SEND_STATE_GROUND
    socket.logFrames = socket.logOctets = socket.maskServerFrames = False
    socket.client_addr = None
    socket.trackedTimings = None
    socket.autoFragmentSize = 0
    socket.maxMessagePayloadSize = 1 << 20
    socket.trafficStats = type("Stats", (), {})()
    for name in (
        "outgoingWebSocketMessages",
        "outgoingOctetsAppLevel",
        "outgoingOctetsWebSocketLevel",
        "outgoingWebSocketFrames",
        "outgoingOctetsWireLevel",
    ):
        setattr(socket.trafficStats, name, 0)
    socket._perMessageCompress = (
        PerMessageDeflate(True, True, False, 15, 15, 8) if negotiated else None
    )
    socket.sent = []
    socket.sendData = lambda data, sync=False, chopsize=None: socket.sent.append(data)
    return socket


def read_frame(raw: bytes) -> tuple[int, bytes]:
    """(first byte, payload) of one unmasked server frame."""
    length, start = raw[1] & 0x7F, 2
    if length == 126:
        length, start = int.from_bytes(raw[2:4]), 4
    elif length == 127:
        length, start = int.from_bytes(raw[2:10]), 10
    assert len(raw) == start + length
    return raw[0], raw[start:]


@pytest.fixture
def cache(monkeypatch):
    fresh = deflate.DeflateCache()
    monkeypatch.setattr(deflate, "shared", fresh)
    return fresh


def test_k_sockets_cost_one_compression(cache):
    message = '{"type":"analyzed_df","data":' + "[1.5, 2.25]," * 5000 + "0}"
    sockets = [open_socket(negotiated=True) for _ in range(10)]
    for socket in sockets:
        socket.serverSend(message)
    assert cache.compressions == 1
    frames = {socket.sent[0] for socket in sockets}
    assert len(frames) == 1  # the same bytes on every socket
    first, payload = read_frame(frames.pop())
    assert first == 0x80 | 0x40 | 1  # FIN, RSV1 (compressed), text
    assert len(payload) < len(message) / 10
    decoded = zlib.decompressobj(-15).decompress(payload + deflate.TAIL)
    assert decoded.decode() == message


@pytest.mark.parametrize("size", [10, 2000, 3000, 300_000])
def test_websockets_decodes_every_payload_message_after_message(size):
    """The payload ends in a final block (libdeflate's): websockets, the library
    FreqTrade's consumer uses, reads it on either side of its 2044-byte switch,
    message after message, within its size limit."""
    from websockets.extensions.permessage_deflate import PerMessageDeflate as Ws
    from websockets.frames import Frame, Opcode

    decoder = Ws(True, False, 15, 15)  # as a client, server_no_context_takeover
    rows = ",".join(f"[{n},{n * 1.25:.6f},{n % 7}]" for n in range(size // 20 + 1))
    for count in range(3):
        message = f'{{"n":{count},"rows":[{rows}]}}'.encode()
        payload = deflate.deflate(message)
        frame = decoder.decode(
            Frame(Opcode.TEXT, payload, rsv1=True), max_size=len(message)
        )
        assert frame.data == message


class ConnectionInflater:
    """One raw inflater for the whole connection, reset where a final block ends
    and fed on with what follows it: Chromium's WebSocketInflater."""

    def __init__(self) -> None:
        self.inflater = zlib.decompressobj(-15)

    def message(self, payload: bytes) -> bytes:
        out, data = b"", payload + deflate.TAIL
        while data:
            out += self.inflater.decompress(data)
            data = b""
            if self.inflater.eof:
                data = self.inflater.unused_data
                self.inflater = zlib.decompressobj(-15)
        return out


@pytest.mark.parametrize("size", [10, 3000, 300_000])
def test_a_browser_s_inflater_reads_message_after_message(size):
    """Chromium fails the socket ("Invalid frame header") at the message after a
    final block that lacks RFC 7692's 0x00 octet (7.2.3.4): the status page lost
    its socket a second after each connect."""
    inflater = ConnectionInflater()
    rows = ",".join(f"[{n},{n * 1.25:.6f},{n % 7}]" for n in range(size // 20 + 1))
    for count in range(4):
        message = f'{{"n":{count},"rows":[{rows}]}}'.encode()
        assert inflater.message(deflate.deflate(message)) == message
    small = deflate.deflate(b"x" * 100, window_bits=9)  # zlib's sync flush
    assert inflater.message(small) == b"x" * 100


@pytest.mark.parametrize("message", [b"Hello", b"Hello" * 10_000])
def test_the_payload_is_a_final_block_then_one_zero_octet(message):
    """RFC 7692 7.2.3.4's form, whatever block type libdeflate picks."""
    inflater = zlib.decompressobj(-15)
    assert inflater.decompress(deflate.deflate(message)) == message
    assert inflater.eof and inflater.unused_data == b"\x00"


def test_a_client_that_asks_for_a_small_window_gets_one():
    message = ("abcdefgh" * 9000 + "".join(map(str, range(20000)))).encode()
    payload = deflate.deflate(message, window_bits=9)
    decoded = zlib.decompressobj(-9).decompress(payload + deflate.TAIL)
    assert decoded == message


def test_a_socket_without_deflate_gets_the_plain_frame(cache):
    socket = open_socket(negotiated=False)
    socket.serverSend(b"\x01\x02native", binary=True)
    assert socket.sent and cache.compressions == 0
    first, payload = read_frame(b"".join(socket.sent))
    assert first == 0x80 | 2 and payload == b"\x01\x02native"


def test_the_cache_stays_within_its_budget():
    cache = deflate.DeflateCache(max_bytes=10_000)
    for n in range(20):
        cache.payload(str(n) * 1000)
    assert cache.held <= 10_000
    assert cache.payload("19" * 1000) and cache.compressions == 20  # still held


def test_it_accepts_deflate_saying_it_keeps_no_server_context():
    offer = PerMessageDeflateOffer(accept_no_context_takeover=True)
    accept = ReasonedWebSocketProtocol().perMessageCompressionAccept([offer])
    assert isinstance(accept, NoContextTakeoverAccept)
    assert set(accept.get_extension_string().split("; ")) == {
        "permessage-deflate",
        "server_no_context_takeover",
        "client_no_context_takeover",
    }
    pmce = PerMessageDeflate.create_from_offer_accept(True, accept)
    assert pmce.server_no_context_takeover
    assert ReasonedWebSocketProtocol().perMessageCompressionAccept([]) is None


@pytest.mark.parametrize("negotiated", [True, False])
def test_it_drops_a_send_to_a_socket_the_client_closed(negotiated, caplog):
    """A reply racing the client's close is dropped at DEBUG, not raised into
    Daphne's log as "Attempt to send on a closed protocol"."""
    socket = open_socket(negotiated)
    socket.state = socket.STATE_CLOSING
    caplog.set_level("DEBUG", "candlecast.hub")
    socket.serverSend("late reply")
    socket.state = socket.STATE_CLOSED
    socket.serverSend(b"later", binary=True)
    assert socket.sent == []
    assert [r.levelname for r in caplog.records] == ["DEBUG", "DEBUG"]
    assert "dropped a 10-byte send to a closing socket" in caplog.records[0].message
