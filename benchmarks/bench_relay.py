"""An upstream FreqTrade bot's CPU: its consumers on it directly, or through the hub.

Run from the repository root: ``python benchmarks/bench_relay.py [--consumers 50]
[--pairs 20] [--rows 1500] [--candles 20]`` (``make bench-relay``). One run, two
phases, each with a fresh real FreqTrade 2026.9 producer
(tests/interop/freqtrade_producer.py under the FreqTrade venv):

1. direct: the consumers follow the bot themselves;
2. through the hub: a hub (temp SQLite), the relay (``runproducer NAME`` for a
   producer of source freqtrade) following the bot with one connection, and the same
   consumers following the hub.

The consumers are real ``controlplane.lib.feedclient.client.ProducerClient``s speaking
FreqTrade's
protocol in both phases, spread over a few processes (benchmarks/relay_consumers.py),
each with its own FrameStore. Prints the bot's CPU over the cold start and over a
steady run of candles, the time until every consumer holds every pair, per-candle
latency from the bot's candle to the last consumer, and the relay's and the hub's
CPU. Figures, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import connect  # noqa: E402

from benchmarks.bench_consumer import cpu_seconds, load_average  # noqa: E402
from controlplane.lib.feedclient.requests import request_text  # noqa: E402
from controlplane.lib.wire import freqtrade  # noqa: E402
from tests import processes  # noqa: E402
from tests.processes import ROOT, Stack  # noqa: E402

CONSUMER_SCRIPT = ROOT / "benchmarks" / "relay_consumers.py"
INTEROP = ROOT / "tests" / "interop"
PRODUCER_NAME = "upstream"
# The real harness, unchanged, plus one stdout line per candle the bot makes:
# "TICK <candle open, ms> <epoch seconds when the bot's loop began that candle>".
BOT_WRAPPER = f"""
import sys, time
sys.path.insert(0, {str(INTEROP)!r})
import freqtrade_producer as harness
began = {{}}
def refresh_whitelist(self, _original=harness.HarnessBot.refresh_whitelist):
    began["tick"] = time.time()  # the loop's first step for every new candle
    _original(self)
def feed(self, pair, ticks, _original=harness.HarnessBot.feed):
    _original(self, pair, ticks)
    at = began.pop("tick", None)
    if at is not None and len(ticks) == 1:
        print(f"TICK {{int(ticks[-1][0])}} {{at:.6f}}", flush=True)
harness.HarnessBot.refresh_whitelist = refresh_whitelist
harness.HarnessBot.feed = feed
sys.exit(harness.main(sys.argv[1:]))
"""


class BenchError(Exception):
    """Something the benchmark waited for did not happen; the text says what."""


def say(text: str) -> None:
    print(f"bench_relay: {text}", file=sys.stderr, flush=True)


def wait_for(what: str, found: Callable[[], object], timeout: float) -> object:
    """Poll ``found()`` every 50 ms until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while not (result := found()):
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)
    return result


### CPU readings


class Reading(NamedTuple):
    at: float  # time.time()
    cpu: dict[str, float]  # process name -> user + system seconds so far


