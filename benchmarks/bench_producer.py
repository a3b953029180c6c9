"""The producer worker's analysis on 1, 2 and 4 processes, for 100 and 400 pairs.

Run from the repository root: ``python benchmarks/bench_producer.py [--pairs
100,400] [--workers 1,2,4] [--rows 1500] [--candles 8] [--consumers 10]
[--processes 2]``. For each pairs x workers it starts a fresh hub and
``runproducer --workers N`` (the sample strategy on the synthetic source, a fast
clock), then K consumers (``fanout_consumers.py``, native feed) and measures, per
candle, the worker's analysis time (all pairs) and the time from the candle close
to the last consumer holding it on every pair. Figures, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_fanout import (  # noqa: E402
    TOKEN_VARIABLE,
    BenchError,
    ConsumerProcess,
    plan,
    stop_consumers,
    wait_all,
)
from tests.processes import Stack  # noqa: E402

HERE = Path(__file__).resolve().parent
STEP_MS = 300_000
SETUP = """
import json
from producers.models import FeedToken, Producer
producer = Producer.objects.create(
    name="bench", pairs={pairs!r}, timeframe="5m", history={rows},
    source_options={{"seed": 11, "seconds_per_candle": {spc}}},
)
print(json.dumps({{
    "key": producer.issue_key(),
    "token": FeedToken.issue(producer, "producer benchmark")[1],
}}))
"""
CANDLE = re.compile(
    r"^(\S+ \S+) INFO producers\.worker: candle (\S+ \S+) closed: published "
    r"(\d+) of (\d+) pairs, ([\d.]+) s after the close \(analysis ([\d.]+) s\)",
    re.M,
)


@dataclass
class Result:
    pairs: int
    workers: int
    seconds_per_candle: float
    analysis: list[float] = field(default_factory=list)  # s per candle, all pairs
    latency: list[float] = field(default_factory=list)  # close -> last consumer, s
    note: str = ""


def pair_names(count: int) -> list[str]:
    return [f"P{i:03d}/USDT" for i in range(count)]


def log_epoch(stamp: str) -> float:
    """A log line's time (local time, as logging writes it) in epoch seconds."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def candle_ms(text: str) -> int:
    return int(datetime.fromisoformat(text + "+00:00").timestamp() * 1000)


def candles(log: str) -> dict[int, tuple[float, float, bool]]:
    """Per candle (open time, ms): its close (epoch s), the analysis time, and
    whether the tick published every pair."""
    found = {}
    for stamp, candle, done, total, after, analysis in CANDLE.findall(log):
        close = log_epoch(stamp) - float(after)
        found[candle_ms(candle)] = (close, float(analysis), done == total)
    return found


async def start_consumers(
    args: argparse.Namespace, port: int, pairs: int, token: str, tag: str
) -> list[ConsumerProcess]:
    started = []
    for index, count in enumerate(plan(args.consumers, args.processes)):
        log = open(args.tmp / f"consumers-{tag}-{index}.log", "w")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "fanout_consumers.py"),
            f"--port={port}",
            "--mode=native",
            f"--clients={count}",
            f"--pairs={pairs}",
            f"--rows={args.consumer_rows}",
            f"--step-ms={STEP_MS}",
            "--messages-per-tick=1",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env={**os.environ, TOKEN_VARIABLE: token},
            limit=1 << 20,
        )
        started.append(ConsumerProcess(process, count))
    for consumer in started:
        line = (await consumer.process.stdout.readline()).decode().strip()
        if line != "READY":
            raise BenchError(f"a consumer process did not start: {line or 'no output'}")
        asyncio.ensure_future(consumer.read())
        consumer.send("GO")
        await consumer.process.stdin.drain()
    return started


