"""The hub's Daphne server: sends wait while a connection's send buffer is full."""

import asyncio

from daphne.server import Server
from twisted.internet.abstract import FileDescriptor

from controlplane.management.commands.runhub import (
    SEND_BUFFER_HIGH_WATER,
    FlowControlledServer,
    buffered_bytes,
)


class Transport(FileDescriptor):
    """Twisted's own buffering, without a socket underneath."""

    connected = True

    def startWriting(self):  # noqa: N802 (Twisted's name)
        pass

    def drain(self) -> None:
        self._tempDataBuffer, self._tempDataLen = [], 0
        self.dataBuffer, self.offset = b"", 0


class Protocol:
    def __init__(self) -> None:
        self.transport = Transport()

    def handle_reply(self, message: dict) -> None:
        self.transport.write(message.get("bytes") or message["text"].encode())


def server(protocol: Protocol) -> FlowControlledServer:
    hub = FlowControlledServer(application=None, endpoints=["tcp:port=0"])
    hub.connections = {protocol: {"connected": 0.0}}
    return hub


def test_it_reads_how_much_twisted_still_holds_for_a_connection():
    """Twisted's private buffer fields still mean what the hub reads from them."""
    transport = Transport()
    assert buffered_bytes(transport) == 0
    transport.write(b"x" * 1000)
    transport.write(b"y" * 24)
    assert buffered_bytes(transport) == 1024
    assert buffered_bytes(object()) == 0  # not Twisted's TCP: no flow control


async def test_it_holds_a_send_until_the_connection_drains():
    """A send that overfills the buffer returns only once the kernel took it."""
    protocol = Protocol()
    hub = server(protocol)
    big = {"type": "websocket.send", "bytes": b"z" * (SEND_BUFFER_HIGH_WATER + 1)}
    sending = asyncio.create_task(hub.handle_reply(protocol, big))
    await asyncio.sleep(0.05)
    assert not sending.done()
    protocol.transport.drain()
    await asyncio.wait_for(sending, 1)


async def test_it_stops_waiting_for_a_connection_that_went_away():
    """A consumer that never reads again does not hold its socket's task forever."""
    protocol = Protocol()
    hub = server(protocol)
    big = {"type": "websocket.send", "bytes": b"z" * (SEND_BUFFER_HIGH_WATER + 1)}
    sending = asyncio.create_task(hub.handle_reply(protocol, big))
    await asyncio.sleep(0.05)
    hub.connections[protocol]["disconnected"] = 1.0
    await asyncio.wait_for(sending, 1)


async def test_it_sends_small_messages_without_waiting():
    """Below the high-water mark a send returns at once, as Daphne's always did."""
    protocol = Protocol()
    hub = server(protocol)
    await asyncio.wait_for(
        hub.handle_reply(protocol, {"type": "websocket.send", "text": "hello"}), 1
    )
    assert isinstance(hub, Server)
