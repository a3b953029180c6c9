"""End to end: Daphne and a producer worker as real processes, followed over the
feed by a plain `websockets` client speaking FreqTrade's protocol."""

from __future__ import annotations

import asyncio
import signal
import time

import orjson
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from websockets.asyncio.client import connect

from controlplane.lib.wire import freqtrade
from producers.sources import SyntheticSource
from producers.strategies.sample import SampleStrategy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
HISTORY = 300
SETUP = f"""
import json
from producers.models import FeedToken, Producer
producer = Producer.objects.create(
    name="e2e", pairs={PAIRS!r}, timeframe="5m", history={HISTORY},
    source_options={{"seed": 3, "seconds_per_candle": 1.5}},
)
key = producer.issue_key()
token = FeedToken.issue(producer, "e2e")[1]
print(json.dumps({{"key": key, "token": token}}))
"""


@pytest.fixture
def secrets(stack) -> dict:
    """The producer's key and a feed token."""
    return stack.setup(SETUP)


def expected_frame(pair: str, last: pd.Timestamp, rows: int = HISTORY) -> pd.DataFrame:
    """What the producer must have computed: same candles, same strategy."""
    strategy = SampleStrategy()
    close = (last + pd.Timedelta(minutes=5)).timestamp()
    source = SyntheticSource("5m", seed=3, clock=lambda: close)
    candles = source.history(pair, HISTORY + strategy.startup_candle_count)
    metadata = {"pair": pair, "timeframe": "5m", "candle_type": "spot"}
    analysed = strategy.analyze(candles, metadata)
    return analysed.iloc[-rows:].reset_index(drop=True)


async def full_frames(
    ws, deadline: float, exact: bool = True
) -> dict[str, pd.DataFrame]:
    """Ask for every pair until the hub holds the producer's whole history."""
    while time.monotonic() < deadline:
        await ws.send('{"type":"analyzed_df","data":{"limit":1500,"pair":null}}')
        frames = {}
        for _ in PAIRS:
            message = freqtrade.decode_message(await asyncio.wait_for(ws.recv(), 10))
            frames[message["data"]["key"][0]] = message["data"]["df"]
        # exact: the history just published, before a tick appends to it (the
        # hub keeps up to 1500 rows, so later ticks make it longer).
        if all(
            len(frame) == HISTORY if exact else len(frame) >= HISTORY
            for frame in frames.values()
        ):
            return frames
        await asyncio.sleep(0.3)
    raise AssertionError("the hub never held the producer's history")


async def next_candle(ws, deadline: float) -> tuple[dict, dict]:
    """The first broadcast analyzed_df and the new_candle that follows it."""
    while time.monotonic() < deadline:
        message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] == "analyzed_df":
            following = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            return freqtrade.decode_message(orjson.dumps(message)), following
    raise AssertionError("no new candle was broadcast")


async def follow(url: str, token: str, exact: bool = True) -> tuple[dict, dict, dict]:
    deadline = time.monotonic() + 60
    async with connect(f"{url}?token={token}", max_size=8 << 20) as ws:
        await ws.send('{"type":"whitelist"}')
        whitelist = orjson.loads(await ws.recv())
        frames = await full_frames(ws, deadline, exact)
        await ws.send('{"type":"subscribe","data":["analyzed_df","new_candle"]}')
        broadcast, new_candle = await next_candle(ws, deadline)
    return whitelist, frames, {"analyzed_df": broadcast, "new_candle": new_candle}


def test_it_serves_the_producer_worker_s_frames_over_the_feed(stack, secrets):
    stack.hub()
    producer = stack.producer("e2e", secrets["key"])
    whitelist, frames, tick = asyncio.run(follow(stack.feed_url, secrets["token"]))
    assert whitelist == {"type": "whitelist", "data": PAIRS}
    for pair, frame in frames.items():
        assert_frame_equal(
            frame,
            expected_frame(pair, frame["date"].iloc[-1]),
            check_exact=True,
            check_dtype=False,
        )
    data = tick["analyzed_df"]["data"]
    pair = data["key"][0]
    assert len(data["df"]) == 1
    new = data["df"]["date"].iloc[0]
    assert new > frames[pair]["date"].iloc[-1]
    assert_frame_equal(
        data["df"].reset_index(drop=True),
        expected_frame(pair, new, rows=1),
        check_exact=True,
        check_dtype=False,
    )
    assert tick["new_candle"] == {"type": "new_candle", "data": [pair, "5m", "spot"]}
    assert stack.stop("producer") == 0
    assert producer.returncode == 0


