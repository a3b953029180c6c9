"""End to end: faults on real processes, and the invariant after each (issue 15).

Once the system is back, every consumer holds every pair with exactly the hub's rows
(same newest candle, no hole, same values), it reconnected a bounded number of times,
and the fault was told in words in the log.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from producers.tokens import PREFIX_LENGTH
from tests.processes import Stack, free_port
from tests.services import OwnPostgres, OwnRedis
from tests.test_e2e_consumer import (
    HISTORY,
    PAIRS,
    SECONDS_PER_CANDLE,
    STEP,
    assert_continuous,
    assert_equal_to_hub,
    ran_after,
    set_up,
    stamped,
    start,
    stop_consumer,
    wait_loaded_and_one_candle,
)
from tests.test_e2e_scaleout import same_rows

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DOWN_SECONDS = 20.0
HUB_DOWN_SECONDS = 10.0
HISTORY_LINE = re.compile(r"published \d+ rows of history for \d+ pairs, up to (.+)")
BOT = "FreqTrade bot"
BOT_TOKEN = f"""
import json
from producers.models import FeedToken, Producer
producer = Producer.objects.get(name="e2e")
print(json.dumps({{"bot_token": FeedToken.issue(producer, {BOT!r})[1]}}))
"""
BOT_RECEIVED = re.compile(r"Received (\d+) candle\(s\) for \('(\S+)'")


def newest(frames: dict[str, pd.DataFrame]) -> dict[str, pd.Timestamp]:
    return {pair: frame["date"].iloc[-1] for pair, frame in frames.items()}


### Two hubs on a Redis and a PostgreSQL of the test's own


@pytest.fixture
def services(tmp_path, monkeypatch) -> Iterator[tuple[OwnRedis, OwnPostgres]]:
    """A Redis and a PostgreSQL that the test may kill (tests/services.py)."""
    redis, postgres = OwnRedis(tmp_path), OwnPostgres()
    try:
        redis.start()
        postgres.start()
        monkeypatch.setenv("REDIS_URL", redis.url)
        monkeypatch.setenv("DATABASE_URL", postgres.url)
        yield redis, postgres
    finally:
        redis.close()
        postgres.close()


@pytest.fixture
def hubs(services, tmp_path) -> Iterator[Stack]:
    """Hub 1 (stack.port) and hub 2 (stack.second) on those services; the producer
    worker publishes to hub 2, the consumer worker follows hub 1."""
    stack = Stack(tmp_path)
    try:
        stack.redis()
        stack.secrets = set_up(stack)
        stack.secrets.update(stack.python(BOT_TOKEN))
        stack.hub("hub1")
        stack.second = free_port()
        stack.hub("hub2", stack.second)
        key = stack.secrets["producer_key"]
        stack.producer("e2e", key, hub=stack.second, history=True)
        stack.consumer(
            "follower", stack.secrets["consumer_key"], dump=stack.tmp / "dump"
        )
        yield stack
    finally:
        stack.close()


def follow_with_freqtrade(stack: Stack, until: Path) -> None:
    """FreqTrade's own consumer on hub 1, running until ``until`` names a candle it
    holds; returns once it loaded the history of every pair."""
    stack.freqtrade_consumer(
        "bot",
        stack.secrets["bot_token"],
        expect_pairs=len(PAIRS),
        min_rows=HISTORY,
        sleep_time=1,
        until_candle=until,
        timeout=150,
        verbose=True,  # its "Received N candle(s)" lines
    )
    stack.wait_until(
        "FreqTrade's consumer loaded every pair",
        lambda: (
            {
                pair
                for rows, pair in BOT_RECEIVED.findall(stack.log("bot"))
                if int(rows) >= HISTORY
            }
            == set(PAIRS)
        ),
        timeout=60,
    )


def freqtrade_frames(stack: Stack, until: Path, candle: pd.Timestamp) -> dict:
    """Tell FreqTrade's consumer to end once it holds ``candle``; its frames."""
    partial = until.with_suffix(".partial")
    partial.write_text(candle.isoformat())
    partial.replace(until)
    assert stack.wait_exit("bot", 60) == 0, stack.log("bot")[-4000:]
    out = stack.tmp / "bot"
    return {
        pair: pd.read_parquet(out / f"{pair.replace('/', '_')}.parquet")
        for pair in PAIRS
    }


