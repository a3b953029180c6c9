"""The consumer side, measured on real processes: load time, memory, reconnects.

Run from the repository root: ``python benchmarks/bench_consumer.py [--pairs 100]
[--rows 1500] [--skip-freqtrade]``. Starts a hub and a producer worker (tests'
Stack), then our consumer worker and FreqTrade 2026.9's own consumer against the same
feed, and prints their figures side by side, then kills and restarts the hub and
prints the consumer's reconnect timeline. Figures, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import connect  # noqa: E402

from controlplane.lib.wire import freqtrade  # noqa: E402
from tests import processes  # noqa: E402
from tests.processes import ROOT, Stack  # noqa: E402

MIB = 1 << 20
FEED_LIMIT = 1500  # what both consumers ask for first: the hub caches this reply
SETUP = """
import json
from consumers.models import Consumer, Follow
from producers.models import FeedToken, Producer
producer = Producer.objects.create(
    name="bench", pairs={pairs!r}, timeframe="5m", history={rows},
    source_options={{"seed": 11, "seconds_per_candle": {spc}}},
)
consumer = Consumer.objects.create(name="bench", sleep_time={sleep})
Follow.objects.create(consumer=consumer, name="default", producer=producer)
print(json.dumps({{
    "producer_key": producer.issue_key(),
    "consumer_key": consumer.issue_key(),
    "probe_token": FeedToken.issue(producer, "bench probe")[1],
    "freqtrade_token": FeedToken.issue(producer, "bench: FreqTrade consumer")[1],
}}))
"""
LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ ([\w.]+): (.*)$", re.MULTILINE
)
FREQTRADE_LINE = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - .*"
# websockets.client: the producer worker's own reconnect attempts.
TIMELINE_LOGGERS = (
    "controlplane.lib.feedclient.client",
    "consumers.worker",
    "producers.worker",
    "websockets.client",
)

Figures = list[tuple[str, str, str]]  # (figure, candlecast, FreqTrade)


class BenchError(Exception):
    """Something the benchmark waited for did not happen; the text says what."""


### /proc readings


class Memory(NamedTuple):
    rss: int  # bytes resident (VmRSS), shared library pages included
    hwm: int  # bytes, peak RSS so far (VmHWM)
    anon: int  # bytes of the process's own memory (RssAnon): heap, frames


class Sample(NamedTuple):
    at: float  # time.time()
    memory: Memory
    cpu: float  # user + system seconds so far
    marked: bool  # the sampler's marker file existed


def memory(pid: int) -> Memory | None:
    """None once the process is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    if "VmRSS" not in fields:
        return None
    kib = [int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM", "RssAnon")]
    return Memory(*(value << 10 for value in kib))


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample(pid: int, marker: Path | None = None) -> Sample | None:
    found = memory(pid)
    if found is None:
        return None
    marked = marker is not None and marker.exists()
    return Sample(time.time(), found, cpu_seconds(pid), marked)


class Sampler(threading.Thread):
    """Samples a process every ``interval`` seconds until it ends or stop()."""

    def __init__(self, pid: int, interval: float, marker: Path | None = None) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.marker = pid, interval, marker
        self.samples: list[Sample] = []
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            found = sample(self.pid, self.marker)
            if found is None:
                return
            self.samples.append(found)
            self._stopped.wait(self.interval)

    def stop(self) -> list[Sample]:
        self._stopped.set()
        self.join()
        return self.samples


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f} MiB"


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def rss_text(reading: Sample | Memory | None) -> str:
    if reading is None:
        return "n/a (process gone)"
    found = reading.memory if isinstance(reading, Sample) else reading
    return f"{mib(found.rss)} (anon {mib(found.anon)}, peak {mib(found.hwm)})"


### Logs


