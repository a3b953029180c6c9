"""A TCP relay that holds every byte for a fixed time: bench_network's link latency.

Started by benchmarks/network_link.py inside the benchmark's network namespace,
never by hand. This kernel has no netem qdisc (CONFIG_NET_SCH_NETEM is not set), so
tbf limits the veth's rate and this relay adds the delay: consumers connect to it on
the namespace's loopback, it connects to the server across the veth and forwards
each chunk ``--delay-ms / 2`` later in either direction (one round trip = the
delay). At most ``--window`` bytes wait per direction and connection, as a TCP
window would allow; beyond that it stops reading, so the sender feels the link.

stdout: ``LISTENING <port>`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys


async def forward(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: float,
    window: int,
) -> None:
    """Copy reader to writer, each chunk ``delay`` seconds after it was read."""
    loop = asyncio.get_running_loop()
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    room, ready = asyncio.Event(), asyncio.Event()
    room.set()
    held = 0
    ended = False

    async def read() -> None:
        nonlocal held, ended
        while data := await reader.read(1 << 16):
            queue.append((loop.time() + delay, data))
            held += len(data)
            ready.set()
            if held > window:
                room.clear()
                await room.wait()
        ended = True
        ready.set()

    reading = asyncio.create_task(read())
    try:
        while True:
            await ready.wait()
            ready.clear()
            while queue:
                due, data = queue.popleft()
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()
                held -= len(data)
                if held <= window:
                    room.set()
            if ended and not queue:
                break
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        reading.cancel()


async def relay(args: argparse.Namespace, reader, writer) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection(args.host, args.port)
    except OSError as exc:
        print(f"cannot reach {args.host}:{args.port}: {exc}", file=sys.stderr)
        writer.close()
        return
    delay = args.delay_ms / 2000
    await asyncio.gather(
        forward(reader, up_writer, delay, args.window),
        forward(up_reader, writer, delay, args.window),
        return_exceptions=True,
    )
    for w in (writer, up_writer):
        w.close()


async def main(args: argparse.Namespace) -> int:
    server = await asyncio.start_server(
        lambda r, w: relay(args, r, w), "127.0.0.1", 0, backlog=512
    )
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="the server's address")
    parser.add_argument("--port", type=int, required=True, help="the server's port")
    parser.add_argument("--delay-ms", type=float, required=True, help="round trip")
    parser.add_argument("--window", type=int, default=4 << 20, help="bytes in flight")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
