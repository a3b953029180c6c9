"""The producer worker's link to the hub, without a hub."""

import asyncio

from websockets.asyncio.server import serve

from producers.worker import WorkerConfig, hub_connections
from tests.processes import free_port


async def test_it_stops_waiting_for_an_unreachable_hub_when_told_to_stop():
    """A SIGTERM while the hub is away ends the worker at once."""
    config = WorkerConfig("demo", f"http://127.0.0.1:{free_port()}", "ccp_x")
    stop = asyncio.Event()
    connections = []

    async def follow():
        async for ws in hub_connections(config, stop):
            connections.append(ws)

    following = asyncio.create_task(follow())
    await asyncio.sleep(1.5)  # websockets is retrying with its backoff by now
    assert not following.done()
    stop.set()
    await asyncio.wait_for(following, 2)
    assert connections == []


async def test_it_backs_off_from_a_hub_that_keeps_dropping_it():
    """A hub that accepts and at once drops the socket is not hammered every moment."""
    accepted = 0

    async def drop(ws):
        nonlocal accepted
        accepted += 1
        await ws.close(1011, "the hub's Redis is down")

    async with serve(drop, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = WorkerConfig("demo", f"http://127.0.0.1:{port}", "ccp_x")
        stop = asyncio.Event()

        async def follow():
            async for ws in hub_connections(config, stop):
                await ws.wait_closed()

        following = asyncio.create_task(follow())
        await asyncio.sleep(3)
        stop.set()
        await asyncio.wait_for(following, 2)
    # 0.5-1 s, then 1-2 s, then 2-4 s between connections: 4 at most in 3 s.
    assert 2 <= accepted <= 4