def log_lines(text: str) -> list[tuple[float, str, str]]:
    """(epoch seconds, logger, message) of every line of our logging format."""
    return [
        (datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f").timestamp(), name, message)
        for s, name, message in LINE.findall(text)
    ]


def first_after(text: str, needle: str, after: float) -> float | None:
    """When the first line containing ``needle`` was logged at or after ``after``."""
    for at, _, message in log_lines(text):
        if at >= after - 0.001 and needle in message:
            return at
    return None


def wait_for(what: str, found: Callable[[], object], timeout: float) -> object:
    """Poll ``found()`` every 50 ms until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while not (result := found()):
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)
    return result


### The stack


def set_up(stack: Stack, args: argparse.Namespace) -> dict[str, str]:
    stack.manage("migrate")
    pairs = [f"C{index:03d}/USDT" for index in range(args.pairs)]
    code = SETUP.format(
        pairs=pairs, rows=args.rows, spc=args.seconds_per_candle, sleep=args.sleep_time
    )
    secrets = stack.python(code)
    (stack.tmp / "producer.key").write_text(secrets["producer_key"])
    (stack.tmp / "consumer.key").write_text(secrets["consumer_key"])
    return secrets


def start_producer(stack: Stack, args: argparse.Namespace) -> float:
    """Start the hub and the producer worker; returns when the history was in."""
    stack.start_hub()
    key = str(stack.tmp / "producer.key")
    started = time.time()
    stack.start(
        "producer", "runproducer", "bench", env={"CANDLECAST_PRODUCER_KEY_FILE": key}
    )
    needle = f"published {args.rows} rows of history for {args.pairs} pairs"
    wait_for(
        "the producer publishing its history",
        lambda: first_after(stack.log("producer"), needle, started),
        600,
    )
    return time.time() - started


async def probe(url: str, pairs: int, rows: int) -> tuple[float, int, int]:
    """Every pair's frame, limit 1500, as a plain client: (seconds, bytes, columns).

    The first such request makes the hub encode and cache each reply, so both
    consumers measured afterwards are served from the cache, as later ones are.
    """
    started = time.monotonic()
    size = columns = 0
    async with connect(url, max_size=64 * MIB) as ws:
        request = {"limit": FEED_LIMIT, "pair": None}
        await ws.send(json.dumps({"type": "analyzed_df", "data": request}))
        for _ in range(pairs):
            message = freqtrade.decode_message(await asyncio.wait_for(ws.recv(), 30))
            df = message["data"]["df"]
            if len(df) != min(rows, FEED_LIMIT):
                key = message["data"]["key"][0]
                raise BenchError(f"the hub holds {len(df)} rows of {key}, not {rows}")
            size += int(df.memory_usage(deep=True).sum())
            columns = len(df.columns)
    return time.monotonic() - started, size, columns


### Our consumer worker


def start_consumer(stack: Stack) -> tuple[subprocess.Popen, float]:
    key = str(stack.tmp / "consumer.key")
    started = time.time()
    process = stack.start(
        "consumer", "runconsumer", "bench", env={"CANDLECAST_CONSUMER_KEY_FILE": key}
    )
    return process, started


def consumer_load(stack: Stack, args: argparse.Namespace, figures: Figures) -> float:
    """Start runconsumer; time and weigh it until all pairs are loaded."""
    process, started = start_consumer(stack)
    sampler = Sampler(process.pid, 0.05)
    sampler.start()
    needle = f"all {args.pairs} pairs loaded"
    loaded = wait_for(
        "the consumer loading every pair",
        lambda: first_after(stack.log("consumer"), needle, started),
        300,
    )
    at_load = sample(process.pid)
    samples = sampler.stop()
    connected = first_after(stack.log("consumer"), "default: connected to", started)
    before = [s for s in samples if s.at <= (connected or 0)]
    at_connect = before[-1] if before else None
    loading_cpu = at_load.cpu - at_connect.cpu if at_load and at_connect else None
    figures += [
        ("process start -> all pairs loaded", f"{loaded - started:.2f} s", ""),
        ("connect -> all pairs loaded", f"{loaded - connected:.2f} s", "n/a"),
        ("RSS at connect (imports, no frames)", rss_text(at_connect), ""),
        ("RSS when all pairs loaded", rss_text(at_load), ""),
        ("CPU time at load (user+sys)", seconds(at_load and at_load.cpu), ""),
        ("CPU time from connect to load", seconds(loading_cpu), "n/a"),
    ]
    return loaded


def consumer_steady(
    stack: Stack, args: argparse.Namespace, loaded: float, figures: Figures
) -> None:
    """RSS every 10 s until ``args.steady`` after the load: does it keep growing?"""
    pid, series = stack.processes["consumer"].pid, []
    while (left := loaded + args.steady - time.time()) > 0:
        time.sleep(min(10.0, left))
        series.append(memory(pid))
    series = series or [memory(pid)]
    figures += [
        (f"RSS {args.steady:.0f} s after load", rss_text(series[-1]), ""),
        (
            "  anon RSS every 10 s after load",
            ", ".join(mib(m.anon) for m in series if m),
            "",
        ),
    ]


### FreqTrade's consumer


def freqtrade_python() -> str:
    try:
        return processes.freqtrade_python()
    except RuntimeError as exc:
        raise BenchError(
            f"{exc}\nrun scripts/freqtrade-venv by hand to see why, or pass "
            "--skip-freqtrade"
        ) from None


def run_freqtrade(
    stack: Stack, args: argparse.Namespace, python: str, token: str
) -> tuple[float, list[Sample], Path]:
    """Run the harness to full load while sampling it; (spawn time, samples, out)."""
    out = stack.tmp / "freqtrade-out"
    command = [python, str(ROOT / "tests" / "interop" / "freqtrade_consumer.py")]
    command += ["--port", str(stack.port), "--token", token, "--timeout", "180"]
    command += ["--expect-pairs", str(args.pairs), "--min-rows", str(args.rows)]
    command += ["--out", str(out)]
    with open(stack.tmp / "freqtrade.log", "w") as log:
        started = time.time()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        sampler = Sampler(process.pid, 0.2, marker=out)
        sampler.start()
        try:
            code = process.wait(240)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    samples = sampler.stop()
    if code != 0:
        text = (stack.tmp / "freqtrade.log").read_text()[-3000:]
        raise BenchError(f"FreqTrade's consumer exited with {code}:\n{text}")
    return started, samples, out


def freqtrade_figures(
    stack: Stack, started: float, samples: list[Sample], out: Path
) -> dict[str, str]:
    """Its own stages plus what the samples say before it began writing files."""
    stages = json.loads((out / "meta.json").read_text())["stages_s"]
    log = (stack.tmp / "freqtrade.log").read_text()
    # Its stages count from just before "Starting ExternalMessageConsumer", after
    # FreqTrade's imports; that line's time places them on our clock.
    origin = freqtrade_logged(log, "Starting ExternalMessageConsumer")
    connected = freqtrade_logged(log, "Connected to channel")
    loading = [s for s in samples if not s.marked]
    at_load = loading[-1] if loading else None
    imported = [s for s in samples if origin and s.at <= origin]
    loaded = origin and origin + stages["full_load"]
    # Includes the 1 s it sleeps between its opening requests (PROTOCOL-freqtrade 8.2).
    after_connect = loaded and connected and seconds(loaded - connected)
    return {
        "process start -> all pairs loaded": seconds(loaded and loaded - started),
        "connect -> all pairs loaded": after_connect or "n/a",
        "RSS at connect (imports, no frames)": rss_text(
            imported[-1] if imported else None
        ),
        "stages_s (from its start, after imports)": ", ".join(
            f"{k} {v:.2f} s" for k, v in stages.items()
        ),
        "RSS when all pairs loaded": rss_text(at_load),
        "RSS peak while loading (0.2 s polls)": mib(
            max((s.memory.rss for s in loading), default=None)
        ),
        "CPU time at load (user+sys)": seconds(at_load and at_load.cpu),
    }


def freqtrade_logged(log: str, needle: str) -> float | None:
    """When FreqTrade first logged a line containing ``needle`` (epoch seconds)."""
    found = re.search(FREQTRADE_LINE + re.escape(needle), log, re.MULTILINE)
    if found is None:
        return None
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def side_by_side(figures: Figures, theirs: dict[str, str]) -> None:
    for index, (name, ours, _) in enumerate(figures):
        if name in theirs:
            figures[index] = (name, ours, theirs.pop(name))
    figures += [(name, "", value) for name, value in theirs.items()]


### The reconnect timeline


def kill_and_restart(stack: Stack, args: argparse.Namespace) -> list[tuple]:
    """SIGKILL the hub, restart it on its port; the events (epoch, who, text)."""
    killed = time.time()
    stack.stop("hub", signal.SIGKILL)
    events = [(killed, "bench", "hub SIGKILLed")]
    time.sleep(max(0.0, killed + args.outage - time.time()))
    events.append((time.time(), "bench", "hub restarting on the same port"))
    stack.start_hub("hub-restarted")
    events.append((time.time(), "bench", "hub answers HTTP again"))
    loaded = f"all {args.pairs} pairs loaded"
    republished = f"published {args.rows} rows of history"
    wait_for(
        "the consumer loading every pair again after the restart",
        lambda: (
            first_after(stack.log("consumer"), loaded, killed)
            and first_after(stack.log("producer"), republished, killed)
        ),
        300,
    )
    return events


def timeline(stack: Stack, events: list[tuple]) -> list[str]:
    killed = events[0][0]
    for who in ("consumer", "producer"):
        events += [
            (at, who, message)
            for at, name, message in log_lines(stack.log(who))
            if at >= killed - 0.001 and name in TIMELINE_LOGGERS
        ]
    return [
        f"  {at - killed:+8.2f} s  {who:<8}  {text[:110]}"
        for at, who, text in sorted(events, key=lambda event: event[0])
    ]


def summary(stack: Stack, args: argparse.Namespace, events: list[tuple]) -> str:
    """The moments that matter, relative to the kill, on one line."""
    killed, answered = events[0][0], events[-1][0]
    steps = {
        "consumer connected": ("consumer", "default: connected to"),
        "producer republished": ("producer", f"published {args.rows} rows of history"),
        "consumer loaded": ("consumer", f"all {args.pairs} pairs loaded"),
    }
    found = [
        (step, first_after(stack.log(who), needle, killed))
        for step, (who, needle) in steps.items()
    ]
    return f"  summary: hub answering +{answered - killed:.2f} s, " + ", ".join(
        f"{step} +{at - killed:.2f} s" if at else f"{step} never" for step, at in found
    )


### Report


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def print_report(
    args: argparse.Namespace, head: list[str], figures: Figures, lines: list[str]
) -> None:
    print("\n".join(head))
    width = max(len(name) for name, _, _ in figures) + 2
    print(f"\n  {'figure':<{width}}{'candlecast':<40}FreqTrade 2026.9")
    for name, ours, theirs in figures:
        print(f"  {name:<{width}}{ours:<40}{theirs}")
    print(f"\nreconnect timeline (relative to the kill, outage {args.outage:g} s):")
    print("\n".join(lines))


def say(text: str) -> None:
    print(f"bench_consumer: {text}", file=sys.stderr, flush=True)


def prepare(stack: Stack, args: argparse.Namespace) -> tuple[dict, list[str]]:
    """Hub and producer up, the hub's cache warm; the secrets and the head lines."""
    load_start = load_average()
    say(f"producer of {args.pairs} pairs x {args.rows} rows: analysing, publishing")
    secrets = set_up(stack, args)
    published = start_producer(stack, args)
    feed = f"{stack.feed_url}?token={secrets['probe_token']}"
    probe_s, size, columns = asyncio.run(probe(feed, args.pairs, args.rows))
    store = "Redis (REDIS_URL)" if os.environ.get("REDIS_URL") else "in-process"
    return secrets, [
        f"\ncandlecast consumer benchmark: {args.pairs} pairs x {args.rows} rows x "
        f"{columns} columns, {os.cpu_count()} CPUs, {store} snapshot store, load "
        f"average {load_start} (start)",
        f"producer worker: analysed and published the history in {published:.1f} s",
        f"hub: first analyzed_df reply for every pair (cold cache, plain client, "
        f"decoded): {probe_s:.2f} s; the frames' own size once decoded "
        f"(memory_usage deep): {mib(size)}",
    ]


def bench(stack: Stack, args: argparse.Namespace) -> None:
    ft_python = None if args.skip_freqtrade else freqtrade_python()
    secrets, head = prepare(stack, args)
    hub = {"history in, cache warm": memory(stack.processes["hub"].pid)}
    figures: Figures = []
    say("our consumer worker: loading")
    loaded = consumer_load(stack, args, figures)
    hub["our consumer loaded"] = memory(stack.processes["hub"].pid)
    say(f"our consumer worker: steady state for {args.steady:g} s")
    consumer_steady(stack, args, loaded, figures)
    if ft_python:
        say("FreqTrade's consumer: loading")
        theirs = run_freqtrade(stack, args, ft_python, secrets["freqtrade_token"])
        side_by_side(figures, freqtrade_figures(stack, *theirs))
    hub["steady state (+FreqTrade)"] = memory(stack.processes["hub"].pid)
    say("killing the hub, restarting it")
    events = kill_and_restart(stack, args)
    lines = [*timeline(stack, list(events)), summary(stack, args, events)]
    consumer = memory(stack.processes["consumer"].pid)
    hub["restarted, reloaded"] = memory(stack.processes["hub-restarted"].pid)
    figures.append(("RSS after the reconnect reload", rss_text(consumer), ""))
    figures += [
        (f"hub RSS: {when}", rss_text(found), "") for when, found in hub.items()
    ]
    head.append(f"load average at the end: {load_average()}")
    print_report(args, head, figures, lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--pairs", type=int, default=100)
    add("--rows", type=int, default=1500, choices=range(1, 1501), metavar="1..1500")
    add("--seconds-per-candle", type=float, default=20.0, help="synthetic clock")
    add("--sleep-time", type=int, default=10, help="the consumer's sleep_time")
    add("--steady", type=float, default=30.0, help="seconds of steady state")
    add("--outage", type=float, default=6.0, help="seconds without a hub")
    add("--skip-freqtrade", action="store_true")
    add("--keep", action="store_true", help="keep the logs and the database")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    # SIGTERM ends the run as Ctrl-C does, so the finally below stops every process
    # (SIGINT too when started in the background, where it is inherited ignored).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="bench-consumer-"))
    stack = Stack(tmp)
    try:
        bench(stack, args)
        return 0
    except (BenchError, AssertionError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or ""
        say(f"{exc}\n{detail}\n{stack.logs()}")
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
