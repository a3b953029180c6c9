"""Interop: FreqTrade 2026.9's own consumer (ExternalMessageConsumer + DataProvider,
run from .venv-freqtrade) follows our hub and ends up with the producer's frames."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

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
def secrets(stack) -> dict:
    """The hub and the producer worker running; its key and a feed token."""
    secrets = stack.setup(SETUP)
    stack.hub()
    stack.producer("interop", secrets["key"])
    return secrets


def test_it_feeds_freqtrade_s_own_consumer(stack, secrets, tmp_path):
    started = time.monotonic()
    stack.freqtrade_consumer(
        "ft",
        secrets["token"],
        timeframe="5m",
        expect_pairs=len(PAIRS),
        min_rows=1500,
        wait_new_candle=True,
        timeout=120,
    )
    code = stack.wait_exit("ft", 200)
    elapsed = time.monotonic() - started
    assert code == 0
    ours = stack.hub_frames(secrets["token"], len(PAIRS))
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
    stack, secrets
):
    """FreqTrade sees HTTP 403 (and waits sleep_time), not an accepted-then-closed
    socket (which would make it reconnect at once)."""
    stack.python(
        "import json\nfrom producers.models import FeedToken\n"
        "FeedToken.objects.update(revoked_at='2026-01-01T00:00:00Z')\n"
        "print(json.dumps({}))"
    )
    stack.freqtrade_consumer(
        "ft", secrets["token"], expect_pairs=1, timeout=8, sleep_time=2
    )
    assert stack.wait_exit("ft", 60) == 2
    assert "HTTP 403" in stack.log("ft")
    assert 2 <= stack.log("hub").count("feed: refused") <= 6  # one try per sleep_time