class Watch:
    """The processes whose CPU a phase reports, read together at one moment."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}

    def read(self) -> Reading:
        return Reading(time.time(), {n: cpu_seconds(p) for n, p in self.pids.items()})


def spent(start: Reading, end: Reading) -> dict[str, tuple[float, float]]:
    """Per process: (CPU seconds, % of one core) between two readings."""
    wall = max(end.at - start.at, 1e-9)
    return {
        name: (
            end.cpu[name] - start.cpu[name],
            100 * (end.cpu[name] - start.cpu[name]) / wall,
        )
        for name in start.cpu
        if name in end.cpu
    }


### The upstream bot


class Tick(NamedTuple):
    date_ms: int  # the new candle's open date
    reading: Reading  # when the bot's loop began it, with every watched CPU


class Bot:
    """A real FreqTrade producer that says when it makes each candle."""

    def __init__(
        self, python: str, args: argparse.Namespace, token: str, log: Path, watch: Watch
    ) -> None:
        # "--token=": a random token may start with "-", which argparse would
        # take for an option.
        command = [python, "-c", BOT_WRAPPER, f"--token={token}"]
        command += ["--pairs", ",".join(pair_names(args.pairs))]
        command += ["--rows", str(args.rows), "--timeframe", args.timeframe]
        command += ["--seconds-per-candle", str(args.seconds_per_candle)]
        command += ["--host", getattr(args, "host", "127.0.0.1")]
        self.log = log
        self.watch = watch
        self.seconds_per_candle = args.seconds_per_candle
        self.ticks: list[Tick] = []
        self._log_file = open(log, "w")
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            cwd=ROOT,
        )
        self.port = self._ready(timeout=args.start_timeout)
        threading.Thread(target=self._read, daemon=True).start()

    def _ready(self, timeout: float) -> int:
        found: list[str] = []
        reader = threading.Thread(
            target=lambda: found.append(self.process.stdout.readline()), daemon=True
        )
        reader.start()
        reader.join(timeout)
        line = found[0].split() if found else []
        if len(line) != 2 or line[0] != "READY":
            self.stop()
            raise BenchError(
                f"the FreqTrade producer did not say READY within {timeout:.0f} s "
                f"(stdout {found!r}); its log:\n{tail(self.log)}"
            )
        return int(line[1])

    def _read(self) -> None:
        for line in self.process.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "TICK":
                reading = self.watch.read()
                self.ticks.append(
                    Tick(int(parts[1]), reading._replace(at=float(parts[2])))
                )

    def check(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(
                f"the FreqTrade producer exited ({self.process.returncode}):\n"
                f"{tail(self.log)}"
            )

    def tick_after(self, moment: float) -> int:
        """The index of the first candle the bot began after ``moment``."""

        def found() -> int:  # the index + 1, so that 0 is not falsy
            self.check()
            later = (i for i, t in enumerate(self.ticks) if t.reading.at > moment)
            return next(later, -1) + 1

        return wait_for("the bot's next candle", found, 600) - 1

    def wait_candles(self, first: int, count: int) -> tuple[Tick, Tick]:
        """The bot's candles ``first`` and ``first + count``, once both began."""
        wait_for(
            f"{count} more candles from the bot",
            lambda: self.check() or len(self.ticks) > first + count,
            count * self.seconds_per_candle * 10 + 120,
        )
        return self.ticks[first], self.ticks[first + count]

    def idle_cpu(self, count: int) -> tuple[float, float]:
        """CPU seconds and % of a core over ``count`` candles with no consumer."""
        start, end = self.wait_candles(self.tick_after(time.time()), count)
        return spent(start.reading, end.reading)["bot"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


def pair_names(count: int) -> list[str]:
    return [f"C{index:03d}/USDT" for index in range(count)]


def tail(path: Path, size: int = 4000) -> str:
    return path.read_text(errors="replace")[-size:] if path.exists() else ""


### The consumers


@dataclass
class ConsumerProcess:
    process: subprocess.Popen
    log: Path
    clients: int
    ready: threading.Event = field(default_factory=threading.Event)
    loaded: dict[int, float] = field(default_factory=dict)  # client -> time
    ticks: list[tuple[int, float]] = field(default_factory=list)  # (date_ms, time)

    def read(self) -> None:
        for line in self.process.stdout:
            parts = line.split()
            if parts == ["READY"]:
                self.ready.set()
            elif len(parts) == 3 and parts[0] == "LOADED":
                self.loaded[int(parts[1])] = float(parts[2])
            elif len(parts) == 3 and parts[0] == "TICK":
                self.ticks.append((int(parts[1]), float(parts[2])))

    def held_at(self, date_ms: int) -> float | None:
        """When every client here held the candle of ``date_ms`` on every pair."""
        return next((at for date, at in self.ticks if date >= date_ms), None)


class ConsumerPool:
    """``count`` ProducerClients spread over ``processes`` processes."""

    def __init__(
        self,
        args: argparse.Namespace,
        kind: str,
        port: int,
        token: str,
        tmp: Path,
        label: str,
    ) -> None:
        sizes = spread(args.consumers, args.processes)
        self.members: list[ConsumerProcess] = []
        self._logs: list[IO] = []
        for index, size in enumerate(sizes):
            log = tmp / f"{label}-consumers-{index}.log"
            self._logs.append(open(log, "w"))
            # bench_network runs them in its network namespace, offering deflate.
            command = [*getattr(args, "launcher", [])]
            command += [sys.executable, str(CONSUMER_SCRIPT), "--kind", kind]
            command += ["--deflate"] if getattr(args, "deflate", False) else []
            command += ["--native"] if getattr(args, "native", False) else []
            command += ["--port", str(port), "--count", str(size)]
            command += ["--pairs", str(args.pairs), "--min-rows", str(args.rows)]
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._logs[-1],
                text=True,
                env={**os.environ, "RELAY_BENCH_TOKEN": token},
            )
            member = ConsumerProcess(process, log, size)
            threading.Thread(target=member.read, daemon=True).start()
            self.members.append(member)

    def wait_ready(self, timeout: float = 120) -> None:
        for member in self.members:
            if not member.ready.wait(timeout):
                raise BenchError(
                    f"a consumer process did not start within {timeout:.0f} s:\n"
                    f"{tail(member.log)}"
                )

    def go(self) -> None:
        for member in self.members:
            member.process.stdin.write("GO\n")
            member.process.stdin.flush()

    def check(self) -> None:
        for member in self.members:
            if member.process.poll() is not None:
                raise BenchError(
                    f"a consumer process exited ({member.process.returncode}):\n"
                    f"{tail(member.log)}"
                )

    def all_loaded(self) -> float | None:
        """When the last client came to hold every pair; None before that."""
        self.check()
        if any(len(m.loaded) < m.clients for m in self.members):
            return None
        return max(at for m in self.members for at in m.loaded.values())

    def held_at(self, date_ms: int) -> float | None:
        """When the last consumer held that candle on every pair; None before."""
        times = [member.held_at(date_ms) for member in self.members]
        return None if None in times else max(times)

    def errors(self) -> str:
        """The consumers' warnings, for the report when something went wrong."""
        return "\n".join(tail(member.log, 1500) for member in self.members)

    def stop(self) -> None:
        for member in self.members:
            if member.process.poll() is None:
                try:
                    member.process.stdin.write("STOP\n")
                    member.process.stdin.close()
                except OSError:
                    pass
        for member in self.members:
            try:
                member.process.wait(15)
            except subprocess.TimeoutExpired:
                member.process.kill()
                member.process.wait()
        for log in self._logs:
            log.close()


