"""A soak and a crowd of idle feed connections, on real processes (issue 15: 6, 7).

Run from the repository root:

``python benchmarks/bench_soak.py [--minutes 10]``: the demo's producer (8 pairs, a
5 s candle, 1500 rows), 3 consumer workers and a status page client (a staff
StatusSocket) on one hub for N minutes. The RSS of every process is sampled every
10 s; the table gives start (once every consumer loaded), peak, end and the slope
per 10 minutes, over the whole run and over its second half: a plateau shows as a
flat second half.

``python benchmarks/bench_soak.py --idle 500``: one hub, a producer worker and 3
active feed clients (FreqTrade's protocol, subscribed); the tick-to-consumer
latency (a frame's arrival minus its ``la``, the moment the producer analysed it)
p50/p99 and the hub's RSS, first without, then with 500 idle feed connections
(authenticated, subscribed to nothing), side by side. Figures, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_consumer import MIB, load_average, memory  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from tests.processes import ROOT, Stack  # noqa: E402

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]
PAIRS += ["ADA/USDT", "DOGE/USDT", "LTC/USDT", "DOT/USDT"]  # the demo's eight
SETUP = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
from consumers.models import Consumer, Follow
from producers.models import FeedToken, Producer
producer = Producer.objects.create(
    name="demo", pairs={pairs!r}, timeframe="5m", history={history},
    source_options={{"seed": 1, "seconds_per_candle": {spc}}},
)
consumer_keys = []
for n in range(1, {consumers} + 1):
    consumer = Consumer.objects.create(name=f"soak-{{n}}", sleep_time=10)
    Follow.objects.create(consumer=consumer, name="default", producer=producer)
    consumer_keys.append(consumer.issue_key())
staff = get_user_model().objects.create_user("soak", password="soak" * 8, is_staff=True)
browser = Client()
browser.force_login(staff)
print(json.dumps({{
    "producer_key": producer.issue_key(),
    "consumer_keys": consumer_keys,
    "token": FeedToken.issue(producer, "bench: feed clients")[1],
    "session": browser.cookies["sessionid"].value,
}}))
"""
SUBSCRIBE = '{"type":"subscribe","data":["analyzed_df"]}'


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def set_up(stack: Stack, args: argparse.Namespace, consumers: int) -> dict:
    code = SETUP.format(
        pairs=PAIRS[: args.pairs],
        history=args.rows,
        spc=args.seconds_per_candle,
        consumers=consumers,
    )
    return stack.setup(code)


