"""One consumer process of bench_fanout: several ProducerClients, one FrameStore each.

Started by benchmarks/bench_fanout.py, never by hand. It imports what a consumer
needs (no Django), prints ``READY``, connects its clients on ``GO`` (stdin) and
follows one feed (the hub or the raw server) until ``STOP`` or end of input. The
feed token comes from the environment (FANOUT_BENCH_TOKEN), never the command line.

stdout, one event a line, times in epoch seconds:
    PROTOCOL <name>        the subprotocol every client negotiated ("-" for none)
    DELIVERED <time>       every client received the whitelist and one frame per pair
    LOADED <time>          every client holds every pair with at least --rows rows
    TICK <date_ms> <time>  every client holds the candle opening at date_ms on
                           every pair (decoded, in its FrameStore), since <time>
    RECEIVED <n> <time>    every client received the messages of the n-th tick
                           after loading (--messages-per-tick each), not decoded yet
    DONE <ticks>           at STOP: the candles every client held on every pair
                           after loading, summed over the clients
    ERROR <text>           something this process cannot measure; it exits 1
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane.lib.contracts import ConsumerSettings, Follow  # noqa: E402
from controlplane.lib.feedclient.client import ProducerClient  # noqa: E402
from controlplane.lib.feedclient.framestore import FrameStore, Stored  # noqa: E402

TOKEN_VARIABLE = "FANOUT_BENCH_TOKEN"
NATIVE_PROTOCOL = "candlecast.v1"
# How far a client may jump in one update and still have every candle counted.
MAX_STEPS = 1000


def say(text: str) -> None:
    print(text, flush=True)


class Holdings:
    """What the clients of this process hold, and when all of them held it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.clients, self.pairs, self.rows = args.clients, args.pairs, args.rows
        self.step, self.per_tick = args.step_ms, args.messages_per_tick
        clients = self.clients
        self.opening = [0] * clients  # messages a client had when it loaded
        self.received_ticks: dict[int, int] = {}  # tick -> clients that received it
        self.newest: list[dict[str, int]] = [{} for _ in range(clients)]
        self.held: list[dict[str, int]] = [{} for _ in range(clients)]
        self.messages = [0] * clients
        self.loaded = [False] * clients
        self.delivered = [False] * clients
        self.loaded_count = self.delivered_count = 0
        self.base: int | None = None  # the newest candle of the history
        self.counts: dict[int, int] = {}  # candle -> (client, pair) holding it
        self.ticks_held = 0

    def received(self, client: int) -> None:
        """One message reached a client: whitelist + one frame per pair delivers."""
        self.messages[client] += 1
        if self.messages[client] == self.pairs + 1:
            self._delivered(client)
        if self.loaded[client]:
            after = self.messages[client] - self.opening[client]
            if after % self.per_tick == 0:
                tick = after // self.per_tick
                self.received_ticks[tick] = self.received_ticks.get(tick, 0) + 1
                if self.received_ticks[tick] == self.clients:
                    say(f"RECEIVED {tick} {time.time():.6f}")

    def _delivered(self, client: int) -> None:
        if self.delivered[client]:
            return
        self.delivered[client] = True
        self.delivered_count += 1
        if self.delivered_count == self.clients:
            say(f"DELIVERED {time.time():.6f}")

    def stored(self, client: int, result: Stored) -> None:
        pair = result.key[0]
        date = int(result.last.value // 1_000_000)
        self.held[client][pair] = result.rows
        before = self.newest[client].get(pair)
        self.newest[client][pair] = date
        if not self.loaded[client]:
            self._check_loaded(client)
        elif before is not None and date > before:
            self._count(before, date)

    def _check_loaded(self, client: int) -> None:
        held = self.held[client]
        if len(held) < self.pairs or min(held.values()) < self.rows:
            return
        self.loaded[client] = True
        self.opening[client] = self.messages[client]
        self._delivered(client)  # a native feed may pack the pairs differently
        base = min(self.newest[client].values())
        self.base = base if self.base is None else min(self.base, base)
        for date in self.newest[client].values():
            if date > base:  # a candle already broadcast while this client loaded
                self._count(base, date)
        self.loaded_count += 1
        if self.loaded_count == self.clients:
            say(f"LOADED {time.time():.6f}")

    def _count(self, before: int, after: int) -> None:
        """Every candle in (before, after] is now held by one more (client, pair)."""
        whole = self.clients * self.pairs
        first = before + self.step
        last = min(after, before + MAX_STEPS * self.step)
        for date in range(first, last + 1, self.step):
            self.counts[date] = self.counts.get(date, 0) + 1
            if self.counts[date] == whole:
                self.ticks_held += self.clients
                say(f"TICK {date} {time.time():.6f}")


class BenchClient(ProducerClient):
    """A ProducerClient that also counts the messages it received, before decoding."""

    def __init__(self, *args, index: int, holdings: Holdings, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.index, self.holdings = index, holdings

    async def handle(self, text: str | bytes) -> None:
        self.holdings.received(self.index)
        await super().handle(text)


def make_clients(args: argparse.Namespace, holdings: Holdings) -> list[BenchClient]:
    follow = Follow(
        name="bench",
        kind="candlecast",
        host="127.0.0.1",
        port=args.port,
        secure=False,
        ws_token=os.environ.get(TOKEN_VARIABLE, ""),
    )
    settings = ConsumerSettings(
        sleep_time=1.0, initial_candle_limit=args.rows, wait_timeout=600.0
    )
    clients = []
    for index in range(args.clients):
        store = FrameStore(max_rows=args.rows)
        clients.append(
            BenchClient(
                follow,
                settings,
                store,
                on_stored=lambda _name, result, i=index: holdings.stored(i, result),
                index=index,
                holdings=holdings,
                native=args.mode == "native",
                compression="deflate" if args.deflate else None,
            )
        )
    return clients


async def report_protocol(clients: list[BenchClient], mode: str) -> None:
    """Say which subprotocol the links negotiated; native must get candlecast.v1."""
    while not all(client.connected for client in clients):
        await asyncio.sleep(0.05)
    names = {getattr(client, "protocol", None) or "-" for client in clients}
    say(f"PROTOCOL {','.join(sorted(names))}")
    if mode == "native" and not names <= {NATIVE_PROTOCOL, f"{NATIVE_PROTOCOL}+zstd"}:
        say(
            f"ERROR native mode negotiated {','.join(sorted(names))}, not "
            f"{NATIVE_PROTOCOL}: the server does not speak the native protocol"
        )
    if mode == "freqtrade" and any(n.startswith(NATIVE_PROTOCOL) for n in names):
        say("ERROR FreqTrade mode negotiated the native protocol")


async def main(args: argparse.Namespace) -> int:
    if not os.environ.get(TOKEN_VARIABLE):
        say(f"ERROR {TOKEN_VARIABLE} is not set: the driver gives the feed token")
        return 1
    holdings = Holdings(args)
    try:
        clients = make_clients(args, holdings)
    except SystemExit as exc:
        say(str(exc))
        return 1
    say("READY")
    if (await asyncio.to_thread(sys.stdin.readline)).strip() != "GO":
        return 0
    tasks = [asyncio.create_task(client.run()) for client in clients]
    checker = asyncio.create_task(report_protocol(clients, args.mode))
    while (await asyncio.to_thread(sys.stdin.readline)).strip() not in ("STOP", ""):
        pass
    checker.cancel()
    say(f"DONE {holdings.ticks_held}")
    await asyncio.gather(*(client.close() for client in clients))
    await asyncio.wait(tasks, timeout=5)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--port", type=int, required=True)
    add("--mode", choices=("freqtrade", "native"), required=True)
    add("--clients", type=int, required=True, help="clients in this process")
    add("--pairs", type=int, required=True, help="pairs each client must hold")
    add("--rows", type=int, required=True, help="rows per pair that count as loaded")
    add("--step-ms", type=int, default=300_000, help="the candle length in ms")
    add("--messages-per-tick", type=int, required=True, help="broadcast per tick")
    add("--deflate", action="store_true", help="offer permessage-deflate")
    return parser.parse_args()


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    sys.exit(asyncio.run(main(parse_args())))
