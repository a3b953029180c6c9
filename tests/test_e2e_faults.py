"""End to end: faults on real processes, and the invariant after each (issue 15).

Once the system is back, every consumer holds every pair with exactly the hub's rows
(same newest candle, no hole, same values), it reconnected a bounded number of times,
and the fault was told in words in the log.
"""

from __future__ import annotations

import re
import signal
import time

import pandas as pd
import pytest

from tests.processes import Stack
from tests.test_e2e_consumer import (
    PAIRS,
    SECONDS_PER_CANDLE,
    STEP,
    assert_continuous,
    assert_equal_to_hub,
    ran_after,
    set_up,
    start,
    stop_consumer,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DOWN_SECONDS = 20.0
HISTORY_LINE = re.compile(r"published \d+ rows of history for \d+ pairs, up to (.+)")


def newest(frames: dict[str, pd.DataFrame]) -> dict[str, pd.Timestamp]:
    return {pair: frame["date"].iloc[-1] for pair, frame in frames.items()}


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