def wait_for(stack: Stack, what: str, found, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not found():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{stack.logs()}")
        time.sleep(0.2)


### The soak


async def status_page(url: str, origin: str, session: str, seen: dict) -> None:
    """A browser's StatusSocket, reopened if it ends; counts updates and opens."""
    headers = {"Cookie": f"sessionid={session}", "Origin": origin}
    while True:
        try:
            async with connect(url, additional_headers=headers, max_size=None) as ws:
                seen["opens"] += 1
                async for _ in ws:
                    seen["updates"] += 1
        except (OSError, ConnectionError) as exc:
            seen["errors"].append(str(exc))
        except Exception as exc:  # websockets' own, e.g. a refused handshake
            seen["errors"].append(f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(5)


async def sample_every(
    pids: dict[str, int], interval: float, seconds: float
) -> dict[str, list[tuple[float, int]]]:
    """RSS (bytes) of each process every ``interval`` seconds, for ``seconds``."""
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in pids}
    started = time.monotonic()
    while True:
        at = time.monotonic() - started
        for name, pid in pids.items():
            found = memory(pid)
            if found is not None:
                samples[name].append((at, found.rss))
        if at >= seconds:
            return samples
        await asyncio.sleep(min(interval, max(seconds - at, 0.01)))


def slope(points: list[tuple[float, int]]) -> float:
    """Least-squares bytes per 10 minutes."""
    if len(points) < 2:
        return float("nan")
    times, values = zip(*points, strict=True)
    return statistics.linear_regression(times, values).slope * 600


def soak_table(samples: dict[str, list[tuple[float, int]]]) -> list[str]:
    rows = [
        "| process | start | peak | end | slope / 10 min | slope / 10 min, 2nd half |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, points in samples.items():
        if not points:
            rows.append(f"| {name} | gone | | | | |")
            continue
        values = [rss for _, rss in points]
        half = points[len(points) // 2 :]
        rows.append(
            f"| {name} | {values[0] / MIB:.0f} MiB | {max(values) / MIB:.0f} MiB | "
            f"{values[-1] / MIB:.0f} MiB | {slope(points) / MIB:+.1f} MiB | "
            f"{slope(half) / MIB:+.1f} MiB |"
        )
    return rows


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (the producer's analysis processes)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return sorted(found)


def start_producer(stack: Stack, args: argparse.Namespace, key: str) -> None:
    """The demo's producer worker; under tracemalloc with ``--trace DIR``."""
    workers = args.workers
    if args.trace is None:
        stack.producer("demo", key, history=True, workers=workers)
        return
    env = stack._worker(stack.env, "PRODUCER", "producer", key, None)
    argv = [sys.executable, str(Path(__file__).parent / "traced.py"), args.trace]
    argv += [str(args.trace_seconds), str(ROOT / "manage.py"), "runproducer", "demo"]
    stack.run("producer", argv + ["--workers", str(workers or 1)], env=env)
    stack.wait_log("producer", "rows of history", timeout=300)


def soak(stack: Stack, args: argparse.Namespace) -> list[str]:
    secrets = set_up(stack, args, consumers=3)
    stack.hub()
    start_producer(stack, args, secrets["producer_key"])
    for n, key in enumerate(secrets["consumer_keys"], 1):
        stack.consumer(f"soak-{n}", key, name=f"consumer-{n}")
    for n in range(1, 4):
        wait_for(
            stack,
            f"consumer {n} loaded",
            lambda n=n: "pairs loaded" in stack.log(f"consumer-{n}"),
        )
    say(f"every consumer loaded; sampling for {args.minutes:g} min")
    pids = {name: process.pid for name, process in stack.processes.items()}
    producer = pids["producer"]
    for n, child in enumerate(children(producer)):
        pids[f"producer analysis {n}"] = child
    seen: dict = {"opens": 0, "updates": 0, "errors": []}

    async def run() -> dict:
        origin = f"http://127.0.0.1:{stack.port}"
        url = f"ws://127.0.0.1:{stack.port}/ws/status"
        page = asyncio.create_task(status_page(url, origin, secrets["session"], seen))
        try:
            return await sample_every(pids, args.interval, args.minutes * 60)
        finally:
            page.cancel()

    samples = asyncio.run(run())
    candles = stack.log("producer").count(" closed: published ")
    return [
        f"soak: {args.minutes:g} min, {args.pairs} pairs x {args.rows} rows, a "
        f"candle every {args.seconds_per_candle:g} s ({candles} published), 3 "
        f"consumer workers, 1 status page ({seen['opens']} open(s), "
        f"{seen['updates']} updates, errors: {seen['errors'][-3:] or 'none'}); "
        f"RSS every {args.interval:g} s; load average at the end {load_average()}",
        "",
        *soak_table(samples),
    ]


### Idle connections


def la_of(message: str | bytes) -> float | None:
    """The ``la`` (epoch s) of an analyzed_df message, without decoding its frame."""
    doc = orjson.loads(message)
    if doc.get("type") != "analyzed_df" or not doc["data"].get("la"):
        return None
    return datetime.fromisoformat(doc["data"]["la"]).timestamp()


async def active(url: str, seen: list[tuple[float, float]], ready: asyncio.Event):
    """A subscribed feed client: notes (la, arrival) of every frame."""
    async with connect(url, max_size=8 << 20, compression=None) as ws:
        await ws.send(SUBSCRIBE)
        ready.set()
        async for message in ws:
            arrived = time.time()
            la = la_of(message)
            if la is not None:
                seen.append((la, arrived))


def tick_latencies(seen: list[tuple[float, float]], candle: float) -> list[float]:
    """Per tick: its last frame's arrival minus its newest ``la`` (the producer
    analyses the pairs one after another, then publishes the tick at once)."""
    ticks: list[list[tuple[float, float]]] = []
    for la, arrived in sorted(seen):
        if not ticks or la - ticks[-1][-1][0] > candle / 2:
            ticks.append([])
        ticks[-1].append((la, arrived))
    return [max(a for _, a in tick) - max(la for la, _ in tick) for tick in ticks]


async def idle_crowd(url: str, count: int) -> list[ClientConnection]:
    """``count`` feed connections that subscribe to nothing, 50 at a time."""
    crowd: list[ClientConnection] = []
    while len(crowd) < count:
        batch = min(50, count - len(crowd))
        crowd += await asyncio.gather(
            *(connect(url, compression=None, ping_interval=None) for _ in range(batch))
        )
    return crowd


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return pick(0.5) * 1000, pick(0.99) * 1000


async def idle_phases(stack: Stack, args: argparse.Namespace, token: str) -> list:
    """The same 3 subscribed clients, without and then with the idle crowd."""
    url = f"ws://127.0.0.1:{stack.port}/api/v1/message/ws?token={token}"
    hub = stack.processes["hub"].pid
    seen: list[list[tuple[float, float]]] = [[], [], []]
    readies = [asyncio.Event() for _ in seen]
    clients = [
        asyncio.create_task(active(url, frames, ready))
        for frames, ready in zip(seen, readies, strict=True)
    ]
    crowd: list[ClientConnection] = []

    async def measure(label: str, per: float | None) -> tuple:
        say(f"{label}: measuring {args.ticks} ticks")
        for frames in seen:
            frames.clear()
        await asyncio.sleep(args.ticks * args.seconds_per_candle)
        latencies = []
        for frames in seen:
            latencies += tick_latencies(frames, args.seconds_per_candle)
        p50, p99 = percentiles(latencies)
        return label, memory(hub).rss, per, p50, p99, len(latencies)

    try:
        await asyncio.gather(*(r.wait() for r in readies))
        await asyncio.sleep(2 * args.seconds_per_candle)  # past the first tick
        phases = [await measure("3 active", None)]
        before = memory(hub).rss
        say(f"opening {args.idle} idle feed connections")
        crowd = await idle_crowd(url, args.idle)
        await asyncio.sleep(5)  # their joins settle
        per = (memory(hub).rss - before) / args.idle
        phases.append(await measure(f"3 active + {args.idle} idle", per))
        return phases
    finally:
        await asyncio.gather(*(ws.close() for ws in crowd))
        for task in clients:
            task.cancel()


def idle(stack: Stack, args: argparse.Namespace) -> list[str]:
    secrets = set_up(stack, args, consumers=0)
    stack.hub()
    stack.producer("demo", secrets["producer_key"], history=True)
    phases = asyncio.run(idle_phases(stack, args, secrets["token"]))
    rows = [
        f"idle: {args.pairs} pairs x {args.rows} rows, a candle every "
        f"{args.seconds_per_candle:g} s, {args.ticks} ticks per phase; latency: "
        "a tick's last frame at a subscribed client - the tick's newest la; load "
        f"average at the end {load_average()}",
        "",
        "| | hub RSS | hub RSS per idle connection | latency p50 | latency p99 | "
        "ticks x clients |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, rss, per, p50, p99, frames in phases:
        each = "" if per is None else f"{per / 1024:.0f} KiB"
        rows.append(
            f"| {label} | {rss / MIB:.0f} MiB | {each} | {p50:.1f} ms | "
            f"{p99:.1f} ms | {frames} |"
        )
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--minutes", type=float, default=10.0, help="length of the soak")
    add("--interval", type=float, default=10.0, help="seconds between RSS samples")
    add("--idle", type=int, metavar="N", help="the idle mode, with N connections")
    add("--ticks", type=int, default=30, help="idle mode: ticks measured per phase")
    add("--pairs", type=int, default=8, choices=range(1, len(PAIRS) + 1))
    add("--rows", type=int, default=1500, help="the producer's history")
    add("--seconds-per-candle", type=float, default=5.0, help="synthetic clock")
    add("--workers", type=int, help="the producer's --workers (its default: cores)")
    add(
        "--trace",
        metavar="DIR",
        help="run the producer under tracemalloc "
        "(benchmarks/traced.py), snapshots in DIR; --workers 1 unless given",
    )
    add("--trace-seconds", type=float, default=60.0, help="between snapshots")
    add("--keep", action="store_true", help="keep the logs and the database")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    # SIGTERM ends the run as Ctrl-C does, so the finally below stops every process.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    stack = Stack(tmp)
    try:
        lines = idle(stack, args) if args.idle else soak(stack, args)
        print("\n".join(lines))
        return 0
    except (AssertionError, subprocess.CalledProcessError, json.JSONDecodeError) as e:
        say(f"{e}\n{getattr(e, 'stderr', '') or ''}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; stopping every process")
        return 130
    finally:
        for name in reversed(list(stack.processes)):  # workers before their hub
            stack.stop(name)
        stack.close()
        if args.keep:
            say(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