async def run_one(args: argparse.Namespace, pairs: int, workers: int) -> Result:
    spc = max(args.min_seconds_per_candle, pairs * args.seconds_per_pair)
    result = Result(pairs, workers, spc)
    tag = f"{pairs}x{workers}"
    (args.tmp / tag).mkdir()
    stack = Stack(args.tmp / tag)
    consumers: list[ConsumerProcess] = []
    try:
        keys = stack.setup(
            SETUP.format(pairs=pair_names(pairs), rows=args.rows, spc=spc)
        )
        stack.hub()
        stack.producer("bench", keys["key"], workers=workers)
        stack.wait_log("producer", "rows of history", timeout=600)
        consumers = await start_consumers(args, stack.port, pairs, keys["token"], tag)
        await wait_all(consumers, "consumers loaded", lambda c: c.loaded, 300)
        loaded = max(c.loaded for c in consumers)
        wanted = args.candles
        deadline = time.monotonic() + (wanted + 3) * spc * 3 + 60

        def counted() -> dict[int, tuple[float, float, bool]]:
            return {
                ms: seen
                for ms, seen in candles(stack.log("producer")).items()
                if seen[0] > loaded
            }

        while len(counted()) < wanted and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # the last candle's way to every consumer
        for ms, (close, analysis, whole) in sorted(counted().items())[:wanted]:
            held = [c.ticks.get(ms) for c in consumers]
            if not whole or None in held:
                result.note = "a candle never reached every consumer"
                continue
            result.analysis.append(analysis)
            result.latency.append(max(held) - close)  # type: ignore[type-var]
        if len(result.latency) < wanted:
            result.note = result.note or f"only {len(result.latency)} candles"
    except (BenchError, AssertionError) as exc:
        result.note = f"failed: {str(exc).splitlines()[0]}"
    finally:
        await stop_consumers(consumers)
        stack.close()
    return result


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def table(results: list[Result], args: argparse.Namespace) -> str:
    head = (
        "| pairs | analysis processes | analysis per candle, median (s) | "
        "close -> last consumer p50 / p99 (ms) | candles | note |\n"
        "|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in results:
        if r.latency:
            analysis = f"{statistics.median(r.analysis):.2f}"
            p50, p99 = (percentile(r.latency, q) * 1000 for q in (0.5, 0.99))
            latency = f"{p50:.0f} / {p99:.0f}"
        else:
            analysis = latency = "-"
        lines.append(
            f"| {r.pairs} | {r.workers} | {analysis} | {latency} | "
            f"{len(r.latency)} | {r.note} |"
        )
    return head + "\n".join(lines) + "\n"


async def bench(args: argparse.Namespace) -> list[Result]:
    results = []
    for pairs in args.pairs:
        for workers in args.workers:
            print(f"... {pairs} pairs on {workers} analysis process(es)", flush=True)
            results.append(await run_one(args, pairs, workers))
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    numbers = lambda text: [int(n) for n in text.split(",")]  # noqa: E731
    add("--pairs", type=numbers, default=[100, 400])
    add("--workers", type=numbers, default=[1, 2, 4])
    add("--rows", type=int, default=1500, help="history per pair (hub and worker)")
    add("--candles", type=int, default=8, help="candles measured per run")
    add("--consumers", type=int, default=10, help="consumer clients")
    add("--processes", type=int, default=2, help="processes the clients run in")
    add("--consumer-rows", type=int, default=50, help="rows each client loads")
    add("--seconds-per-pair", type=float, default=0.025, help="clock: s per pair")
    add("--min-seconds-per-candle", type=float, default=2.5)
    return parser.parse_args()


def interrupted(signum: int, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: each run's finally cleans up


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cc-producer-") as tmp:
        args.tmp = Path(tmp)
        results = asyncio.run(bench(args))
    print(
        f"\n{args.consumers} consumers (native feed) in {args.processes} processes, "
        f"{args.rows} rows per pair, sample strategy, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end\n"
    )
    print(table(results, args))
    print(f"(benchmark took {time.monotonic() - started:.0f} s)")
    return 1 if any(r.note.startswith("failed") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
