"""The producer worker's link to the hub, without a hub."""

import asyncio

from producers.worker import WorkerConfig, hub_connections
from tests.processes import free_port


async def test_it_stops_waiting_for_an_unreachable_hub_when_told_to_stop():
    """A SIGTERM while the hub is away ends the worker at once, not at the hub's return."""
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