def assert_holds_the_hub_s_rows(
    frames: dict[str, pd.DataFrame], *served: dict[str, pd.DataFrame], exact: bool
) -> None:
    """The invariant: every pair continuous, the history included, and every row
    exactly one the hub ``served`` (within FreqTrade's float parsing when not
    ``exact``): a consumer may keep older rows than a hub that lost its snapshots."""
    for pair in PAIRS:
        frame = frames[pair]
        assert_continuous(frame)
        assert len(frame) >= HISTORY, f"{pair}: {len(frame)} rows"
        found = np.zeros(len(frame), bool)
        for hub in served:
            found |= same_rows(frame, hub[pair], exact)
        assert found.all(), f"{pair}: {(~found).sum()} rows no hub served"


def per_minute(attempts: int, seconds: float) -> float:
    return attempts * 60 / seconds


def test_it_fills_the_candles_a_killed_producer_worker_missed(stack: Stack) -> None:
    """Fault 2: kill -9 the producer worker for 20 s while its fast clock runs on.

    It restarted with its clock re-anchored ~10 h behind the published history,
    and the consumers kept indicator values that differed from the hub's.
    """
    secrets = set_up(stack)
    start(stack, secrets)
    before = stack.hub_frames(secrets["token"], len(PAIRS))
    stack.wait_until(
        "the consumer holds the hub's candles",
        lambda: ran_after(stack, newest(before)),
    )
    stack.stop("producer", signal.SIGKILL)
    killed = newest(stack.hub_frames(secrets["token"], len(PAIRS)))
    time.sleep(DOWN_SECONDS)  # the fault itself: the source clock runs on
    restarted = time.monotonic()
    stack.producer("e2e", secrets["producer_key"], history=True)

    log = stack.log("producer")
    assert "the source clock runs on from there" in log
    resumed = pd.Timestamp(HISTORY_LINE.findall(log)[-1], tz="UTC")
    missed = int(DOWN_SECONDS / SECONDS_PER_CANDLE)
    # Filled, not skipped: the new history holds the candles closed meanwhile.
    assert resumed >= max(killed.values()) + (missed - 1) * STEP
    after = stack.hub_frames(secrets["token"], len(PAIRS))
    stack.wait_until(
        "the consumer holds the republished candles and the next one",
        lambda: ran_after(stack, newest(after)),
    )
    recovered = time.monotonic() - restarted
    with stack.paused("producer"):
        frames = stop_consumer(stack)
        hub = stack.hub_frames(secrets["token"], len(PAIRS))
    for pair in PAIRS:
        assert frames[pair]["date"].iloc[-1] == hub[pair]["date"].iloc[-1]
        assert hub[pair]["date"].iloc[-1] > killed[pair]
        assert_continuous(frames[pair])
        assert_continuous(hub[pair])
        # The restarted worker re-analysed its window: the values the consumer
        # held before are replaced by the hub's, not mixed with them.
        assert_equal_to_hub(frames[pair], hub[pair])
    assert "go back in time" not in stack.log("hub")
    consumer_log = stack.log("consumer")
    assert consumer_log.count(": connected to ") == 1, consumer_log[-3000:]
    print(
        f"fault 2: producer worker down {DOWN_SECONDS:.0f} s ({missed} candles); "
        f"restart -> consumer holds the hub's rows and the next candle: "
        f"{recovered:.1f} s; consumer reconnects: 0"
    )


def test_it_reloads_a_killed_consumer_worker_whole(stack: Stack) -> None:
    """Fault 3: kill -9 a consumer worker, restart it; it loads every pair again."""
    secrets = set_up(stack)
    start(stack, secrets)
    before = stack.hub_frames(secrets["token"], len(PAIRS))
    stack.wait_until(
        "the consumer holds the hub's candles",
        lambda: ran_after(stack, newest(before)),
    )
    gone = "WebSocket disconnected /api/v1/message/ws"
    closed = stack.log("hub").count(gone)  # hub_frames' own sockets among them
    stack.stop("consumer", signal.SIGKILL)
    stack.wait_until(
        "the hub logs that the consumer's feed socket went",
        lambda: stack.log("hub").count(gone) > closed,
    )
    restarted = time.monotonic()
    stack.consumer("follower", secrets["consumer_key"], dump=stack.tmp / "dump")
    killed = newest(stack.hub_frames(secrets["token"], len(PAIRS)))
    stack.wait_until(
        "the restarted consumer runs on the hub's next candle",
        lambda: ran_after(stack, killed),
    )
    recovered = time.monotonic() - restarted
    with stack.paused("producer"):
        frames = stop_consumer(stack)
        hub = stack.hub_frames(secrets["token"], len(PAIRS))
    for pair in PAIRS:
        assert frames[pair]["date"].iloc[-1] == hub[pair]["date"].iloc[-1]
        assert_continuous(frames[pair])
        assert_equal_to_hub(frames[pair], hub[pair])
    log = stack.log("consumer")
    assert log.count(": connected to ") == 1, log[-3000:]
    print(
        f"fault 3: consumer worker restart -> every pair whole and the next candle: "
        f"{recovered:.1f} s; reconnects of the restarted worker: 0"
    )


