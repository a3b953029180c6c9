"""One consumer process of bench_relay: several ProducerClients, one FrameStore each.

Started by benchmarks/bench_relay.py, never by hand. It imports everything, prints
``READY``, waits for ``GO`` on stdin, then follows one feed (a FreqTrade bot or a
candlecast hub) with ``--count`` clients until ``STOP`` or end of input. The feed
token comes from the environment (RELAY_BENCH_TOKEN), never from the command line.

stdout, one event a line, times in epoch seconds:
    LOADED <client> <time>   that client holds every pair with at least --min-rows
    TICK <date_ms> <time>    every client of this process holds the candle opening
                             at date_ms (or a later one) on every pair, since <time>
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane.lib.contracts import ConsumerSettings, Follow  # noqa: E402
from controlplane.lib.feedclient.client import ProducerClient  # noqa: E402
from controlplane.lib.feedclient.framestore import FrameStore, Stored  # noqa: E402

TOKEN_VARIABLE = "RELAY_BENCH_TOKEN"


def say(text: str) -> None:
    print(text, flush=True)


class Holdings:
    """What every client of this process holds: the newest candle per pair."""

    def __init__(self, clients: int, pairs: int, min_rows: int) -> None:
        self.pairs, self.min_rows = pairs, min_rows
        self.last: list[dict[str, int]] = [{} for _ in range(clients)]
        self.rows: list[dict[str, int]] = [{} for _ in range(clients)]
        self.loaded = [False] * clients
        self.newest = [0] * clients  # per client: the candle it holds on every pair
        self.reported = 0  # the newest candle said in a TICK line

    def stored(self, client: int, result: Stored) -> None:
        pair = result.key[0]
        self.rows[client][pair] = result.rows
        self.last[client][pair] = result.last.value // 1_000_000
        now = time.time()
        if not self.loaded[client] and self._full(client):
            self.loaded[client] = True
            say(f"LOADED {client} {now:.6f}")
        if len(self.last[client]) == self.pairs:
            self.newest[client] = min(self.last[client].values())
            self._tick(now)

    def _full(self, client: int) -> bool:
        rows = self.rows[client]
        return len(rows) == self.pairs and min(rows.values()) >= self.min_rows

    def _tick(self, now: float) -> None:
        if not all(self.loaded):
            return
        held = min(self.newest)
        if held > self.reported:
            self.reported = held
            say(f"TICK {held} {now:.6f}")


def make_follow(args: argparse.Namespace, token: str) -> Follow:
    return Follow(
        name="bench",
        kind=args.kind,
        host=args.host,
        port=args.port,
        secure=False,
        ws_token=token,
    )


def make_client(
    follow: Follow,
    store: FrameStore,
    holdings: Holdings,
    index: int,
    deflate: bool = False,
    native: bool = False,
) -> ProducerClient:
    """A client speaking FreqTrade's protocol (bench_network: or candlecast.v1)."""
    settings = ConsumerSettings(sleep_time=2.0)
    extra: dict = {"compression": "deflate"} if deflate else {}
    if "native" in inspect.signature(ProducerClient).parameters:
        extra["native"] = native
    return ProducerClient(
        follow,
        settings,
        store,
        on_stored=lambda _name, result: holdings.stored(index, result),
        **extra,
    )


async def main(args: argparse.Namespace) -> int:
    token = os.environ.get(TOKEN_VARIABLE, "")
    if not token:
        print(f"{TOKEN_VARIABLE} is not set: give the feed token", file=sys.stderr)
        return 64
    holdings = Holdings(args.count, args.pairs, args.min_rows)
    follow = make_follow(args, token)
    clients = [
        make_client(follow, FrameStore(), holdings, index, args.deflate, args.native)
        for index in range(args.count)
    ]
    say("READY")
    line = await asyncio.to_thread(sys.stdin.readline)
    if line.strip() != "GO":
        return 0
    tasks = [asyncio.create_task(client.run()) for client in clients]
    while (await asyncio.to_thread(sys.stdin.readline)).strip() not in ("STOP", ""):
        pass
    await asyncio.gather(*(client.close() for client in clients))
    await asyncio.wait(tasks, timeout=5)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--kind", choices=("freqtrade", "candlecast"), required=True)
    add("--host", default="127.0.0.1")
    add("--port", type=int, required=True)
    add("--count", type=int, required=True, help="clients in this process")
    add("--pairs", type=int, required=True, help="pairs each client must hold")
    add("--min-rows", type=int, required=True, help="rows per pair that count")
    add("--deflate", action="store_true", help="offer permessage-deflate")
    add("--native", action="store_true", help="offer candlecast.v1 first")
    return parser.parse_args()


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    sys.exit(asyncio.run(main(parse_args())))