def spread(count: int, processes: int) -> list[int]:
    processes = max(1, min(processes, count))
    return [count // processes + (i < count % processes) for i in range(processes)]


### One phase


@dataclass
class PhaseResult:
    idle: tuple[float, float]  # the bot alone: (CPU s, % of a core)
    cold_seconds: float
    cold: dict[str, tuple[float, float]]  # process -> (CPU s, % of a core)
    steady: dict[str, tuple[float, float]]
    interval: float  # the bot's mean candle interval during the steady phase
    latencies: list[float]  # seconds, per candle held by every consumer
    missed: int  # candles some consumer never held in time
    notes: list[str] = field(default_factory=list)


def measure(
    args: argparse.Namespace,
    bot: Bot,
    pool: ConsumerPool,
    watch: Watch,
    cold_start: Reading,
    idle: tuple[float, float],
    notes: list[str],
) -> PhaseResult:
    """From ``cold_start``: until every consumer holds every pair, then M candles."""
    say("waiting until every consumer holds every pair")

    def loaded() -> float | None:
        bot.check()
        return pool.all_loaded()

    wait_for("every consumer holding every pair", loaded, args.cold_timeout)
    cold_end = watch.read()
    cold_end = cold_end._replace(at=pool.all_loaded())
    first = bot.tick_after(cold_end.at)
    say(f"steady phase: {args.candles} candles")
    start, end = bot.wait_candles(first, args.candles)
    latencies, missed = delivery(args, bot, pool, first)
    return PhaseResult(
        idle=idle,
        cold_seconds=cold_end.at - cold_start.at,
        cold=spent(cold_start, cold_end),
        steady=spent(start.reading, end.reading),
        interval=(end.reading.at - start.reading.at) / args.candles,
        latencies=latencies,
        missed=missed,
        notes=notes,
    )


def delivery(
    args: argparse.Namespace, bot: Bot, pool: ConsumerPool, first: int
) -> tuple[list[float], int]:
    """Per steady candle: from the bot's candle to the last consumer holding it."""
    ticks = bot.ticks[first : first + args.candles]
    # A bot that falls behind delivers late: give its backlog time to drain.
    deadline = time.monotonic() + max(120.0, 2 * args.candles * args.seconds_per_candle)
    while time.monotonic() < deadline and pool.held_at(ticks[-1].date_ms) is None:
        pool.check()
        time.sleep(0.1)
    latencies = []
    for tick in ticks:
        held = pool.held_at(tick.date_ms)
        if held is not None:
            latencies.append(held - tick.reading.at)
    return latencies, len(ticks) - len(latencies)


def run_direct(args: argparse.Namespace, python: str, tmp: Path) -> PhaseResult:
    say("phase 1, direct: starting the FreqTrade producer")
    token = secrets.token_urlsafe(24)
    watch = Watch()
    bot = Bot(python, args, token, tmp / "direct-bot.log", watch)
    watch.pids["bot"] = bot.process.pid
    pool = ConsumerPool(args, "freqtrade", bot.port, token, tmp, "direct")
    try:
        pool.wait_ready()
        say(f"phase 1: the bot alone for {args.idle_candles} candles")
        idle = bot.idle_cpu(args.idle_candles)
        say(f"phase 1: {args.consumers} consumers connect to the bot")
        start = watch.read()
        pool.go()
        return measure(args, bot, pool, watch, start, idle, [])
    except BenchError as exc:
        raise BenchError(f"{exc}\nconsumer logs:\n{pool.errors()}") from None
    finally:
        pool.stop()
        bot.stop()


### Phase 2: the hub and the relay

SETUP = """
import json
from producers.models import FeedToken, Producer
producer = Producer(name={name!r}, timeframe={timeframe!r}, history={rows})
{configure}
producer.full_clean()
producer.save()
print(json.dumps({{
    "producer_key": producer.issue_key(),
    "feed_token": FeedToken.issue(producer, "bench_relay consumers")[1],
    "probe_token": FeedToken.issue(producer, "bench_relay probe")[1],
}}))
"""
# How the relay helper's model takes an upstream FreqTrade bot (producers/models.py).
CONFIGURE = """
producer.source = "freqtrade"
producer.upstream_host = "127.0.0.1"
producer.upstream_port = {port}
producer.upstream_secure = False
producer.set_upstream_token({token!r})
"""


def relay_ready() -> str | None:
    """Why phase 2 cannot run yet, or None when the relay is in the tree."""
    if not (ROOT / "producers" / "relay.py").exists():
        return "producers/relay.py is not there yet"
    models = (ROOT / "producers" / "models.py").read_text()
    if '"freqtrade"' not in models:
        return "producers/models.py has no freqtrade source yet"
    return None


async def hub_holds(url: str, token: str, pairs: int) -> int:
    """How many pairs the hub has rows of, asked as a plain client (limit 1)."""
    held: set[str] = set()
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(url, additional_headers=headers, compression=None) as ws:
        await ws.send(request_text("analyzed_df", {"limit": 1, "pair": None}))
        try:
            while len(held) < pairs:
                message = freqtrade.decode_message(await asyncio.wait_for(ws.recv(), 1))
                data = message.get("data")
                if message["type"] == "analyzed_df" and len(data["df"]):
                    held.add(data["key"][0])
        except TimeoutError:
            pass
    return len(held)


def wait_hub_holds(stack: Stack, token: str, args: argparse.Namespace) -> None:
    def holds() -> bool:
        for name in ("hub", "relay"):
            if stack.processes[name].poll() is not None:
                raise BenchError(f"the {name} exited:\n{stack.logs()}")
        try:
            return (
                asyncio.run(hub_holds(stack.feed_url, token, args.pairs)) >= args.pairs
            )
        except OSError:
            return False

    wait_for("the relay publishing every pair to the hub", holds, args.cold_timeout)


def run_hub(args: argparse.Namespace, python: str, tmp: Path) -> PhaseResult:
    say("phase 2, through the hub: starting the FreqTrade producer and the hub")
    upstream_token = secrets.token_urlsafe(24)
    watch = Watch()
    bot = Bot(python, args, upstream_token, tmp / "hub-bot.log", watch)
    watch.pids["bot"] = bot.process.pid
    (tmp / "stack").mkdir()
    stack = Stack(tmp / "stack")
    pool = None
    try:
        stack.manage("migrate")
        configure = CONFIGURE.format(port=bot.port, token=upstream_token)
        code = SETUP.format(
            name=PRODUCER_NAME,
            timeframe=args.timeframe,
            rows=args.rows,
            configure=configure,
        )
        keys = stack.python(code)
        key_file = stack.tmp / "producer.key"
        key_file.write_text(keys["producer_key"])
        hub = stack.start_hub()
        watch.pids["hub"] = hub.pid
        pool = ConsumerPool(
            args, "candlecast", stack.port, keys["feed_token"], tmp, "hub"
        )
        pool.wait_ready()
        say(f"phase 2: the bot alone for {args.idle_candles} candles")
        idle = bot.idle_cpu(args.idle_candles)
        say("phase 2: the relay follows the bot and publishes to the hub")
        start = watch.read()
        relay = stack.start(
            "relay",
            "runproducer",
            PRODUCER_NAME,
            env={"CANDLECAST_PRODUCER_KEY_FILE": str(key_file)},
        )
        watch.pids["relay"] = relay.pid
        start.cpu["relay"] = 0.0  # its whole life is in this phase
        wait_hub_holds(stack, keys["probe_token"], args)
        relayed = time.time() - start.at
        say(f"phase 2: the hub holds every pair; {args.consumers} consumers connect")
        pool.go()
        note = f"relay start -> hub holds every pair: {relayed:.1f} s"
        return measure(args, bot, pool, watch, start, idle, [note])
    except (BenchError, AssertionError) as exc:
        more = pool.errors() if pool else ""
        raise BenchError(f"{exc}\n{stack.logs()}\n{more}") from None
    finally:
        if pool:
            pool.stop()
        for name in reversed(list(stack.processes)):  # the relay before its hub
            stack.stop(name)
        stack.close()
        bot.stop()


### Report


def cpu_text(
    figures: dict[str, tuple[float, float]], name: str, candles: int = 0
) -> str:
    if name not in figures:
        return f"none (no {name} in this phase)"
    seconds, share = figures[name]
    each = f", {seconds / candles:.2f} per candle" if candles else ""
    return f"{seconds:.2f} CPU s{each} ({share:.0f} % of a core)"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered)) - 1))]


