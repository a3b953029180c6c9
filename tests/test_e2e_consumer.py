"""End to end: the hub, a producer worker and a consumer worker as real processes.

The consumer worker writes the frames it holds at exit (runconsumer --dump); each test
compares them with the hub's frames, fetched over the feed by a plain `websockets`
client, after a normal run, a hub killed mid-run, holes in the producer's candles and
broadcasts the consumer missed.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import time
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from consumers.dataprovider import DataProvider
from consumers.worker import Fleet, _dump, dump_frames
from controlplane.lib.feedclient.framestore import FrameStore
from tests.processes import Stack

pytestmark = pytest.mark.timeout(180)

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
HISTORY = 300
SECONDS_PER_CANDLE = 1.5
STEP = pd.Timedelta(minutes=5)
SETUP = """
import json
from consumers.models import Consumer, Follow
from producers.models import FeedToken, Producer
producer = Producer.objects.create(
    name="e2e", pairs={pairs!r}, timeframe="5m", history={history},
    source_options={options!r},
)
consumer = Consumer.objects.create(name="follower", sleep_time=1)
Follow.objects.create(consumer=consumer, name="default", producer=producer)
print(json.dumps({{
    "producer_key": producer.issue_key(),
    "consumer_key": consumer.issue_key(),
    "token": FeedToken.issue(producer, "e2e test client")[1],
}}))
"""
STATUS = """
import json
from consumers.models import Consumer
print(json.dumps(Consumer.objects.get(name="follower").last_status()))
"""
STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
RAN = re.compile(r"consumers\.strategy: (\S+/\S+) (\d{4}-\d\d-\d\d \d\d:\d\d) ")
REQUESTED = re.compile(r"default: requesting (\d+) candles of (\S+)")


### The stack


def set_up(stack: Stack, **options: object) -> dict:
    """A producer of 3 pairs and a consumer following it as "default"."""
    # The consumer strategy's per-pair lines (pair and candle) and the hub's HTTP
    # access lines are at DEBUG.
    stack.env["LOG_LEVEL"] = "DEBUG"
    source = {"seed": 3, "seconds_per_candle": SECONDS_PER_CANDLE, **options}
    return stack.setup(SETUP.format(pairs=PAIRS, history=HISTORY, options=source))


def start(stack: Stack, secrets: dict) -> None:
    """The hub, the producer once it published its history, and the consumer."""
    stack.hub()
    stack.producer("e2e", secrets["producer_key"], history=True)
    stack.consumer("follower", secrets["consumer_key"], dump=stack.tmp / "dump")


def stop_consumer(stack: Stack) -> dict[str, pd.DataFrame]:
    """SIGTERM: the worker must exit 0 and leave its frames in the dump."""
    assert stack.stop("consumer") == 0
    folder = stack.tmp / "dump" / "default"
    assert json.loads((folder / "whitelist.json").read_text()) == PAIRS
    return {
        pair: pd.read_parquet(folder / f"{pair.replace('/', '_')}.parquet")
        for pair in PAIRS
    }


### What the logs say


def runs(log: str) -> dict[str, list[pd.Timestamp]]:
    """The candles the consumer strategy ran on, per pair, in order."""
    seen: dict[str, list[pd.Timestamp]] = {pair: [] for pair in PAIRS}
    for pair, candle in RAN.findall(log):
        seen[pair].append(pd.Timestamp(candle, tz="UTC"))
    return seen


def requests(log: str) -> list[tuple[str, int]]:
    return [(pair, int(limit)) for limit, pair in REQUESTED.findall(log)]


def stamped(log: str, text: str) -> list[datetime]:
    """When each line containing ``text`` was logged."""
    pattern = re.compile(STAMP + r" .*" + re.escape(text))
    return [
        datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
        for m in pattern.finditer(log)
    ]


def ran_after(stack: Stack, candles: dict[str, pd.Timestamp]) -> bool:
    """Has the strategy run on a candle newer than ``candles[pair]`` (on any candle
    for a pair not in ``candles``), for every pair?"""
    seen = runs(stack.log("consumer"))
    since = pd.Timestamp(0, tz="UTC")
    return all(seen[p] and seen[p][-1] > candles.get(p, since) for p in PAIRS)


def wait_loaded_and_one_candle(stack: Stack) -> dict[str, pd.Timestamp]:
    """Wait for the whole history and one new candle; returns the last candles."""
    stack.wait_until(
        "the consumer loaded every pair",
        lambda: "all 3 pairs loaded" in stack.log("consumer"),
    )
    stack.wait_until("the strategy ran on every pair", lambda: ran_after(stack, {}))
    first = {pair: candles[0] for pair, candles in runs(stack.log("consumer")).items()}
    stack.wait_until(
        "a new candle reached the consumer", lambda: ran_after(stack, first)
    )
    return {pair: candles[-1] for pair, candles in runs(stack.log("consumer")).items()}


### Comparing with the hub's frames


def on_common_dates(
    consumer: pd.DataFrame, hub: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    common = set(consumer["date"]) & set(hub["date"])
    assert len(common) >= HISTORY, f"only {len(common)} dates in common"
    pick = lambda df: df[df["date"].isin(common)].reset_index(drop=True)  # noqa: E731
    return pick(consumer), pick(hub)


def assert_equal_to_hub(consumer: pd.DataFrame, hub: pd.DataFrame) -> None:
    """Equal values on the common dates: our wire carries floats exactly."""
    mine, theirs = on_common_dates(consumer, hub)
    assert_frame_equal(mine, theirs, check_exact=True, check_dtype=False)


def same_rows(frame: pd.DataFrame, other: pd.DataFrame) -> np.ndarray:
    """Per row of ``frame``: does ``other`` hold exactly this row (by date)?"""
    mine = frame.set_index("date")
    theirs = other.set_index("date").reindex(mine.index)[mine.columns]
    equal = (mine == theirs) | (mine.isna() & theirs.isna())
    return (equal.all(axis=1) & mine.index.isin(other["date"])).to_numpy()


def assert_served(
    consumer: pd.DataFrame, before: pd.DataFrame, after: pd.DataFrame
) -> None:
    """Every row is exactly the hub's, from before or after an outage.

    The producer worker republishes the rows it sent, not a re-analysis of its
    window, so the hub's frames before and after agree on their common dates too.
    """
    common = before["date"].isin(after["date"]).to_numpy()
    assert same_rows(before, after)[common].all(), "the republished rows differ"
    served = pd.concat([before, after]).drop_duplicates("date", keep="last")
    assert same_rows(consumer, served).all(), "rows the hub never served"


def assert_continuous(frame: pd.DataFrame) -> None:
    steps = frame["date"].diff().dropna()
    assert (steps == STEP).all(), f"holes after {frame['date'][1:][steps != STEP]}"


### The tests


@pytest.mark.e2e
def test_it_holds_the_hub_s_frames_and_reports_its_status(stack):
    secrets = set_up(stack)
    stack.hub()
    stack.producer("e2e", secrets["producer_key"], history=True)
    started = time.monotonic()
    stack.consumer("follower", secrets["consumer_key"], dump=stack.tmp / "dump")
    stack.wait_until(
        "loaded", lambda: "all 3 pairs loaded" in stack.log("consumer"), 60
    )
    loaded = time.monotonic() - started
    link = re.search(r"all 3 pairs loaded in ([\d.]+) s", stack.log("consumer"))
    last = wait_loaded_and_one_candle(stack)
    # The first report goes 1 s after the start, then one every 10 s.
    stack.wait_until(
        "a status report",
        lambda: "HTTP POST /api/v1/consumer/status 204" in stack.log("hub"),
    )
    frames = stop_consumer(stack)
    hub = stack.hub_frames(secrets["token"], len(PAIRS))
    for pair in PAIRS:
        assert len(frames[pair]) > HISTORY  # the history, then new candles
        assert frames[pair]["date"].iloc[-1] >= last[pair]
        assert_continuous(frames[pair])
        assert_equal_to_hub(frames[pair], hub[pair])
    log = stack.log("consumer")
    # At least the history: on a slow machine a candle may close while loading.
    loaded_rows = re.search(r"all 3 pairs loaded in [\d.]+ s \((\d+)", log)
    assert loaded_rows and int(loaded_rows.group(1)) >= HISTORY, log
    assert requests(log) == []  # nothing was missing
    if os.environ.get("REDIS_URL"):  # else in the hub's local memory only
        status = stack.python(STATUS)["status"]["producers"]["default"]
        assert status["connected"] is True
        assert sorted(status["pairs"]) == PAIRS
    print(
        f"\nconsumer start -> 3 x {HISTORY} rows loaded: {loaded:.2f} s "
        f"(connected -> loaded: {link.group(1)} s)"
    )


def kill_hub(stack: Stack, token: str) -> tuple[dict, dict, datetime]:
    """SIGKILL the hub once the consumer holds all it served; the producer is held
    (SIGSTOP) meanwhile so that no candle slips in. Returns the hub's frames, the
    last candles and when the hub was killed; the producer stays stopped."""
    stack.pause("producer")
    before = stack.hub_frames(token, len(PAIRS))
    last = {pair: frame["date"].iloc[-1] for pair, frame in before.items()}
    stack.wait_until(
        "the consumer has the hub's last candles",
        lambda: ran_after(stack, {p: c - STEP for p, c in last.items()}),
    )
    killed = datetime.now()
    stack.stop("hub", signal.SIGKILL)
    return before, last, killed


@pytest.mark.e2e
def test_it_comes_back_after_the_hub_is_killed_with_a_backoff(stack):
    secrets = set_up(stack)
    start(stack, secrets)
    wait_loaded_and_one_candle(stack)
    before, last, killed = kill_hub(stack, secrets["token"])
    stack.resume("producer")
    time.sleep(2 * SECONDS_PER_CANDLE)  # two candles go by without a hub
    stack.hub("hub-restarted")
    restarted = datetime.now()
    stack.wait_until(
        "the consumer reconnected",
        lambda: "connected to e2e" in stack.log("hub-restarted"),
    )
    stack.wait_until("a candle after the restart", lambda: ran_after(stack, last))
    frames = stop_consumer(stack)
    # Before our own client connects to the hub too.
    feeds = stack.log("hub-restarted").count("connected to e2e")
    after = stack.hub_frames(secrets["token"], len(PAIRS))
    log = stack.log("consumer")
    for pair in PAIRS:
        assert_continuous(frames[pair])
        assert_served(frames[pair], before[pair], after[pair])
    failed = stamped(log, "cannot connect to")
    attempts = [killed, *failed, stamped(log, "default: connected to")[-1]]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(attempts)]
    # sleep_time is 1 s: 1, 2, 4 s... with +-20 % jitter, never an instant retry.
    assert 1 <= len(failed) <= 4
    assert all(gap >= 0.8 for gap in gaps), gaps
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps
    assert len(re.findall(r"reconnecting in \d", log)) == len(failed) + 1
    # One feed connection on the restarted hub: no reconnect loop once it answers.
    assert feeds == 1
    print(
        f"\nhub killed {killed:%H:%M:%S.%f}, restarted "
        f"{(restarted - killed).total_seconds():.1f} s later; consumer attempts "
        f"after {', '.join(f'{g:.1f}' for g in gaps)} s"
    )


@pytest.mark.e2e
def test_it_keeps_the_producer_s_holes_without_asking_again(stack):
    """skip_every 3: every third candle is never produced; the consumer asks for
    each hole once (FreqTrade's 3 candles) and keeps the producer's rows."""
    secrets = set_up(stack, skip_every=3)
    start(stack, secrets)
    stack.wait_until("the strategy ran on every pair", lambda: ran_after(stack, {}))
    first = {pair: c[0] for pair, c in runs(stack.log("consumer")).items()}
    # Three slots later at least one hole was crossed; six: two holes.
    stack.wait_until(
        "two holes crossed",
        lambda: all(
            c[-1] >= first[p] + 6 * STEP for p, c in runs(stack.log("consumer")).items()
        ),
    )
    frames = stop_consumer(stack)
    hub = stack.hub_frames(secrets["token"], len(PAIRS))
    asked = requests(stack.log("consumer"))
    for pair in PAIRS:
        frame = frames[pair]
        assert_equal_to_hub(frame, hub[pair])
        in_range = hub[pair]["date"].between(
            frame["date"].iloc[0], frame["date"].iloc[-1]
        )
        assert frame["date"].tolist() == hub[pair]["date"][in_range].tolist()
        new = frame[frame["date"] > first[pair]]
        holes = int((new["date"].diff() == 2 * STEP).sum())
        holes += int(new["date"].iloc[0] - first[pair] == 2 * STEP)
        mine = [limit for p, limit in asked if p == pair]
        assert holes >= 1
        assert set(mine) == {3}
        # One request per hole; one more if a reply was still on its way at exit.
        assert holes <= len(mine) <= holes + 1, f"{pair}: {mine} for {holes} holes"


@pytest.mark.e2e
def test_it_misses_nothing_while_paused(stack):
    """SIGSTOP for 3 candle periods: the hub's broadcasts wait in the socket buffers
    and arrive in order on SIGCONT, so nothing is missing and nothing is asked for."""
    secrets = set_up(stack)
    start(stack, secrets)
    last = wait_loaded_and_one_candle(stack)
    with stack.paused("consumer"):
        time.sleep(3 * SECONDS_PER_CANDLE)
    stack.wait_until(
        "three candles later",
        lambda: ran_after(stack, {p: c + 3 * STEP for p, c in last.items()}),
    )
    frames = stop_consumer(stack)
    hub = stack.hub_frames(secrets["token"], len(PAIRS))
    assert requests(stack.log("consumer")) == []
    for pair in PAIRS:
        assert_continuous(frames[pair])
        assert_equal_to_hub(frames[pair], hub[pair])


@pytest.mark.e2e
def test_it_fills_the_gap_of_missed_broadcasts_by_requesting_them(stack, redis_in_use):
    """The hub dies and the producer is held back until the consumer is back on the
    restarted hub: the broadcasts of the outage never reach the consumer, so the
    producer's next row leaves a gap that the consumer fills with one request.

    With the snapshots in Redis they outlive the hub: the producer's republished
    history then holds rows newer than the hub's, which the hub broadcasts itself
    (a republish re-sends the rows it changed), so the consumer may have no gap to
    ask for. Either way it ends continuous and equal to the hub."""
    secrets = set_up(stack)
    start(stack, secrets)
    wait_loaded_and_one_candle(stack)
    before, last, _ = kill_hub(stack, secrets["token"])
    stack.hub("hub-restarted")
    stack.wait_until(
        "the consumer reconnected",
        lambda: "connected to e2e" in stack.log("hub-restarted"),
    )
    time.sleep(2 * SECONDS_PER_CANDLE)  # candles close while no one publishes
    stack.resume("producer")
    stack.wait_until(
        "the gap filled",
        lambda: (
            (redis_in_use or len(requests(stack.log("consumer"))) >= len(PAIRS))
            and ran_after(stack, last)
        ),
    )
    frames = stop_consumer(stack)
    after = stack.hub_frames(secrets["token"], len(PAIRS))
    log = stack.log("consumer")
    if redis_in_use:
        for pair in PAIRS:
            assert_continuous(frames[pair])
            assert_served(frames[pair], before[pair], after[pair])
        return
    asked: dict[str, list[int]] = {}
    for pair, limit in requests(log):
        asked.setdefault(pair, []).append(limit)
    assert sorted(asked) == PAIRS
    for pair in PAIRS:
        frame = frames[pair]
        assert_continuous(frame)
        assert_served(frame, before[pair], after[pair])
        # FreqTrade's request size: the missing candles, the new one, one overlap.
        # The strategy runs once per gathered close, so the first run after the gap
        # may be a later candle than the one that revealed it: it bounds the gap
        # from above (the exact size is unit-tested in test_frames and test_client).
        new = next(c for c in runs(log)[pair] if c > last[pair])
        most_missing = int((new - last[pair]) / STEP) - 1
        assert 1 + 2 <= asked[pair][0] <= most_missing + 2


@pytest.mark.e2e
def test_it_asks_for_the_history_when_it_connects_before_the_producer(stack):
    """The hub has no frames yet: the first thing the consumer sees of each pair is
    a one-row broadcast, so it must ask for the history rather than keep one row."""
    secrets = set_up(stack)
    stack.hub()
    stack.consumer("follower", secrets["consumer_key"], dump=stack.tmp / "dump")
    stack.wait_until(
        "the empty replies",
        lambda: "the producer has no data yet" in stack.log("consumer"),
    )
    stack.producer("e2e", secrets["producer_key"])
    wait_loaded_and_one_candle(stack)
    frames = stop_consumer(stack)
    hub = stack.hub_frames(secrets["token"], len(PAIRS))
    log = stack.log("consumer")
    asked = requests(log)
    assert sorted(asked) == [(pair, 1500) for pair in PAIRS]
    # No pair was loaded with the one row it saw first (the fewest rows is first).
    loaded_rows = re.search(r"pairs loaded in [\d.]+ s \((\d+)", log)
    assert loaded_rows and int(loaded_rows.group(1)) >= HISTORY, log
    for pair in PAIRS:
        assert len(frames[pair]) > HISTORY
        assert_continuous(frames[pair])
        assert_equal_to_hub(frames[pair], hub[pair])


### The dump itself


def candles(count: int, freq: str = "5min") -> pd.DataFrame:
    dates = pd.date_range("2026-11-25", periods=count, freq=freq, tz="UTC")
    return pd.DataFrame({"date": dates, "close": np.arange(count) + 0.1})


def test_it_dumps_each_producer_s_frames_and_whitelist(tmp_path):
    one, two = FrameStore(), FrameStore()
    one.set_whitelist(["BTC/USDT:USDT"])
    one.apply(("BTC/USDT:USDT", "5m", "futures"), candles(3), None)
    # A pair with two keys: the timeframe and candle type tell the files apart.
    two.apply(("ETH/USDT", "5m", "spot"), candles(2), None)
    two.apply(("ETH/USDT", "1h", "spot"), candles(4, "1h"), None)
    assert dump_frames({"default": one, "other": two}, tmp_path / "dump") == 3
    files = sorted(
        p.relative_to(tmp_path / "dump").as_posix() for p in tmp_path.rglob("*.*")
    )
    assert files == [
        "default/BTC_USDT_USDT.parquet",
        "default/whitelist.json",
        "other/ETH_USDT_1h_spot.parquet",
        "other/ETH_USDT_5m_spot.parquet",
        "other/whitelist.json",
    ]
    assert json.loads((tmp_path / "dump/default/whitelist.json").read_text()) == [
        "BTC/USDT:USDT"
    ]
    written = pd.read_parquet(tmp_path / "dump/default/BTC_USDT_USDT.parquet")
    assert_frame_equal(written, candles(3))


async def test_it_says_why_it_could_not_dump_and_exits_with_1(tmp_path, caplog):
    (tmp_path / "taken").write_text("a file where the directory should go")
    fleet = Fleet(DataProvider(), runner=None)  # the runner plays no part in a dump
    fleet.stores["default"] = FrameStore()
    assert await _dump(fleet, tmp_path / "taken" / "dump") == 1
    assert "cannot write the frames to" in caplog.text
