"""What a flood of bad feed handshakes costs the hub, and a legitimate consumer.

Run from the repository root: ``python benchmarks/bench_throttle.py [--bad 2000]
[--concurrency 20] [--legit 200] [--interval 0.05]
[--kinds fresh,repeated,malformed] [--before REF]``. It starts a real hub
(``runhub``, embedded default: SQLite, in-memory layer) with one producer and one
valid feed token, then, for each kind of bad token, floods the feed from loopback
with ``--bad`` refused handshakes at full rate (a separate process, so the flood's
client CPU is not the hub's) while this process opens and closes a legitimate feed
socket every ``--interval`` s for as long as the flood lasts. Kinds: ``fresh`` (a new
well-formed random ``ccf_`` token each time, the worst case: each needs its
database lookup), ``repeated`` (one wrong token over and over) and ``malformed``
(not a candlecast token at all).

It prints the hub's CPU (utime + stime from /proc/PID/stat) per bad handshake, and
the legitimate handshake's latency (p50, p99) without a flood and under each kind,
side by side. With ``--before REF`` (a commit, e.g. ``main``) it also starts REF's
hub, from a ``git archive`` of it in a temporary folder, and runs every phase on
REF's hub and then on this tree's, alternately, so both tables come from one run on
the same machine load. Figures, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import InvalidStatus  # noqa: E402

from tests.processes import Stack  # noqa: E402

SETUP = """
import json
from producers.models import FeedToken, Producer
producer = Producer.objects.create(name="throttle", pairs=["BTC/USDT"])
print(json.dumps({"token": FeedToken.issue(producer, "legitimate consumer")[1]}))
"""
KINDS = ("fresh", "repeated", "malformed")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


### The flood: a process of its own


def bad_token(kind: str, repeated: str) -> str:
    if kind == "fresh":
        return f"ccf_{secrets.token_urlsafe(32)}"
    if kind == "repeated":
        return repeated
    return secrets.token_hex(16)  # not ours: refused without a lookup


async def flood(url: str, kind: str, count: int, concurrency: int) -> None:
    """``count`` refused handshakes, ``concurrency`` at a time; prints the tally."""
    repeated = f"ccf_{secrets.token_urlsafe(32)}"
    tally: dict[str, int] = {}
    todo = iter(range(count))

    async def one_after_another() -> None:
        for _ in todo:
            try:
                async with connect(
                    f"{url}?token={bad_token(kind, repeated)}", open_timeout=60
                ):
                    outcome = "accepted"
            except InvalidStatus as refused:
                outcome = str(refused.response.status_code)
            except (OSError, TimeoutError) as exc:
                outcome = type(exc).__name__
            tally[outcome] = tally.get(outcome, 0) + 1

    started = time.monotonic()
    await asyncio.gather(*(one_after_another() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    print(f"FLOOD {elapsed:.3f} {' '.join(f'{k}={v}' for k, v in tally.items())}")


### The legitimate consumer


async def legit_handshake(url: str, token: str) -> float:
    """Seconds from connecting to an open feed socket (then closed again)."""
    started = time.perf_counter()
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}):
        opened = time.perf_counter()
    return opened - started


async def legit_until(
    url: str, token: str, done: asyncio.Event, interval: float
) -> list[float]:
    """Handshakes every ``interval`` s until ``done``: paced, so that the flood's
    CPU, not the consumer's, is what the hub spends."""
    latencies = []
    while not done.is_set():
        latencies.append(await legit_handshake(url, token))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), interval)
    return latencies


@dataclass
class Phase:
    name: str
    latencies: list[float]
    bad: int = 0
    cpu_per_bad: float | None = None  # seconds
    seconds: float = 0.0
    tally: str = ""


async def baseline(url: str, token: str, count: int, hub: int) -> tuple[Phase, float]:
    """Legitimate handshakes alone; returns the phase and hub CPU per handshake."""
    for _ in range(10):  # warm up: imports, connections, caches
        await legit_handshake(url, token)
    cpu = cpu_seconds(hub)
    latencies = [await legit_handshake(url, token) for _ in range(count)]
    return Phase("no flood", latencies), (cpu_seconds(hub) - cpu) / count


async def under_flood(
    url: str, token: str, kind: str, args: argparse.Namespace, hub: int, legit: float
) -> Phase:
    cpu = cpu_seconds(hub)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--flood",
        kind,
        "--url",
        url,
        "--bad",
        str(args.bad),
        "--concurrency",
        str(args.concurrency),
        stdout=subprocess.PIPE,
    )
    done = asyncio.Event()
    measuring = asyncio.create_task(legit_until(url, token, done, args.interval))
    out, _ = await process.communicate()
    done.set()
    latencies = await measuring
    seconds = time.monotonic() - started
    used = cpu_seconds(hub) - cpu - legit * len(latencies)
    line = out.decode().strip().splitlines()[-1].split(maxsplit=2)
    return Phase(
        f"flood: {kind}",
        latencies,
        bad=args.bad,
        cpu_per_bad=used / args.bad,
        seconds=seconds,
        tally=line[2] if len(line) > 2 else "",
    )