def latency_text(result: PhaseResult, share: float) -> str:
    if not result.latencies:
        return f"none held in time ({result.missed} missed)"
    text = f"{percentile(result.latencies, share) * 1000:.0f} ms"
    return f"{text} ({result.missed} missed)" if result.missed else text


def column(result: PhaseResult | None, why: str, args: argparse.Namespace) -> list[str]:
    if result is None:
        return [f"not run: {why}"] * len(FIGURES)
    rows = [
        cpu_text({"bot": result.idle}, "bot", args.idle_candles),
        f"{result.cold_seconds:.1f} s",
        cpu_text(result.cold, "bot"),
        cpu_text(result.steady, "bot", args.candles),
        f"{result.interval:.2f} s (set: {args.seconds_per_candle:g} s)",
        latency_text(result, 0.50),
        latency_text(result, 0.99),
        cpu_text(result.cold, "relay"),
        cpu_text(result.steady, "relay"),
        cpu_text(result.cold, "hub"),
        cpu_text(result.steady, "hub"),
    ]
    return rows


FIGURES = [
    "upstream bot CPU, alone before any consumer",
    "cold start: until every consumer holds every pair",
    "upstream bot CPU, cold start",
    "upstream bot CPU, steady phase",
    "upstream bot's candle interval, steady (mean)",
    "latency, bot's candle -> last consumer, p50",
    "latency, bot's candle -> last consumer, p99",
    "relay CPU, cold start",
    "relay CPU, steady phase",
    "hub CPU, cold start",
    "hub CPU, steady phase",
]


