"""Interop: our consumer worker follows a real FreqTrade 2026.9 producer.

tests/interop/freqtrade_producer.py runs FreqTrade's own API server and analysis from
.venv-freqtrade; runconsumer follows it as an external FreqTrade bot configured in the
control plane (a Follow with host, port and ws_token), the user's path, and both write
their frames at exit to be compared.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from controlplane.lib.contracts import ConsumerSettings, Follow
from controlplane.lib.feedclient.client import ProducerClient
from controlplane.lib.feedclient.framestore import FrameStore
from tests.processes import Stack

pytestmark = [pytest.mark.interop, pytest.mark.e2e, pytest.mark.timeout(180)]

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
ROWS = 500
TOKEN = "interop-Token_1.x~"  # URL-safe, as FreqTrade's own consumers need
INITIAL_LIMIT = 200  # FreqTrade's consumer would ask for 1500 whatever this says
STEP = pd.Timedelta(minutes=5)
SETUP = """
import json
from consumers.models import Consumer, Follow
consumer = Consumer.objects.create(
    name="follower", sleep_time=1, initial_candle_limit={limit}
)
follow = Follow(consumer=consumer, name="default", host="127.0.0.1", port={port})
follow.set_ws_token({token!r})
follow.full_clean()
follow.save()
print(json.dumps({{"consumer_key": consumer.issue_key()}}))
"""
RAN = re.compile(r"consumers\.strategy: (\S+/\S+) (\d{4}-\d\d-\d\d \d\d:\d\d) ")


def freqtrade_producer(stack: Stack, token: str, dump: Path | None = None) -> int:
    """The harness as process "freqtrade", once it printed READY; returns its port."""
    return stack.freqtrade_producer(
        "freqtrade",
        token,
        pairs=",".join(PAIRS),
        rows=ROWS,
        seconds_per_candle=2,
        dump=dump,
    )


def runs(log: str) -> dict[str, list[pd.Timestamp]]:
    """The candles the consumer strategy ran on, per pair (a DEBUG line each)."""
    seen: dict[str, list[pd.Timestamp]] = {pair: [] for pair in PAIRS}
    for pair, candle in RAN.findall(log):
        seen[pair].append(pd.Timestamp(candle, tz="UTC"))
    return seen


def file_name(pair: str) -> str:
    return pair.replace("/", "_").replace(":", "_") + ".parquet"


def test_it_follows_a_real_freqtrade_producer(stack, tmp_path):
    stack.env["LOG_LEVEL"] = "DEBUG"  # the strategy's per-pair lines, the requests
    ft_dump, our_dump = tmp_path / "ft", tmp_path / "ours"
    port = freqtrade_producer(stack, TOKEN, ft_dump)
    setup = SETUP.format(limit=INITIAL_LIMIT, port=port, token=TOKEN)
    key = stack.setup(setup)["consumer_key"]
    stack.hub()
    started = time.monotonic()
    stack.consumer("follower", key, dump=our_dump)
    stack.wait_log("consumer", "all 3 pairs loaded", 60)
    loaded = time.monotonic() - started
    stack.wait_until(
        "the strategy ran", lambda: all(runs(stack.log("consumer")).values())
    )
    first = {p: c[0] for p, c in runs(stack.log("consumer")).items()}
    stack.wait_until(
        "a new candle",
        lambda: all(c[-1] > first[p] for p, c in runs(stack.log("consumer")).items()),
    )
    assert stack.stop("consumer") == 0
    # FreqTrade's frames now hold every candle the consumer saw, and more.
    assert stack.stop("freqtrade", timeout=30) == 0
    log = stack.log("consumer")
    # initial_candle_limit honoured: the opening request, and 200 rows per pair.
    assert '{"type":"analyzed_df","data":{"limit":200,"pair":null}}' in log
    # The limit, give or take a candle that closed while loading (and a 1-row
    # broadcast may land before the opening reply: "(1-200 rows)" for a moment).
    rows = re.search(r"all 3 pairs loaded in [\d.]+ s \((?:\d+-)?(\d+) rows", log)
    assert rows and 200 <= int(rows.group(1)) <= 202, log
    assert "requesting" not in log  # nothing was missing
    compare_with_freqtrade_s_frames(our_dump / "default", ft_dump)
    print(
        f"\nconsumer start -> 3 x {INITIAL_LIMIT} rows from FreqTrade: {loaded:.2f} s"
    )


def compare_with_freqtrade_s_frames(ours: Path, theirs: Path) -> None:
    assert json.loads((ours / "whitelist.json").read_text()) == PAIRS
    dtypes = json.loads((theirs / "dtypes.json").read_text())
    for pair in PAIRS:
        mine = pd.read_parquet(ours / file_name(pair))
        producer = pd.read_parquet(theirs / file_name(pair))
        assert len(mine) > INITIAL_LIMIT  # the first 200, then new candles appended
        assert mine["date"].diff().dropna().eq(STEP).all(), "a hole in our frame"
        assert list(mine.columns) == list(producer.columns)
        # The wire keeps every dtype the producer had: to_json writes whole floats as
        # 1.0 and we decode by JSON type. (FreqTrade's own consumer, through
        # read_json's guessing, makes rsi_zone int64: tests/interop/README.md.)
        assert {c: str(t) for c, t in mine.dtypes.items()} == dtypes[pair]
        common = producer[producer["date"].isin(mine["date"])].reset_index(drop=True)
        assert len(common) == len(mine), "candles FreqTrade never produced"
        # FreqTrade's encoder rounds every float to 10 decimals (to_json's default
        # double_precision) before sending; parsing adds about an ulp. 1e-10 is the
        # bound (tests/interop/README.md), everything else must be equal.
        assert_frame_equal(
            mine, common, check_dtype=False, check_exact=False, rtol=0, atol=1e-10
        )


async def test_it_url_encodes_a_token_freqtrade_s_own_consumer_could_not_send(
    stack,
):
    """'a&b+c/d' sent raw (as FreqTrade's consumer does) is cut at '&' and refused;
    our consumer encodes it and the producer's query parser decodes it back."""
    token = "a&b+c/d"
    port = freqtrade_producer(stack, token)
    url = f"ws://127.0.0.1:{port}/api/v1/message/ws?token="
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url + token):
            pass
    assert refused.value.response.status_code == 403
    async with connect(url + quote(token, safe="")) as ws:  # the control
        await ws.send('{"type":"whitelist"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["data"] == PAIRS
    follow = Follow("default", "freqtrade", "127.0.0.1", port, False, token)
    store = FrameStore()
    client = ProducerClient(follow, ConsumerSettings(sleep_time=1), store)
    task = asyncio.create_task(client.run())
    try:
        deadline = time.monotonic() + 30
        while len(store.keys()) < len(PAIRS):
            assert time.monotonic() < deadline, client.last_error
            await asyncio.sleep(0.05)
    finally:
        await client.close()
        await asyncio.wait_for(task, 10)
    assert client.reconnects == 0 and client.last_error is None
    assert min(len(store.get((p, "5m", "spot"))[0]) for p in PAIRS) >= ROWS
