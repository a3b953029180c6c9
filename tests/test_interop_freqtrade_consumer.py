"""Interop: FreqTrade 2026.9's own consumer (ExternalMessageConsumer + DataProvider,
run from .venv-freqtrade) follows our hub and ends up with the producer's frames."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from websockets.asyncio.client import connect

from controlplane.lib.wire import freqtrade
from tests.processes import ROOT, Stack

pytestmark = [pytest.mark.interop, pytest.mark.e2e, pytest.mark.timeout(300)]

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]
SETUP = f"""
import json
from producers.models import FeedToken, Producer
producer = Producer.objects.create(
    name="interop", pairs={PAIRS!r}, timeframe="5m", history=1500,
    source_options={{"seed": 5, "seconds_per_candle": 3}},
)
key = producer.issue_key()
token = FeedToken.issue(producer, "FreqTrade interop")[1]
print(json.dumps({{"key": key, "token": token}}))
"""


@pytest.fixture
def stack(tmp_path):
    stack = Stack(tmp_path)
    stack.manage("migrate")
    stack.secrets = stack.python(SETUP)
    (tmp_path / "producer.key").write_text(stack.secrets["key"])
    stack.start_hub()
    stack.start(
        "producer",
        "runproducer",
        "interop",
        env={"CANDLECAST_PRODUCER_KEY_FILE": str(tmp_path / "producer.key")},
    )
    yield stack
    stack.close()


async def hub_frames(url: str) -> dict[str, pd.DataFrame]:
    """The hub's frames, decoded exactly by our own decoder."""
    async with connect(url, max_size=8 << 20) as ws:
        await ws.send('{"type":"analyzed_df","data":{"limit":1500,"pair":null}}')
        frames = {}
        for _ in PAIRS:
            data = freqtrade.decode_message(await asyncio.wait_for(ws.recv(), 10))[
                "data"
            ]
            frames[data["key"][0]] = data["df"]
    return frames


def run_freqtrade_consumer(
    stack: Stack, python: str, out
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            python,
            str(ROOT / "tests" / "interop" / "freqtrade_consumer.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(stack.port),
            "--token",
            stack.secrets["token"],
            "--timeframe",
            "5m",
            "--expect-pairs",
            str(len(PAIRS)),
            "--min-rows",
            "1500",
            "--wait-new-candle",
            "--timeout",
            "120",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=200,
    )


def test_it_feeds_freqtrade_s_own_consumer(stack, freqtrade_python, tmp_path):
    started = time.monotonic()
    done = run_freqtrade_consumer(stack, freqtrade_python, tmp_path / "ft")
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        print(done.stderr[-8000:], stack.logs())
    assert done.returncode == 0
    ours = asyncio.run(hub_frames(f"{stack.feed_url}?token={stack.secrets['token']}"))
    assert json.loads((tmp_path / "ft" / "whitelist.json").read_text()) == PAIRS
    for pair in PAIRS:
        theirs = pd.read_parquet(tmp_path / "ft" / f"{pair.replace('/', '_')}.parquet")
        assert len(theirs) == 1500
        assert list(theirs.columns) == list(ours[pair].columns)
        common = theirs["date"].isin(ours[pair]["date"])
        assert common.sum() >= 1490, "the consumer's frame is not the hub's"
        expected = ours[pair].set_index("date").loc[theirs.loc[common, "date"]]
        # We send every float exactly (shortest repr). FreqTrade parses them with
        # read_json's fast parser (precise_float=False), which keeps at most 15
        # decimal places (measured: 0.00022071766203995099 -> 0.000220717662039)
        # and may be an ulp off on large values. Its own encoder would first round
        # to 10 decimal places, 100,000 times coarser.
        assert_frame_equal(
            theirs[common].set_index("date"),
            expected,
            check_dtype=False,
            check_exact=False,
            rtol=1e-14,
            atol=1e-15,
        )
        assert theirs["date"].diff().dropna().eq(pd.Timedelta(minutes=5)).all()
    print(
        f"FreqTrade consumer: loaded {len(PAIRS)} pairs x 1500 rows and a new "
        f"candle in {elapsed:.1f} s (process start to exit)"
    )


def test_it_refuses_freqtrade_s_consumer_with_a_revoked_token_at_the_handshake(
    stack, freqtrade_python, tmp_path
):
    """FreqTrade sees HTTP 403 (and waits sleep_time), not an accepted-then-closed
    socket (which would make it reconnect at once)."""
    stack.python(
        "import json\nfrom producers.models import FeedToken\n"
        "FeedToken.objects.update(revoked_at='2026-01-01T00:00:00Z')\n"
        "print(json.dumps({}))"
    )
    done = subprocess.run(
        [
            freqtrade_python,
            str(ROOT / "tests" / "interop" / "freqtrade_consumer.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(stack.port),
            "--token",
            stack.secrets["token"],
            "--expect-pairs",
            "1",
            "--timeout",
            "8",
            "--sleep-time",
            "2",
            "--out",
            str(tmp_path / "ft"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "HTTP 403" in done.stderr
    hub_log = (stack.tmp / "hub.log").read_text()
    assert 2 <= hub_log.count("feed: refused") <= 6  # one try per sleep_time
