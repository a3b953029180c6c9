"""End to end: a producer worker analysing on 2 processes (``--workers 2``), one of
them killed with SIGKILL mid-run, and two consumer workers that end with every
candle, each row exactly what a single-process analysis computes."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from producers.sources import SyntheticSource
from producers.strategies.sample import SampleStrategy
from tests.processes import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]
HISTORY = 200
STEP = pd.Timedelta(minutes=5)
STATUS_TOKEN = "e2e-status-token"
SETUP = f"""
import json
from consumers.models import Consumer, Follow
from producers.models import Producer
producer = Producer.objects.create(
    name="e2e", pairs={PAIRS!r}, timeframe="5m", history={HISTORY},
    source_options={{"seed": 5, "seconds_per_candle": 1.5}},
)
keys = {{"producer": producer.issue_key()}}
for name in ("one", "two"):
    consumer = Consumer.objects.create(name=name, sleep_time=1)
    Follow.objects.create(consumer=consumer, name="default", producer=producer)
    keys[name] = consumer.issue_key()
print(json.dumps(keys))
"""
STARTED = re.compile(r"2 analysis processes started \(pids (\d+), (\d+)\)")
PUBLISHED = re.compile(r"candle (\S+ \S+) closed: published 4 of 4 pairs")


def expected_row(pair: str, date: pd.Timestamp, ticks: list) -> pd.DataFrame:
    """The pair's row for ``date`` as one process analysing alone computes it: in
    the window that ends with the newest candle of the tick that published it (a
    tick late by a replaced process carries two candles)."""
    newest = min(tick for tick in ticks if tick >= date)
    strategy = SampleStrategy()
    close = (newest + STEP).timestamp()
    source = SyntheticSource("5m", seed=5, clock=lambda: close)
    candles = source.history(pair, HISTORY + strategy.startup_candle_count)
    metadata = {"pair": pair, "timeframe": "5m", "candle_type": "spot"}
    analysed = strategy.analyze(candles, metadata)
    return analysed[analysed["date"] == date].reset_index(drop=True)


def on_dates(frame: pd.DataFrame, dates: set) -> pd.DataFrame:
    return frame[frame["date"].isin(dates)].reset_index(drop=True)


def candles_published(stack: Stack) -> list[str]:
    return PUBLISHED.findall(stack.log("producer"))


def dumped(stack: Stack, name: str) -> dict[str, pd.DataFrame]:
    assert stack.stop(name) == 0
    folder = stack.tmp / name / "default"
    return {
        pair: pd.read_parquet(folder / f"{pair.replace('/', '_')}.parquet")
        for pair in PAIRS
    }


def analysis_report(stack: Stack) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.port}/status.json",
        headers={"Authorization": f"Bearer {STATUS_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        snapshot = json.loads(response.read())
    return next(p for p in snapshot["producers"] if p["name"] == "e2e")["analysis"]


def test_it_loses_no_candle_when_an_analysis_process_is_killed(stack):
    keys = stack.setup(SETUP)
    stack.env["CANDLECAST_STATUS_TOKEN"] = STATUS_TOKEN
    stack.hub()
    stack.producer("e2e", keys["producer"], workers=2, history=True)
    for name in ("one", "two"):
        stack.consumer(name, keys[name], name=name, dump=stack.tmp / name)
    stack.wait_until(
        "two candles published", lambda: len(candles_published(stack)) >= 2
    )
    started = STARTED.search(stack.log("producer"))
    assert started, stack.log("producer")
    victim = int(started.group(2))
    os.kill(victim, signal.SIGKILL)
    stack.wait_log("producer", "analysis process 1 replaced")
    after_kill = len(candles_published(stack))
    stack.wait_until(
        "three more candles",
        lambda: len(candles_published(stack)) >= after_kill + 3,
        60,
    )
    report = analysis_report(stack)
    assert report["workers"] == 2
    assert [p["pairs"] for p in report["processes"]] == [
        ["BTC/USDT", "SOL/USDT"],
        ["ETH/USDT", "XRP/USDT"],
    ]
    replaced = report["processes"][1]
    assert replaced["restarts"] == 1 and replaced["pid"] not in (None, victim)
    log = stack.log("producer")
    assert "analysis process 1 (2 pairs) is gone: killed by signal 9 (SIGKILL)" in log
    published = candles_published(stack)
    ticks = [pd.Timestamp(candle, tz="UTC") for candle in published]
    first, last = ticks[0], ticks[-1]
    one, two = dumped(stack, "one"), dumped(stack, "two")
    for pair in PAIRS:
        for frame in (one[pair], two[pair]):
            assert frame["date"].iloc[-1] >= last
            steps = frame["date"].diff().dropna()
            holes = frame["date"][1:][steps != STEP]
            assert (steps == STEP).all(), f"{pair}: a hole after {holes}"
        # The consumer that joined later loaded fewer rows; they agree on the rest.
        common = set(one[pair]["date"]) & set(two[pair]["date"])
        assert len(common) >= HISTORY
        assert_frame_equal(*(on_dates(f[pair], common) for f in (one, two)))
        frame = one[pair]
        logged = (frame["date"] >= first) & (frame["date"] <= last)
        new = frame[logged].reset_index(drop=True)
        assert len(new) >= 5, f"{pair}: {len(new)} new candles"
        for index, date in enumerate(new["date"]):
            assert_frame_equal(
                new.iloc[index : index + 1].reset_index(drop=True),
                expected_row(pair, date, ticks),
                check_exact=True,
                check_dtype=False,
            )