def test_it_waits_for_a_hub_started_last(stack: Stack) -> None:
    """Fault 8: the producer and the consumer worker start before the hub; each
    says that it waits for it, and both recover once it is up."""
    secrets = set_up(stack)
    stack.producer("e2e", secrets["producer_key"])
    stack.consumer("follower", secrets["consumer_key"], dump=stack.tmp / "dump")
    for name in ("producer", "consumer"):
        stack.wait_log(name, f"at {stack.env['CANDLECAST_HUB_URL']} (")
    stack.hub()
    started = time.monotonic()
    stack.wait_log("producer", "rows of history")
    first = newest(stack.hub_frames(secrets["token"], len(PAIRS)))
    stack.wait_until(
        "the consumer runs on the hub's next candle", lambda: ran_after(stack, first)
    )
    recovered = time.monotonic() - started
    with stack.paused("producer"):
        frames = stop_consumer(stack)
        hub = stack.hub_frames(secrets["token"], len(PAIRS))
    for pair in PAIRS:
        assert frames[pair]["date"].iloc[-1] == hub[pair]["date"].iloc[-1]
        assert_continuous(frames[pair])
        assert_equal_to_hub(frames[pair], hub[pair])
    for name in ("producer", "consumer"):
        waits = stack.log(name).count("; retrying in ")
        print(f"fault 8: {name} worker before the hub: {waits} attempts while away")
    print(f"fault 8: hub up -> consumer on the next candle: {recovered:.1f} s")


def test_it_brings_every_consumer_back_whole_after_its_hub_is_killed(hubs) -> None:
    """Fault 1: kill -9 the hub that our consumer worker and FreqTrade's consumer
    follow, and restart it 10 s later; the producer worker publishes to the other
    hub meanwhile, so the consumers miss candles they must get back."""
    stack, token = hubs, hubs.secrets["token"]
    until = stack.tmp / "bot-until"
    follow_with_freqtrade(stack, until)
    wait_loaded_and_one_candle(stack)
    stack.stop("hub1", signal.SIGKILL)
    killed = time.monotonic()
    time.sleep(HUB_DOWN_SECONDS)
    stack.hub("hub1-restarted")
    restarted = time.monotonic()
    after = newest(stack.hub_frames(token, len(PAIRS)))
    stack.wait_until(
        "the consumer worker runs on a candle published after the restart",
        lambda: ran_after(stack, after),
    )
    bot = freqtrade_frames(stack, until, max(after.values()) + STEP)
    recovered = time.monotonic() - restarted
    with stack.paused("producer"):
        frames = stop_consumer(stack)
        hub = stack.hub_frames(token, len(PAIRS))
        other = stack.hub_frames(token, len(PAIRS), stack.second)
    for pair in PAIRS:
        pd.testing.assert_frame_equal(hub[pair], other[pair])  # one snapshot
        assert frames[pair]["date"].iloc[-1] == hub[pair]["date"].iloc[-1]
        assert_equal_to_hub(frames[pair], hub[pair])
    assert_holds_the_hub_s_rows(frames, hub, exact=True)
    assert_holds_the_hub_s_rows(bot, hub, exact=False)

    log, bot_log = stack.log("consumer"), stack.log("bot")
    failed = len(stamped(log, "cannot connect to"))
    refused = bot_log.count("Connection Refused")
    assert log.count("default: connected to") == 2, log[-3000:]
    # A retry once a second is FreqTrade's own sleep_time (set to 1 s here).
    assert 1 <= refused <= HUB_DOWN_SECONDS + 5, bot_log[-3000:]
    bot_prefix = hubs.secrets["bot_token"][:PREFIX_LENGTH]
    back = stack.log("hub1-restarted")
    assert back.count(f"connected to e2e with token {bot_prefix}") == 1, back[-3000:]
    down = restarted - killed
    print(
        f"\nfault 1: hub killed, restarted after {down:.1f} s; restart -> both "
        f"consumers on a new candle, every pair whole: {recovered:.1f} s; rows "
        f"lost: 0; attempts while away: consumer worker {failed + 1} "
        f"({per_minute(failed + 1, down):.0f}/min), FreqTrade {refused} "
        f"({per_minute(refused, down):.0f}/min)"
    )


