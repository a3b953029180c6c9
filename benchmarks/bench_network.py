"""Bytes on the wire: the hub and FreqTrade's own producer over a rate-limited link.

Run from the repository root, as root: ``make bench-network`` or ``python
benchmarks/bench_network.py [--consumers 1,10,100] [--pairs 20] [--rows 1500]
[--rate-mbit 100] [--delay-ms 20] [--modes freqtrade,native] [--candles 5]``.

One real FreqTrade 2026.9 producer (tests/interop/freqtrade_producer.py, as
bench_relay starts it) makes a candle every few seconds. A hub follows it through the
relay (``runproducer`` of a freqtrade-source producer), so both servers carry the
same dataframes on the same clock. Both listen on the host end of a veth pair; the
consumers (bench_relay's ProducerClient processes) run in a network namespace behind
tbf at ``--rate-mbit`` and a ``--delay-ms`` round trip (benchmarks/network_link.py).
In FreqTrade mode the consumers offer permessage-deflate as FreqTrade's consumer
does. Per K it reports cold start, bytes on the wire (the namespace's veth counters),
bytes per live delivery (one pair's candle to one consumer), tick-to-all p50/p99
(from the bot's candle to the last consumer holding it) and server CPU. Figures,
not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_relay  # noqa: E402
from benchmarks.bench_relay import (  # noqa: E402
    BenchError,
    Bot,
    ConsumerPool,
    Watch,
    hub_holds,
    percentile,
    spent,
    wait_for,
)
from benchmarks.network_link import Link, LinkError  # noqa: E402
from tests import processes  # noqa: E402
from tests.processes import Stack  # noqa: E402

MB = 1e6


def say(text: str) -> None:
    print(f"bench_network: {text}", file=sys.stderr, flush=True)


@dataclass
class Result:
    server: str  # "freqtrade" (FreqTrade's producer) or "hub"
    mode: str  # the consumers' protocol: freqtrade or native
    k: int
    cold_seconds: float = 0.0
    cold_bytes: int = 0  # both directions, every consumer
    cold_cpu: float = 0.0  # the server's CPU seconds over the cold start
    live_bytes: int = 0
    deliveries: int = 0  # pairs x consumers x candles in the live window
    live_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    missed: int = 0
    note: str = ""

    def cells(self, idle: float) -> list[str]:
        if self.note:
            return [self.server, self.mode, str(self.k), self.note]
        # FreqTrade's producer makes its candles in the same process: without them.
        idle = idle if self.server == "freqtrade" else 0.0
        minus = f" ({self.cold_cpu - idle * self.cold_seconds:.2f})" if idle else ""
        p50 = percentile(self.latencies, 0.5) * 1000 if self.latencies else 0
        p99 = percentile(self.latencies, 0.99) * 1000 if self.latencies else 0
        return [
            self.server,
            self.mode,
            str(self.k),
            f"{self.cold_seconds:.1f}",
            f"{self.cold_bytes / MB:.1f}",
            f"{self.cold_bytes / self.k / MB:.2f}",
            f"{self.cold_cpu:.2f}{minus}",
            f"{self.live_bytes / max(self.deliveries, 1):.0f}",
            f"{p50:.0f}",
            f"{p99:.0f}" + (f" ({self.missed} missed)" if self.missed else ""),
            f"{self.live_cpu:.2f}",
        ]


HEADERS = [
    "server",
    "mode",
    "K",
    "cold start s",
    "cold MB on the wire",
    "cold MB per consumer",
    "server CPU s, cold (FreqTrade: minus idle)",
    "live bytes per delivery",
    "tick-to-all p50 ms",
    "p99 ms",
    "server CPU s, live",
]


### The servers


class Servers:
    """FreqTrade's producer, and a hub relaying it, both on the link's host end."""

    def __init__(self, args: argparse.Namespace, link: Link, tmp: Path) -> None:
        self.args, self.link, self.tmp = args, link, tmp
        self.watch = Watch()
        self.token = secrets.token_urlsafe(24)
        self.bot: Bot | None = None
        self.stack: Stack | None = None

    def start(self) -> None:
        say("starting FreqTrade's producer")
        self.bot = Bot(
            processes.freqtrade_python(),
            self.args,
            self.token,
            self.tmp / "bot.log",
            self.watch,
        )
        self.watch.pids["bot"] = self.bot.process.pid
        say("starting the hub and the relay")
        (self.tmp / "stack").mkdir()
        stack = self.stack = Stack(self.tmp / "stack")
        host = self.link.host
        url = f"http://{host}:{stack.port}"
        stack.env.update(HOST=host, CANDLECAST_HUB_URL=url, LOG_LEVEL="WARNING")
        stack.env["ALLOWED_HOSTS"] = f"{host},127.0.0.1,localhost"
        stack.manage("migrate")
        configure = bench_relay.CONFIGURE.format(port=self.bot.port, token=self.token)
        configure = configure.replace('"127.0.0.1"', repr(host))
        keys = stack.python(
            bench_relay.SETUP.format(
                name=bench_relay.PRODUCER_NAME,
                timeframe=self.args.timeframe,
                rows=self.args.rows,
                configure=configure,
            )
        )
        self.feed_token = keys["feed_token"]
        hub = stack.start("hub", "runhub", "--host", host, "--port", str(stack.port))
        stack.wait_http(f"{url}/admin/login/", hub)
        self.watch.pids["hub"] = hub.pid
        key_file = stack.tmp / "producer.key"
        key_file.write_text(keys["producer_key"])
        relay = stack.start(
            "relay",
            "runproducer",
            bench_relay.PRODUCER_NAME,
            env={"CANDLECAST_PRODUCER_KEY_FILE": str(key_file)},
        )
        self.watch.pids["relay"] = relay.pid
        feed = f"ws://{host}:{stack.port}/api/v1/message/ws"
        probe = keys["probe_token"]
        wait_for(
            "the hub holding every pair from the relay",
            lambda: (
                asyncio.run(hub_holds(feed, probe, self.args.pairs)) >= self.args.pairs
            ),
            self.args.cold_timeout,
        )
        self.hub_port = stack.port

    def stop(self) -> None:
        if self.stack:
            for name in reversed(list(self.stack.processes)):
                self.stack.stop(name)
            self.stack.close()
        if self.bot:
            self.bot.stop()


### One run: K consumers of one server in one mode


def measure(servers: Servers, server: str, mode: str, k: int) -> Result:
    args, link, bot = servers.args, servers.link, servers.bot
    assert bot is not None
    result = Result(server, mode, k)
    target = bot.port if server == "freqtrade" else servers.hub_port
    token = servers.token if server == "freqtrade" else servers.feed_token
    label = f"{server}-{mode}-{k}"
    relay, port = link.relay(target, servers.tmp / f"{label}-relay.log")
    run_args = argparse.Namespace(**vars(args))
    run_args.consumers, run_args.launcher = k, link.launcher
    run_args.deflate, run_args.native = mode == "freqtrade", mode == "native"
    kind = "freqtrade" if server == "freqtrade" else "candlecast"
    pool = ConsumerPool(run_args, kind, port, token, servers.tmp, label)
    name = "bot" if server == "freqtrade" else "hub"
    try:
        pool.wait_ready()
        start, before = servers.watch.read(), link.counters()
        pool.go()

        def loaded() -> float | None:
            bot.check()
            return pool.all_loaded()

        wait_for(f"{label}: every consumer holding every pair", loaded, args.timeout)
        end, after = servers.watch.read(), link.counters()
        result.cold_seconds = (pool.all_loaded() or end.at) - start.at
        result.cold_bytes = (after - before).total
        result.cold_cpu = spent(start, end)[name][0]
        live, before = servers.watch.read(), link.counters()
        first = bot.tick_after(live.at)
        bot.wait_candles(first, args.candles - 1)
        result.latencies, result.missed = bench_relay.delivery(
            run_args, bot, pool, first
        )
        done, after = servers.watch.read(), link.counters()
        result.live_bytes = (after - before).total
        result.deliveries = k * args.pairs * args.candles
        result.live_cpu = spent(live, done)[name][0]
    except BenchError as exc:
        result.note = f"failed: {str(exc).splitlines()[0]}"
        say(f"{label}: {exc}\n{pool.errors()[-3000:]}")
    finally:
        pool.stop()
        relay.terminate()
        relay.wait(10)
    return result


### Report


def ratios(results: list[Result], k: int) -> list[str]:
    found = {(r.server, r.mode): r for r in results if r.k == k and not r.note}
    theirs = found.get(("freqtrade", "freqtrade"))
    if theirs is None:
        return []
    lines = []
    for mode in ("freqtrade", "native"):
        mine = found.get(("hub", mode))
        if mine is None:
            continue
        lines.append(
            f"K={k}, hub {mode} / FreqTrade's producer: cold bytes per consumer "
            f"{mine.cold_bytes / theirs.cold_bytes:.2f}x, live bytes per delivery "
            f"{mine.live_bytes / max(theirs.live_bytes, 1):.2f}x, cold start "
            f"{theirs.cold_seconds / mine.cold_seconds:.1f}x faster, server CPU over "
            f"the cold start {mine.cold_cpu / max(theirs.cold_cpu, 1e-9):.3f}x"
        )
    return lines


def table(results: list[Result], idle: float) -> str:
    rows = [HEADERS] + [r.cells(idle) for r in results]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(HEADERS))
    return "\n".join(lines)


def bench(args: argparse.Namespace, tmp: Path) -> tuple[list[Result], float]:
    link = Link(args.rate_mbit, args.delay_ms)
    servers = Servers(args, link, tmp)
    results: list[Result] = []
    args.host = link.host
    try:
        link.up()
        say(link.describe())
        servers.start()
        assert servers.bot is not None
        say(f"FreqTrade's producer alone (with the relay) for {args.idle_candles}")
        idle = servers.bot.idle_cpu(args.idle_candles)[1] / 100
        for k in args.consumers:
            for server, mode in args.runs:
                say(f"K={k}: {server}'s feed, {mode} mode")
                results.append(measure(servers, server, mode, k))
                say(" | ".join(results[-1].cells(0)))
    finally:
        servers.stop()
        link.down()
    return results, idle


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--consumers", default="1,10,100", help="the K values")
    add("--pairs", type=int, default=20)
    add("--rows", type=int, default=1500, choices=range(100, 1501), metavar="100..1500")
    add("--rate-mbit", type=float, default=100.0, help="the link's rate, each way")
    add("--delay-ms", type=float, default=20.0, help="the link's round trip")
    add("--modes", default="freqtrade,native", help="the hub's: freqtrade, native")
    add("--timeframe", default="5m")
    add("--seconds-per-candle", type=float, default=5.0, help="the bot's clock")
    add("--candles", type=int, default=5, help="candles in each live window")
    add("--idle-candles", type=int, default=2, help="candles of the bot alone")
    add("--processes", type=int, default=5, help="consumer processes per run")
    add("--start-timeout", type=float, default=300)
    add("--cold-timeout", type=float, default=900, help="until the hub holds all")
    add("--timeout", type=float, default=900, help="a cold start, at most")
    add("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    try:
        args.consumers = [int(k) for k in args.consumers.split(",")]
    except ValueError:
        parser.error("--consumers takes numbers separated by commas, like 1,10,100")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"freqtrade", "native"}:
        parser.error("--modes takes freqtrade, native or freqtrade,native")
    if min(args.consumers) < 1 or args.pairs < 1 or args.candles < 2:
        parser.error("--consumers and --pairs at least 1, --candles at least 2")
    args.runs = [("freqtrade", "freqtrade")] + [("hub", m) for m in modes]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="bench-network-"))
    try:
        results, idle = bench(args, tmp)
    except (BenchError, LinkError, RuntimeError, subprocess.CalledProcessError) as e:
        say(f"{e}\n{getattr(e, 'stderr', None) or ''}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; every process and the namespace are gone")
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    head = (
        f"network benchmark: {args.pairs} pairs x {args.rows} rows, a candle every "
        f"{args.seconds_per_candle:g} s; link {args.rate_mbit:g} Mbit/s, "
        f"{args.delay_ms:g} ms round trip; FreqTrade's producer idles at "
        f"{idle:.2f} CPU s per s"
    )
    text = "\n".join(
        [head, "", table(results, idle), ""]
        + [line for k in args.consumers for line in ratios(results, k)]
    )
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 1 if any(r.note for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
