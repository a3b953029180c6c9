"""A named producer worker in its producer's pool, against a fake hub on port 0: it
publishes nothing before its first assign, then only its share; an assign that moves
pairs makes it forget the lost ones and publish the gained ones' history before
their next candle."""

from __future__ import annotations

import asyncio
import contextlib

import msgpack
import orjson
import pytest
from websockets.asyncio.server import serve

from controlplane.lib.contracts import ProducerDefinition
from controlplane.lib.wire.publish import assign_message
from producers import worker

PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
TIMEOUT = 10


def definition() -> ProducerDefinition:
    return ProducerDefinition(
        name="pool",
        timeframe="5m",
        candle_type="spot",
        pairs=PAIRS,
        strategy="producers.strategies.sample.SampleStrategy",
        source="synthetic",
        source_options={"seed": 7, "seconds_per_candle": 0.4},
        history=50,
    )


class NoReports:
    """The StatusReporter's place: the fake hub serves no HTTP."""

    def report(self, analysis) -> None:
        pass


class FakeHub:
    """Acks every publish message and keeps (pair, full) per frame, in order."""

    def __init__(self) -> None:
        self.names: list[str | None] = []
        self.messages: list[dict] = []
        self.arrived = asyncio.Event()
        self.socket = None

    async def handler(self, ws) -> None:
        self.names.append(ws.request.headers.get("X-Candlecast-Worker"))
        self.socket = ws
        async for raw in ws:
            message = msgpack.unpackb(raw)
            self.messages.append(message)
            self.arrived.set()
            await ws.send(orjson.dumps({"type": "ack", "seq": message["seq"]}))

    def frames(self, since: int = 0) -> list[tuple[str, bool]]:
        return [
            (frame["key"][0], frame["full"])
            for message in self.messages[since:]
            for frame in message["data"]["frames"]
        ]

    async def until(self, predicate, what: str) -> None:
        async def wait() -> None:
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()

        try:
            await asyncio.wait_for(wait(), TIMEOUT)
        except TimeoutError:
            pytest.fail(f"{what}: not within {TIMEOUT} s; frames {self.frames()}")


@contextlib.asynccontextmanager
async def serving(hub: FakeHub, analysis: worker.Analysis, worker_name=None):
    """The worker's serve loop on ``analysis`` against ``hub``, until the block ends."""
    stop = asyncio.Event()
    async with serve(hub.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = worker.WorkerConfig(
            name="pool",
            hub_url=f"http://127.0.0.1:{port}",
            key="ccp_test",
            worker_name=worker_name,
        )
        running = worker.Running(analysis)

        async def run() -> None:
            async for ws in worker.hub_connections(config, stop):
                await worker.serve(ws, config, running, stop, NoReports())
                break

        task = asyncio.create_task(run())
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, TIMEOUT)
            analysis.close()


async def test_it_publishes_its_share_and_takes_moved_pairs_history_first():
    hub = FakeHub()
    analysis = worker.Analysis(definition())
    analysis.assigned = []  # as sync_definition starts a pool worker
    async with serving(hub, analysis, worker_name="worker-a"):
        while hub.socket is None:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # two candles close: still nothing published
        assert hub.names == ["worker-a"] and hub.messages == []

        await hub.socket.send(assign_message(["BTC/USDT", "ETH/USDT"]))
        await hub.until(lambda: len(hub.frames()) >= 4, "history and a tick")
        assert hub.frames()[:2] == [("BTC/USDT", True), ("ETH/USDT", True)]
        assert hub.messages[0]["data"]["whitelist"] == list(PAIRS)
        assert {pair for pair, _ in hub.frames()} == {"BTC/USDT", "ETH/USDT"}

        moved = len(hub.messages)
        await hub.socket.send(assign_message(["ETH/USDT", "SOL/USDT"]))
        await hub.until(
            lambda: ("SOL/USDT", False) in hub.frames(moved), "SOL's first tick"
        )
        after = hub.frames(moved)
        # A tick already under way may still carry BTC; none after SOL's history.
        sol = after.index(("SOL/USDT", True))
        assert ("SOL/USDT", False) not in after[:sol]
        assert "BTC/USDT" not in {pair for pair, _ in after[sol:]}
        assert ("ETH/USDT", True) not in after  # kept: no history again
        assert set(analysis.analysed) == {"ETH/USDT", "SOL/USDT"}
        assert analysis.pairs == ["ETH/USDT", "SOL/USDT"]


async def test_an_unnamed_worker_sends_no_name_and_publishes_every_pair():
    hub = FakeHub()
    analysis = worker.Analysis(definition())
    await analysis.load_pairs(analysis.pairs)
    async with serving(hub, analysis):
        await hub.until(lambda: len(hub.frames()) >= 3, "the history")
        assert hub.names == [None]
        assert hub.frames()[:3] == [(pair, True) for pair in PAIRS]


async def test_it_stops_on_a_hub_message_it_cannot_read():
    """The reader task fails the connection, in words, instead of hanging."""
    hub = FakeHub()

    async def garbage(ws) -> None:
        await ws.send('{"type":"assign","data":{"pairs":"BTC/USDT"}}')
        await asyncio.sleep(TIMEOUT)

    async with serve(garbage, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = worker.WorkerConfig(
            name="pool",
            hub_url=f"http://127.0.0.1:{port}",
            key="ccp_test",
            worker_name="worker-a",
        )
        analysis = worker.Analysis(definition())
        analysis.assigned = []
        stop = asyncio.Event()
        try:
            async for ws in worker.hub_connections(config, stop):
                with pytest.raises(ConnectionError, match="expected an ack"):
                    await asyncio.wait_for(
                        worker.serve(
                            ws, config, worker.Running(analysis), stop, NoReports()
                        ),
                        TIMEOUT,
                    )
                break
        finally:
            stop.set()
            analysis.close()
    assert hub.messages == []


def test_it_stops_when_a_namesake_replaces_it():
    """Two live workers of one name would take it from each other for good: the
    one the hub closed with 4409 stops, saying why."""
    from websockets.exceptions import ConnectionClosedError
    from websockets.frames import Close

    from controlplane.lib.hubclient import FatalError

    reason = "producer worker worker-a is replaced: it connected again from 10.0.0.2"
    closed = ConnectionClosedError(Close(4409, reason), None)
    with pytest.raises(FatalError) as ended:
        worker.replaced_by_namesake(closed)
    assert str(ended.value) == (
        f"{reason}. Another producer worker runs with this worker's name: give each "
        "worker of the pool its own --worker-name"
    )
    lost = ConnectionClosedError(Close(1011, "server error"), None)
    worker.replaced_by_namesake(lost)  # any other close: reconnect as before