def ratio(direct: PhaseResult | None, hub: PhaseResult | None, part: str) -> str:
    if direct is None or hub is None:
        return "n/a (needs both phases)"
    mine, theirs = getattr(direct, part)["bot"][0], getattr(hub, part)["bot"][0]
    if theirs <= 0:
        return f"direct {mine:.2f} CPU s, through the hub under one clock tick"
    return f"{mine / theirs:.1f}x"


def serving(args: argparse.Namespace, result: PhaseResult) -> float:
    """The bot's CPU per candle spent on its consumers: steady minus alone."""
    steady = result.steady["bot"][0] / args.candles
    return steady - result.idle[0] / args.idle_candles


def serving_text(
    args: argparse.Namespace, direct: PhaseResult, hub: PhaseResult
) -> str:
    mine, theirs = serving(args, direct), serving(args, hub)
    times = f": {mine / theirs:.1f}x" if theirs > 0 else ""
    return (
        "upstream bot CPU per candle for its consumers (steady minus alone): "
        f"direct {mine:.2f} s, through the hub {theirs:.2f} s{times}"
    )


def print_report(
    args: argparse.Namespace,
    head: list[str],
    direct: PhaseResult | None,
    hub: PhaseResult | None,
    why: str,
) -> None:
    columns = list(
        zip(FIGURES, column(direct, why, args), column(hub, why, args), strict=True)
    )
    width = max(len(name) for name in FIGURES) + 2
    second = max(len(value) for _, value, _ in columns) + 2
    print("\n".join(head))
    print(f"\n  {'figure':<{width}}{'direct':<{second}}through the hub")
    for name, mine, theirs in columns:
        print(f"  {name:<{width}}{mine:<{second}}{theirs}")
    print(
        f"\n  upstream bot CPU, direct / through the hub: cold start "
        f"{ratio(direct, hub, 'cold')}, steady phase {ratio(direct, hub, 'steady')}"
    )
    if direct and hub:
        print(f"  {serving_text(args, direct, hub)}")
    for name, result in (("direct", direct), ("through the hub", hub)):
        for note in result.notes if result else []:
            print(f"  {name}: {note}")