def report(phases: list[Phase], legit_cpu: float, args: argparse.Namespace) -> None:
    print(
        f"\nhub: runhub (Daphne), SQLite, in-memory layer; flood {args.bad} bad "
        f"handshakes per kind, {args.concurrency} at a time, from 127.0.0.1; hub CPU "
        f"per legitimate handshake {legit_cpu * 1e3:.2f} ms"
    )
    header = (
        f"{'phase':<18}{'legit n':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'hub CPU/bad ms':>16}{'bad/s':>8}  refusals"
    )
    print(header)
    print("-" * len(header))
    for p in phases:
        cpu = f"{p.cpu_per_bad * 1e3:.2f}" if p.cpu_per_bad is not None else "-"
        rate = f"{p.bad / p.seconds:.0f}" if p.seconds else "-"
        print(
            f"{p.name:<18}{len(p.latencies):>8}"
            f"{percentile(p.latencies, 0.5) * 1e3:>9.1f}"
            f"{percentile(p.latencies, 0.99) * 1e3:>9.1f}"
            f"{cpu:>16}{rate:>8}  {p.tally}"
        )


@dataclass
class Hub:
    tree: str  # "this tree", or the --before commit
    url: str
    token: str
    pid: int
    legit_cpu: float = 0.0
    phases: list[Phase] = field(default_factory=list)


def start_hub(tree: str, stack: Stack) -> Hub:
    token = stack.setup(SETUP)["token"]
    return Hub(tree, stack.feed_url, token, stack.hub().pid)


async def bench(args: argparse.Namespace, stacks: dict[str, Stack]) -> None:
    hubs = [start_hub(tree, stack) for tree, stack in stacks.items()]
    for hub in hubs:
        first, hub.legit_cpu = await baseline(hub.url, hub.token, args.legit, hub.pid)
        hub.phases.append(first)
    for kind in args.kinds:
        for hub in hubs:
            hub.phases.append(
                await under_flood(
                    hub.url, hub.token, kind, args, hub.pid, hub.legit_cpu
                )
            )
            await asyncio.sleep(1)  # let the hubs settle between floods
    for hub in hubs:
        print(f"\n== {hub.tree}")
        report(hub.phases, hub.legit_cpu, args)
    if len(hubs) == 2:
        compare(*hubs)


def compare(before: Hub, after: Hub) -> None:
    """Each phase's figures, REF's beside this tree's, with the ratio."""
    print(f"\n== {before.tree} -> {after.tree} (ratio: before / after)")
    header = (
        f"{'phase':<18}{'hub CPU/bad ms':>24}{'legit p50 ms':>24}{'legit p99 ms':>24}"
    )
    print(header)
    print("-" * len(header))

    def cell(old: float | None, new: float | None) -> str:
        if old is None or new is None:
            return f"{'-':>24}"
        ratio = f"{old / new:.1f}x" if new > 0 else "-"
        return f"{f'{old:.2f} -> {new:.2f} ({ratio})':>24}"

    for old, new in zip(before.phases, after.phases, strict=True):
        cpu = [
            p.cpu_per_bad * 1e3 if p.cpu_per_bad is not None else None
            for p in (old, new)
        ]
        p50 = [percentile(p.latencies, 0.5) * 1e3 for p in (old, new)]
        p99 = [percentile(p.latencies, 0.99) * 1e3 for p in (old, new)]
        print(f"{old.name:<18}{cell(*cpu)}{cell(*p50)}{cell(*p99)}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bad", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--legit", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--kinds", default=",".join(KINDS), type=lambda v: v.split(","))
    parser.add_argument(
        "--before",
        metavar="REF",
        help="also run REF's hub (a git commit), phase by phase beside this tree's",
    )
    parser.add_argument("--flood", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.flood:
        asyncio.run(flood(args.url, args.flood, args.bad, args.concurrency))
        return 0
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        print(f"unknown --kinds {', '.join(sorted(unknown))}: use {', '.join(KINDS)}")
        return 2
    os.environ.pop("REDIS_URL", None)  # the embedded default
    os.environ.pop("DATABASE_URL", None)
    with tempfile.TemporaryDirectory(prefix="bench-throttle-") as folder:
        stacks = {}
        for name in ("before", "after"):
            (Path(folder) / name).mkdir()
        if args.before:
            stacks[args.before] = Stack(
                Path(folder) / "before", root=extract(args.before, Path(folder))
            )
        stacks["this tree"] = Stack(Path(folder) / "after")
        try:
            asyncio.run(bench(args, stacks))
        finally:
            for stack in stacks.values():
                stack.close()
    return 0


def extract(ref: str, folder: Path) -> Path:
    """A copy of commit ``ref``'s files (git archive), for its hub to run from."""
    tree = folder / "before-tree"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", ref], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


if __name__ == "__main__":
    sys.exit(main())
