"""The raw limit for bench_fanout: a bare ``websockets`` server replaying hub bytes.

Started by benchmarks/bench_fanout.py, never by hand. It loads what the driver
recorded from a hub connection (a pickle: the replies to a client's opening
requests, and each tick's broadcast), sends the opening replies to every client once
it has sent its opening requests, and broadcasts a tick's messages to every
connection on ``TICK <n>`` (stdin). No authentication, no snapshots, no channel
layer, no compression: what is left is the cost of moving the same bytes through
this machine's sockets to the same clients.

stdout: ``LISTENING <port>``, then ``SENT <n>`` after each tick's broadcast.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import pickle
import sys
from pathlib import Path
from typing import TypedDict

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed


class Recording(TypedDict):
    """A hub's side of one client's link, recorded by the driver."""

    subprotocol: str | None  # None: FreqTrade's feed, no subprotocol
    requests: int  # the client's opening requests, answered together
    opening: list[str | bytes]  # the hub's replies to them, in order
    ticks: list[list[str | bytes]]  # per tick, the broadcast a client received


def say(text: str) -> None:
    print(text, flush=True)


class RawFeed:
    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self.connections: set[ServerConnection] = set()

    async def serve_client(self, ws: ServerConnection) -> None:
        received = 0
        try:
            async for _ in ws:
                received += 1
                if received == self.recording["requests"]:
                    for reply in self.recording["opening"]:
                        await ws.send(reply)
                    self.connections.add(ws)  # ticks go to loaded clients only
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(ws)

    def tick(self, number: int) -> None:
        for message in self.recording["ticks"][number]:
            broadcast(self.connections, message)


async def main(args: argparse.Namespace) -> int:
    recording: Recording = pickle.loads(Path(args.recording).read_bytes())
    feed = RawFeed(recording)
    wanted = recording["subprotocol"]
    async with serve(
        feed.serve_client,
        "127.0.0.1",
        0,
        compression=None,
        max_size=None,
        ping_interval=None,
        subprotocols=[wanted] if wanted else None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        say(f"LISTENING {port}")
        while line := (await asyncio.to_thread(sys.stdin.readline)).strip():
            command, _, number = line.partition(" ")
            if command == "STOP":
                break
            if command == "TICK":
                feed.tick(int(number))
                say(f"SENT {number}")
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recording", required=True, help="the driver's pickle")
    return parser.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(main(parse_args())))
