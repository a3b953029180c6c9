"""Fan-out: one producer, K consumers in separate processes, the hub against raw.

Run from the repository root: ``make bench-fanout`` or ``python
benchmarks/bench_fanout.py [--consumers 1,10,50,100] [--pairs 100] [--rows 1500]
[--ticks 20] [--modes raw,freqtrade,native] [--server daphne|uvicorn]
[--processes 10] [--markdown FILE] [--json FILE]``. For each mode and K it starts a
fresh server (the hub, or a bare ``websockets`` server with pre-encoded frames),
publishes the history as the producer worker, starts the consumers, and measures
cold start, tick-to-all latency, hub CPU and memory. Figures, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import connect  # noqa: E402

from benchmarks import fanout_data  # noqa: E402
from benchmarks.fanout_data import BenchData  # noqa: E402
from benchmarks.fanout_table import (  # noqa: E402
    Run,
    markdown_table,
    print_report,
)
from producers.worker import Publisher  # noqa: E402
from tests.processes import ROOT, free_port  # noqa: E402

MIB = 1 << 20
SIZE_LIMIT = 8 * MIB
HERE = Path(__file__).resolve().parent
TOKEN_VARIABLE = "FANOUT_BENCH_TOKEN"
NATIVE_PROTOCOL = "candlecast.v1"
SETUP = """
import json
from producers.models import FeedToken, Producer
producer = Producer.objects.create(name="fanout", pairs={pairs!r}, history={rows})
print(json.dumps({{
    "producer_key": producer.issue_key(),
    "feed_token": FeedToken.issue(producer, "fanout benchmark")[1],
}}))
"""


class BenchError(Exception):
    """Something the benchmark waited for did not happen; the text says what."""


### /proc readings


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in bytes ({} once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {
        name: int(fields[name].split()[0]) << 10
        for name in ("VmRSS", "VmHWM")
        if name in fields
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


### The hub, set up once and copied per run


@dataclass
class HubSetup:
    tmp: Path
    database: Path  # the migrated template; each run copies it
    producer_key: str
    feed_token: str = field(repr=False)


def base_env(tmp: Path, database: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "CANDLECAST_VAR_DIR": str(tmp / "var"),
        "DATABASE_URL": f"sqlite:///{database}",
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise BenchError(f"manage.py {args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def set_up_hub(tmp: Path, data: BenchData) -> HubSetup:
    database = tmp / "template.sqlite3"
    env = base_env(tmp, database)
    manage(env, "migrate")
    code = SETUP.format(pairs=data.pairs, rows=data.rows)
    secrets_ = json.loads(manage(env, "shell", "-c", code).strip().splitlines()[-1])
    return HubSetup(tmp, database, secrets_["producer_key"], secrets_["feed_token"])


def hub_command(server: str, port: int, host: str = "127.0.0.1") -> list[str]:
    if server == "daphne":
        return [
            *(sys.executable, str(ROOT / "manage.py"), "runhub"),
            *("--host", host, "--port", str(port)),
        ]
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "controlplane.asgi:application",
        f"--host={host}",
        f"--port={port}",
        "--ws=websockets",
        f"--ws-max-size={SIZE_LIMIT}",
        "--ws-per-message-deflate=false",
        "--lifespan=off",
        "--no-access-log",
        "--log-level=warning",
    ]


def start_hub(setup: HubSetup, args: argparse.Namespace, name: str):
    """A fresh hub on a copy of the template database; returns (process, port)."""
    database = setup.tmp / f"{name}.sqlite3"
    shutil.copyfile(setup.database, database)
    env = base_env(setup.tmp, database)
    if args.redis:
        env["REDIS_URL"] = args.redis
        env["CANDLECAST_REDIS_PREFIX"] = f"cc-fanout-{secrets.token_hex(4)}"
    port = free_port()
    host = getattr(args, "host", "127.0.0.1")  # bench_network: its link's address
    log = open(setup.tmp / f"{name}.log", "w")
    hub = subprocess.Popen(
        hub_command(args.server, port, host),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        if hub.poll() is not None:
            raise BenchError(
                f"the hub exited at start:\n{(setup.tmp / f'{name}.log').read_text()}"
            )
        try:
            urllib.request.urlopen(f"http://{host}:{port}/admin/login/", timeout=1)
            return hub, port
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError("the hub did not answer within 60 s") from None
            time.sleep(0.1)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


### Consumer processes


def plan(consumers: int, processes: int) -> list[int]:
    """Clients per process: a dedicated single-client process, then the rest spread
    as evenly as possible over at most ``processes - 1`` others."""
    rest = consumers - 1
    others = min(rest, max(processes - 1, 1))
    if not others:
        return [1]
    return [1] + [rest // others + (i < rest % others) for i in range(others)]


@dataclass
class ConsumerProcess:
    process: asyncio.subprocess.Process
    clients: int
    delivered: float | None = None
    loaded: float | None = None
    protocol: str | None = None
    ticks: dict[int, float] = field(default_factory=dict)
    received: dict[int, float] = field(default_factory=dict)  # tick number (from 1)
    done: int | None = None
    errors: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self) -> None:
        while line := (await self.process.stdout.readline()).decode().strip():
            word, _, rest = line.partition(" ")
            if word == "DELIVERED":
                self.delivered = float(rest)
            elif word == "LOADED":
                self.loaded = float(rest)
            elif word == "TICK":
                date, at = rest.split()
                self.ticks[int(date)] = float(at)
            elif word == "RECEIVED":
                number, at = rest.split()
                self.received[int(number)] = float(at)
            elif word == "PROTOCOL":
                self.protocol = rest
            elif word == "DONE":
                self.done = int(rest)
            elif word == "ERROR":
                self.errors.append(rest)
            self.changed.set()
        self.changed.set()

    def send(self, text: str) -> None:
        self.process.stdin.write(f"{text}\n".encode())


async def start_consumers(
    args: argparse.Namespace, mode: str, port: int, clients: list[int], per_tick: int
) -> list[ConsumerProcess]:
    started = []
    for index, count in enumerate(clients):
        log = open(args.tmp / f"consumers-{mode}-{sum(clients)}-{index}.log", "w")
        # bench_network: in its network namespace, through its link, maybe deflate.
        process = await asyncio.create_subprocess_exec(
            *getattr(args, "launcher", []),
            sys.executable,
            str(HERE / "fanout_consumers.py"),
            *(["--deflate"] if getattr(args, "deflate", False) else []),
            f"--port={port}",
            f"--mode={mode}",
            f"--clients={count}",
            f"--pairs={args.pairs}",
            f"--rows={args.rows}",
            f"--step-ms={fanout_data.STEP_MS}",
            f"--messages-per-tick={per_tick}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env={**os.environ, TOKEN_VARIABLE: args.feed_token},
            limit=1 << 20,
        )
        started.append(ConsumerProcess(process, count))
    for consumer in started:
        line = (await consumer.process.stdout.readline()).decode().strip()
        if line != "READY":
            raise BenchError(f"a consumer process did not start: {line or 'no output'}")
    return started


async def wait_all(
    consumers: list[ConsumerProcess], what: str, done, timeout: float
) -> None:
    """Until ``done(consumer)`` holds for every process; fails on any ERROR line."""
    deadline = time.monotonic() + timeout
    while True:
        for consumer in consumers:
            if consumer.errors:
                raise BenchError(f"a consumer process: {consumer.errors[0]}")
        if all(done(consumer) for consumer in consumers):
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"{what}: not within {timeout:.0f} s")
        waits = [asyncio.ensure_future(c.changed.wait()) for c in consumers]
        await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        for consumer in consumers:
            consumer.changed.clear()


async def stop_consumers(consumers: list[ConsumerProcess]) -> None:
    for consumer in consumers:
        if consumer.process.returncode is None:
            consumer.send("STOP")
    for consumer in consumers:
        try:
            await asyncio.wait_for(consumer.process.wait(), 20)
        except TimeoutError:
            consumer.process.kill()
            await consumer.process.wait()


### One run: a server, K consumers, the history, the ticks


class Feed:
    """The server side of a run: publish the history, send one tick."""

    pid: int

    async def open(self) -> int: ...

    async def tick(self, number: int) -> None: ...

    async def close(self) -> None: ...


class HubFeed(Feed):
    def __init__(self, setup: HubSetup, data: BenchData, args, name: str) -> None:
        self.setup, self.data, self.args, self.name = setup, data, args, name

    async def open(self) -> int:
        self.hub, port = start_hub(self.setup, self.args, self.name)
        self.pid = self.hub.pid
        host = getattr(self.args, "host", "127.0.0.1")
        self.ws = await connect(
            f"ws://{host}:{port}/api/v1/publish/ws",
            additional_headers={"Authorization": f"Bearer {self.setup.producer_key}"},
            compression=None,
            max_size=SIZE_LIMIT,
        )
        self.publisher = Publisher(self.ws)
        for index, frame in enumerate(self.data.history):
            whitelist = self.data.pairs if index == 0 else None
            await self.publisher.publish([frame], whitelist=whitelist)
        return port

    async def tick(self, number: int) -> None:
        await self.publisher.publish(self.data.ticks[number])

    async def close(self) -> None:
        await self.ws.close()
        stop_process(self.hub)


class RawFeed(Feed):
    def __init__(self, recording: Path, tmp: Path, name: str) -> None:
        self.recording, self.tmp, self.name = recording, tmp, name

    async def open(self) -> int:
        self.server = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "raw_server.py"),
            f"--recording={self.recording}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=open(self.tmp / f"{self.name}.log", "w"),
        )
        self.pid = self.server.pid
        line = (await self.server.stdout.readline()).decode().split()
        if line[:1] != ["LISTENING"]:
            raise BenchError(f"the raw server did not start: see {self.name}.log")
        return int(line[1])

    async def tick(self, number: int) -> None:
        self.server.stdin.write(f"TICK {number}\n".encode())
        await self.server.stdout.readline()  # SENT: broadcast() has queued it all

    async def close(self) -> None:
        self.server.stdin.write(b"STOP\n")
        try:
            await asyncio.wait_for(self.server.wait(), 10)
        except TimeoutError:
            self.server.kill()
            await self.server.wait()


async def measure(
    feed: Feed, mode: str, k: int, data: BenchData, args, per_tick: int
) -> Run:
    clients = plan(k, args.processes)
    run = Run(mode=mode, server=args.server, consumers=k, clients=clients)
    port = await feed.open()
    consumers = await start_consumers(
        args, mode.removeprefix("raw-"), port, clients, per_tick
    )
    readers = [asyncio.create_task(c.read()) for c in consumers]
    hook = getattr(args, "hook", None)  # bench_network reads its link's counters
    try:
        if hook:
            hook("go", feed, run)
        go = time.time()
        for consumer in consumers:
            consumer.send("GO")
        await wait_all(consumers, "cold start", lambda c: c.loaded, args.timeout)
        run.cold_delivered = max(c.delivered or c.loaded for c in consumers) - go
        run.cold_loaded = max(c.loaded for c in consumers) - go
        if hook:
            hook("loaded", feed, run)
        await asyncio.sleep(args.pause)
        cpu = cpu_seconds(feed.pid)
        for number, date in enumerate(data.tick_dates):
            published = time.time()
            await feed.tick(number)
            await wait_all(
                consumers,
                f"tick {number + 1}",
                lambda c, d=date, n=number + 1: d in c.ticks and n in c.received,
                args.timeout,
            )
            run.latencies.append(max(c.ticks[date] for c in consumers) - published)
            run.received.append(
                max(c.received[number + 1] for c in consumers) - published
            )
            await asyncio.sleep(args.pause)
        used = cpu_seconds(feed.pid) - cpu
        if hook:
            hook("ticks", feed, run)
        await wait_all(consumers, "protocol", lambda c: c.protocol, args.timeout)
        run.protocol = ",".join(sorted({c.protocol for c in consumers}))
        run.hub_cpu_us = used / (k * args.pairs * len(data.tick_dates)) * 1e6
        memory = proc_status(feed.pid)
        run.hub_rss, run.hub_peak = memory.get("VmRSS"), memory.get("VmHWM")
        readings = [proc_status(c.process.pid) for c in consumers]
        run.consumer_rss = readings[0].get("VmRSS")
        run.process_rss = [r.get("VmRSS") for r in readings]
    finally:
        await stop_consumers(consumers)
        await asyncio.gather(*readers, return_exceptions=True)
        await feed.close()
    run.ticks_held = sum(c.done or 0 for c in consumers)
    run.ticks_expected = k * len(data.tick_dates)
    return run


### Modes


def wanted_modes(text: str) -> list[str]:
    """raw,freqtrade,native -> raw-freqtrade, freqtrade, raw-native, native."""
    words = {word.strip() for word in text.split(",") if word.strip()}
    known = {"raw", "freqtrade", "native", "raw-freqtrade", "raw-native"}
    if not words or words - known:
        raise SystemExit(
            f"--modes: unknown {', '.join(sorted(words - known)) or 'empty list'}; "
            "give a comma-separated list of raw, freqtrade, native"
        )
    formats = [f for f in ("freqtrade", "native") if f in words]
    if "raw" in words and not formats:
        formats = ["freqtrade", "native"]
    modes = []
    for form in ("freqtrade", "native"):
        if ("raw" in words and form in formats) or f"raw-{form}" in words:
            modes.append(f"raw-{form}")
        if form in words:
            modes.append(form)
    return modes


async def collect(ws, quiet: float, timeout: float) -> list[str | bytes]:
    """Messages until ``quiet`` seconds pass without one (after the first)."""
    messages = [await asyncio.wait_for(ws.recv(), timeout)]
    while True:
        try:
            messages.append(await asyncio.wait_for(ws.recv(), quiet))
        except TimeoutError:
            return messages


async def record(
    setup: HubSetup, data: BenchData, args: argparse.Namespace, mode: str
) -> Path:
    """What a hub sends one client of ``mode``: its opening replies, each tick.

    The raw server replays exactly these bytes, so raw and hub rows of the table
    move the same messages. The client's requests are a real ProducerClient's.
    """
    from controlplane.lib.contracts import ConsumerSettings, Follow
    from controlplane.lib.feedclient.client import ProducerClient
    from controlplane.lib.feedclient.framestore import FrameStore

    form = mode.removeprefix("raw-")
    path = args.tmp / f"{mode}.pickle"
    follow = Follow("bench", "candlecast", "127.0.0.1", 0, False, setup.feed_token)
    settings = ConsumerSettings(initial_candle_limit=args.rows)
    client = ProducerClient(follow, settings, FrameStore(), native=form == "native")
    requests = client.opening_requests()
    # What the client offers, so raw-native replays what native mode gets (+zstd).
    subprotocols = (
        [f"{NATIVE_PROTOCOL}+zstd", NATIVE_PROTOCOL] if form == "native" else None
    )
    feed = HubFeed(setup, data, args, f"record-{form}")
    port = await feed.open()
    try:
        async with connect(
            f"ws://127.0.0.1:{port}/api/v1/message/ws",
            additional_headers=follow.headers(),
            subprotocols=subprotocols,
            compression=None,
            max_size=None,
        ) as ws:
            for text in requests:
                await ws.send(text)
            opening = await collect(ws, 2.0, args.timeout)
            ticks = []
            for number in range(len(data.tick_dates)):
                await feed.tick(number)
                ticks.append(await collect(ws, 1.0, args.timeout))
            negotiated = ws.subprotocol
    finally:
        await feed.close()
    recording = {
        "subprotocol": negotiated,
        "requests": len(requests),
        "opening": opening,
        "ticks": ticks,
    }
    path.write_bytes(pickle.dumps(recording))
    sizes = {len(messages) for messages in ticks}
    if len(sizes) != 1:
        raise BenchError(
            f"the hub sent {sorted(sizes)} messages per tick in {form} mode; the "
            "consumers count a constant number: publish fewer pairs or columns"
        )
    return path, sizes.pop()


async def bench(args: argparse.Namespace) -> list[Run]:
    modes = wanted_modes(args.modes)
    print(f"analysing {args.pairs} pairs x {args.rows + args.ticks} rows ...")
    data = fanout_data.analyse(args.pairs, args.rows, args.ticks)
    print(f"{data.columns} columns per frame (the sample strategy's)")
    setup = set_up_hub(args.tmp, data)
    args.feed_token = setup.feed_token
    runs, recordings = [], {}
    for k in args.consumers:  # K by K: each K's rows and ratios complete early
        for mode in modes:
            clients = plan(k, args.processes)
            print(f"{mode}, K={k} ({'+'.join(map(str, clients))} clients per process)")
            try:
                runs.append(await run_mode(setup, data, args, mode, k, recordings))
                print(f"  {'  '.join(runs[-1].cells()[3:])}", flush=True)
                write_json(args, runs)
            except (BenchError, OSError, TimeoutError) as exc:
                note = f"failed: {exc or type(exc).__name__}"
                runs.append(Run(mode, args.server, k, clients, note=note))
                print(f"  {note}", flush=True)
    return runs


async def run_mode(
    setup: HubSetup, data: BenchData, args, mode: str, k: int, recordings: dict
) -> Run:
    form = mode.removeprefix("raw-")
    if mode.startswith("raw-") and form not in recordings:
        recordings[form] = await record(setup, data, args, mode)
    if mode.startswith("raw-"):
        feed = RawFeed(recordings[form][0], args.tmp, f"{mode}-{k}")
    else:
        feed = HubFeed(setup, data, args, f"{mode}-{k}")
    # The messages one tick brings each client: one per pair in FreqTrade's
    # protocol, one for all pairs in the native one (as recorded, when it was).
    default = args.pairs if form == "freqtrade" else 1
    per_tick = recordings[form][1] if form in recordings else default
    return await measure(feed, mode, k, data, args, per_tick)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--consumers", default="1,10,50,100", help="the K values (default 1,10,50,100)")
    add("--pairs", type=int, default=100)
    add("--rows", type=int, default=1500, help="history rows per pair (at most 1500)")
    add("--ticks", type=int, default=20, help="candles published one at a time")
    add("--modes", default="raw,freqtrade,native")
    add("--server", choices=("daphne", "uvicorn"), default="daphne")
    add("--processes", type=int, default=10, help="consumer processes at most")
    add("--redis", default=None, help="a Redis URL: the hub uses channels-redis")
    add("--pause", type=float, default=0.2, help="seconds between ticks")
    add("--timeout", type=float, default=300.0, help="seconds to wait for a step")
    add("--markdown", type=Path, help="also write the table here (markdown)")
    add("--json", type=Path, help="also write every figure here (JSON)")
    args = parser.parse_args()
    try:
        args.consumers = [int(k) for k in args.consumers.split(",")]
    except ValueError:
        parser.error("--consumers takes a comma-separated list of numbers, like 1,10")
    if min(args.consumers) < 1 or args.pairs < 1 or args.ticks < 1:
        parser.error("--consumers, --pairs and --ticks must be at least 1")
    if not 1 <= args.rows <= 1500:
        parser.error("--rows must be from 1 to 1500 (the hub keeps 1500 per pair)")
    if (
        args.server == "uvicorn"
        and shutil.which("uvicorn", path=Path(sys.executable).parent) is None
    ):
        parser.error(
            "--server uvicorn: uvicorn is not installed in this venv "
            "(.venv/bin/pip install 'uvicorn[standard]')"
        )
    return args


def interrupted(signum: int, frame) -> None:
    # SIGTERM as Ctrl-C: each run's finally stops its hub and consumer processes.
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, interrupted)
    with tempfile.TemporaryDirectory(prefix="cc-fanout-") as tmp:
        args.tmp = Path(tmp)
        started = time.monotonic()
        runs = asyncio.run(bench(args))
        print_report(runs, args)
        print(f"(benchmark took {time.monotonic() - started:.0f} s)")
        if any(run.note.startswith("failed") for run in runs):
            print(f"logs of the failed runs:\n{tail_logs(args.tmp)}")
    if args.markdown:
        args.markdown.write_text(markdown_table(runs, args))
    write_json(args, runs)
    return 1 if any(run.note.startswith("failed") for run in runs) else 0


def write_json(args: argparse.Namespace, runs: list[Run]) -> None:
    """Every figure so far (after each run: a long run's partial results survive)."""
    if args.json:
        figures = {"args": vars_json(args), "runs": [asdict(run) for run in runs]}
        args.json.write_text(json.dumps(figures, indent=1))


def tail_logs(tmp: Path) -> str:
    return "\n".join(
        f"----- {path.name}\n{path.read_text()[-3000:]}"
        for path in sorted(tmp.glob("*.log"))
        if path.stat().st_size
    )


def vars_json(args: argparse.Namespace) -> dict:
    hidden = ("feed_token", "tmp")
    return {
        k: str(v) if isinstance(v, Path) else v
        for k, v in vars(args).items()
        if k not in hidden
    }


if __name__ == "__main__":
    sys.exit(main())