def test_it_republishes_history_to_a_restarted_hub(stack, secrets):
    stack.hub()
    stack.producer("e2e", secrets["key"])
    token = secrets["token"]
    _, before, _ = asyncio.run(follow(stack.feed_url, token, exact=False))
    stack.stop("hub")
    time.sleep(1)
    stack.hub()  # an empty in-memory store: the worker must refill it
    # With Redis the old snapshot survives the restart and keeps growing with
    # each tick: wait for at least the history, not exactly it.
    _, after, _ = asyncio.run(follow(stack.feed_url, token, exact=False))
    assert sorted(after) == sorted(PAIRS)
    assert "reconnecting" in stack.log("producer")
    for pair in PAIRS:
        # The republished history is what was sent before, row for row: consumers
        # that stayed and consumers that join after the restart agree.
        old = before[pair].set_index("date")
        new = after[pair].set_index("date")
        common = old.index.intersection(new.index)
        assert len(common) >= HISTORY - 20
        assert_frame_equal(new.loc[common], old.loc[common], check_exact=True)


def test_it_stops_the_worker_with_status_2_for_a_wrong_key(stack, secrets):
    stack.hub()
    stack.producer("e2e", "ccp_" + "x" * 40)
    assert stack.wait_exit("producer", 30) == 2
    assert "refused the producer key (403)" in stack.log("producer")


REVOKE_KEY = """
import json
from producers.models import Producer
key = Producer.objects.get(name="e2e").current_key()
key.revoke()
print(json.dumps({"prefix": key.prefix}))
"""


def test_it_stops_the_worker_at_once_when_its_key_is_revoked(stack, secrets):
    """The hub closes the publish socket of a revoked key; the worker says why, its
    reconnect is refused, and it ends with status 2 instead of publishing on.
    Revoked from a shell: Redis carries the news to the hub."""
    stack.redis()
    stack.hub()
    stack.producer("e2e", secrets["key"], history=True)
    prefix = stack.python(REVOKE_KEY)["prefix"]
    assert stack.wait_exit("producer", 15) == 2
    log = stack.log("producer")
    assert (
        f"the hub closed the publish socket: producer key {prefix}… was revoked" in log
    )
    assert "refused the publish socket (403)" in log
    assert "closing producer worker e2e's socket" in stack.log("hub")


def test_it_never_logs_a_token(stack, secrets):
    """FreqTrade clients put the token in the query string; no log line may show it."""
    stack.hub()
    stack.producer("e2e", secrets["key"])
    token = secrets["token"]
    asyncio.run(follow(stack.feed_url, token))

    async def refused():
        try:
            async with connect(f"{stack.feed_url}?token={token}x"):
                pass
        except Exception:
            pass

    asyncio.run(refused())
    stack.stop("producer")
    stack.stop("hub")
    logs = stack.logs()
    assert "WebSocket connected /api/v1/message/ws" in logs
    assert token not in logs and secrets["key"] not in logs


def test_it_drops_an_oversized_frame_s_connection_and_keeps_serving(stack, secrets):
    """Daphne enforces the message size limit (8 MiB) on incoming frames: it fails
    the connection with 1009, often before the sender has finished writing."""
    from websockets.exceptions import ConnectionClosed

    stack.hub()
    url = f"{stack.feed_url}?token={secrets['token']}"

    async def oversized() -> int | None:
        async with connect(url, max_size=None) as ws:
            try:
                await ws.send("x" * (9 << 20))
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        raise AssertionError("a 9 MiB frame was accepted")

    async def still_served() -> dict:
        async with connect(url) as ws:
            await ws.send('{"type":"whitelist"}')
            return orjson.loads(await asyncio.wait_for(ws.recv(), 10))

    assert asyncio.run(oversized()) in (1009, None)  # None: reset mid-send
    assert asyncio.run(still_served()) == {"type": "whitelist", "data": PAIRS}


def test_it_refills_a_restarted_hub_without_waiting_for_a_candle(stack):
    """The worker notices the hub going away while it waits for the next candle."""
    slow = stack.setup(
        "import json\nfrom producers.models import FeedToken, Producer\n"
        f"p = Producer.objects.create(name='slow', pairs={PAIRS!r}, history=200,\n"
        "    source_options={'seed': 3, 'seconds_per_candle': 600})\n"
        "print(json.dumps({'key': p.issue_key(), 'token': FeedToken.issue(p)[1]}))"
    )
    stack.hub()
    stack.producer("slow", slow["key"])

    async def loaded() -> bool:
        async with connect(f"{stack.feed_url}?token={slow['token']}") as ws:
            await ws.send('{"type":"analyzed_df","data":{"limit":1,"pair":null}}')
            replies = [orjson.loads(await ws.recv()) for _ in PAIRS]
        return all("1970-01-01" not in r["data"]["la"] for r in replies)

    def wait_loaded(timeout: float) -> float:
        started = time.monotonic()
        while not asyncio.run(loaded()):
            assert time.monotonic() - started < timeout, stack.logs()
            time.sleep(0.2)
        return time.monotonic() - started

    wait_loaded(30)
    stack.stop("hub", signal.SIGKILL)
    stack.hub()
    refilled = wait_loaded(20)  # the next candle is 600 s away
    print(f"restarted hub refilled {refilled:.1f} s after it answered")