def scenario(args: argparse.Namespace) -> list[str]:
    sizes = spread(args.consumers, args.processes)
    every, spread_text = args.seconds_per_candle, ", ".join(map(str, sizes))
    return [
        f"\nrelay benchmark: upstream = FreqTrade 2026.9 producer "
        f"(tests/interop/freqtrade_producer.py), {args.pairs} pairs x {args.rows} "
        f"rows, timeframe {args.timeframe}, one candle every {every:g} s",
        f"consumers: {args.consumers} ProducerClients (FreqTrade's protocol, one "
        f"FrameStore each) in {len(sizes)} processes of {spread_text}; "
        f"steady phase {args.candles} candles; CPU = utime+stime from /proc",
        f"machine: {os.cpu_count()} CPUs shared by every process here; load average "
        f"{load_average()} (start)",
    ]


def say_figures(phase: str, result: PhaseResult, args: argparse.Namespace) -> None:
    """A phase's figures at once, so a later phase's failure does not lose them."""
    cells = zip(FIGURES, column(result, "", args), strict=True)
    lines = [f"  {name}: {value}" for name, value in cells]
    say(f"{phase} measured:\n" + "\n".join(lines))


def bench(args: argparse.Namespace, tmp: Path) -> None:
    python = processes.freqtrade_python()
    head = scenario(args)
    direct = hub = None
    why = relay_ready() if "hub" in args.phases else "not asked for (--phases)"
    if "direct" in args.phases:
        direct = run_direct(args, python, tmp)
        say_figures("phase 1 (direct)", direct, args)
    if "hub" in args.phases:
        if why:
            raise BenchError(f"phase 2 cannot run: {why}; run with --phases direct")
        hub = run_hub(args, python, tmp)
        say_figures("phase 2 (through the hub)", hub, args)
    if "direct" not in args.phases:
        why = "not asked for (--phases)"
    head.append(f"load average at the end: {load_average()}")
    print_report(args, head, direct, hub, why)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--consumers", type=int, default=50)
    add("--processes", type=int, default=5, help="consumer processes")
    add("--pairs", type=int, default=20)
    add("--rows", type=int, default=1500, choices=range(100, 1501), metavar="100..1500")
    add("--timeframe", default="5m")
    add("--seconds-per-candle", type=float, default=5.0, help="the bot's clock")
    add("--candles", type=int, default=10, help="candles in the steady phase")
    add("--idle-candles", type=int, default=3, help="candles of the bot alone")
    add("--phases", default="direct,hub", help="direct, hub or both (default)")
    add("--start-timeout", type=float, default=300, help="the bot's startup")
    add("--cold-timeout", type=float, default=900, help="until all consumers hold all")
    add("--keep", action="store_true", help="keep the logs")
    args = parser.parse_args(argv)
    args.phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if not args.phases or args.phases - {"direct", "hub"}:
        parser.error("--phases takes direct, hub or direct,hub")
    if min(args.consumers, args.pairs, args.candles, args.idle_candles) < 1:
        parser.error("--consumers, --pairs, --candles, --idle-candles: at least 1")
    if args.seconds_per_candle <= 0:
        parser.error("--seconds-per-candle must be above 0: the bot must make candles")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM ends the run as Ctrl-C does, so every process started is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    try:
        bench(args, tmp)
        return 0
    except (BenchError, RuntimeError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or ""
        say(f"{exc}\n{detail}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; stopping every process")
        return 130
    finally:
        if args.keep:
            say(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
