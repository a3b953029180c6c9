"""End to end: two named producer workers share one producer's pairs (the pool); one
is killed with SIGKILL, the other takes its pairs over, and every consumer ends with
every candle, no hole, equal to the hub. With Redis (scale-out) each worker and each
consumer uses its own hub process, so the two hubs must agree on the assignment
through the shared cache alone.

Prints the failover figures: from the kill to the new owner's history at the hub,
and to its first candle of all pairs.
"""

from __future__ import annotations

import re
import signal
import time
from datetime import datetime

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from tests.processes import Stack, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PAIRS = ["ADA/USDT", "BTC/USDT", "DOT/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]
HISTORY = 200
STEP = pd.Timedelta(minutes=5)
SETUP = f"""
import json
from consumers.models import Consumer, Follow
from producers.models import FeedToken, Producer
producer = Producer.objects.create(
    name="pool", pairs={PAIRS!r}, timeframe="5m", history={HISTORY},
    source_options={{"seed": 9, "seconds_per_candle": 1.5}},
)
keys = {{"producer": producer.issue_key()}}
keys["probe"] = FeedToken.issue(producer, "e2e probe")[1]
for name in ("one", "two"):
    consumer = Consumer.objects.create(name=name, sleep_time=1)
    Follow.objects.create(consumer=consumer, name="default", producer=producer)
    keys[name] = consumer.issue_key()
print(json.dumps(keys))
"""
STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
ASSIGNED = re.compile(STAMP + r".*the hub assigns this worker (\d) of 6 pairs", re.M)
HISTORY_SENT = re.compile(STAMP + r".*rows of history for (\d) pairs", re.M)
TICK = re.compile(
    STAMP + r".*candle (\S+ \S+) closed: published (\d) of (\d) pairs", re.M
)


def at(stamp: str) -> float:
    """A log line's time (the processes log local time, as this test reads it)."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def shares(stack: Stack, name: str) -> list[int]:
    return [int(m.group(2)) for m in ASSIGNED.finditer(stack.log(name))]


def ticks(stack: Stack, name: str, owned: int) -> list[re.Match]:
    """The worker's ticks while it owned ``owned`` pairs."""
    return [m for m in TICK.finditer(stack.log(name)) if int(m.group(4)) == owned]


def dumped(stack: Stack, name: str) -> dict[str, pd.DataFrame]:
    assert stack.stop(name) == 0, stack.log(name)
    folder = stack.tmp / name / "default"
    return {
        pair: pd.read_parquet(folder / f"{pair.replace('/', '_')}.parquet")
        for pair in PAIRS
    }


def assert_whole(frame: pd.DataFrame, what: str) -> None:
    steps = frame["date"].diff().dropna()
    holes = frame["date"][1:][steps != STEP]
    assert (steps == STEP).all(), f"{what}: a hole after {list(holes)}"


def test_it_moves_a_killed_workers_pairs_and_loses_no_candle(stack, redis_in_use):
    keys = stack.setup(SETUP)
    stack.hub()
    ports = [stack.port, stack.port]
    if redis_in_use:  # scale-out: a hub process per worker, agreeing via Redis
        ports[1] = free_port()
        stack.hub("hub2", ports[1])
    for name, port in zip(("a", "b"), ports, strict=True):
        stack.producer(
            "pool",
            keys["producer"],
            name=name,
            hub=port,
            workers=1,
            worker_name=f"worker-{name}",
        )
    for name, port in zip(("one", "two"), ports, strict=True):
        stack.consumer(name, keys[name], name=name, hub=port, dump=stack.tmp / name)
    stack.wait_until(
        "both workers publish 3 pairs each",
        lambda: len(ticks(stack, "a", 3)) >= 2 and len(ticks(stack, "b", 3)) >= 2,
        90,
    )
    assert shares(stack, "a")[-1] == shares(stack, "b")[-1] == 3

    stack.processes["a"].send_signal(signal.SIGKILL)
    killed = time.time()
    stack.processes["a"].wait(10)
    stack.wait_until("b takes all 6 pairs", lambda: 6 in shares(stack, "b"), 30)
    stack.wait_until(
        "three candles of all pairs from b", lambda: len(ticks(stack, "b", 6)) >= 3, 60
    )
    log = stack.log("b")
    # b may have held all 6 alone before a joined: its share after the kill is
    # the first 6 after its last 3.
    assigns = list(ASSIGNED.finditer(log))
    last_three = max(i for i, m in enumerate(assigns) if m.group(2) == "3")
    taken = next(m for m in assigns[last_three:] if m.group(2) == "6")
    history = next(
        m for m in HISTORY_SENT.finditer(log, taken.end()) if m.group(2) == "3"
    )
    first = ticks(stack, "b", 6)[0]
    print(
        f"\nfailover ({'scale-out, 2 hubs' if redis_in_use else 'embedded'}): "
        f"pairs reassigned {at(taken.group(1)) - killed:.2f} s after the kill, "
        f"history at the hub {at(history.group(1)) - killed:.2f} s, "
        f"first candle of all pairs {at(first.group(1)) - killed:.2f} s"
    )

    with stack.paused("b"):  # nothing new while the hub and the consumers are read
        time.sleep(1.0)  # the last broadcast reaches the consumers
        hub = stack.hub_frames(keys["probe"], len(PAIRS))
        one, two = dumped(stack, "one"), dumped(stack, "two")
    newest = max(frame["date"].iloc[-1] for frame in hub.values())
    lost = 0
    for pair in PAIRS:
        held = hub[pair]
        assert_whole(held, f"the hub's {pair}")
        assert held["date"].iloc[-1] == newest, f"the hub's {pair} is behind"
        for name, frames in (("one", one), ("two", two)):
            frame = frames[pair]
            assert_whole(frame, f"consumer {name}'s {pair}")
            lost += len(set(held["date"]) - set(frame["date"]))
            common = frame[frame["date"].isin(held["date"])].reset_index(drop=True)
            assert len(common) == len(held), f"{name} misses {pair} candles"
            assert_frame_equal(common, held, check_dtype=False, check_exact=True)
    print(f"candles lost: {lost}")
    assert lost == 0