REDIS_DOWN_SECONDS = 5.0


def test_it_recovers_from_an_emptied_redis_and_a_database_away_for_20_s(
    hubs, services
) -> None:
    """Fault 4: kill -9 Redis and restart it empty 5 s later; PostgreSQL is away
    for 20 s from the same moment. The snapshots are gone with Redis: the hubs
    must get the producer's history back and every consumer must hold it whole."""
    stack, token = hubs, hubs.secrets["token"]
    redis, postgres = services
    until = stack.tmp / "bot-until"
    follow_with_freqtrade(stack, until)
    wait_loaded_and_one_candle(stack)
    before = stack.hub_frames(token, len(PAIRS))
    redis.kill()
    postgres.stop("immediate")
    failed = time.monotonic()
    time.sleep(REDIS_DOWN_SECONDS)
    redis.start()
    time.sleep(max(0, failed + DOWN_SECONDS - time.monotonic()))
    postgres.start()
    back = time.monotonic()
    stack.wait_until(
        "hub 1 holds the history again",
        lambda: (
            min(len(f) for f in stack.hub_frames(token, len(PAIRS)).values()) >= HISTORY
        ),
        timeout=60,
    )
    after = newest(stack.hub_frames(token, len(PAIRS)))
    stack.wait_until(
        "the consumer worker runs on a candle published after the services came back",
        lambda: ran_after(stack, after),
        timeout=60,
    )
    bot = freqtrade_frames(stack, until, max(after.values()) + STEP)
    recovered = time.monotonic() - back
    with stack.paused("producer"):
        frames = stop_consumer(stack)
        hub = stack.hub_frames(token, len(PAIRS))
        other = stack.hub_frames(token, len(PAIRS), stack.second)
    for pair in PAIRS:
        pd.testing.assert_frame_equal(hub[pair], other[pair])
        assert frames[pair]["date"].iloc[-1] == hub[pair]["date"].iloc[-1]
        assert hub[pair]["date"].iloc[0] <= before[pair]["date"].iloc[-1]
        assert_equal_to_hub(frames[pair], hub[pair])
    assert_holds_the_hub_s_rows(frames, hub, before, exact=True)
    assert_holds_the_hub_s_rows(bot, hub, before, exact=False)
    log, bot_log = stack.log("consumer"), stack.log("bot")
    producer_log, away = stack.log("producer"), back - failed
    # Once back, one connection each: no reconnect loop.
    assert log.count("default: connected to") == 2, log[-3000:]
    assert producer_log.count("connected to the hub") == 2, producer_log[-3000:]
    assert "is the channel layer's Redis up?" in stack.log("hub2")
    for hub in ("hub1", "hub2"):  # handshakes refused meanwhile: words, no traceback
        assert "a connection failed with an error; its client retries" in stack.log(hub)
        assert "Traceback" not in stack.log(hub), stack.log(hub)[-3000:]
    # The config API told the consumer worker why, in the hub's words, not HTML.
    assert re.search(r"the hub's (database|Redis) is unavailable \(", log), log
    assert "<!doctype" not in log.lower()
    attempts = {
        "consumer worker": len(re.findall(r"default: reconnecting in", log)),
        "producer worker": len(re.findall(r"reconnecting in [\d.]+ s", producer_log))
        + producer_log.count("connect failed; reconnecting"),
        "FreqTrade": bot_log.count("Connection Refused"),
    }
    print(
        f"\nfault 4: Redis emptied, PostgreSQL away {DOWN_SECONDS:.0f} s; back -> "
        f"both consumers on a new candle, every pair whole: {recovered:.1f} s; "
        "rows lost: 0; attempts while away: "
        + ", ".join(
            f"{who} {n} ({per_minute(n, away):.0f}/min)" for who, n in attempts.items()
        )
    )
