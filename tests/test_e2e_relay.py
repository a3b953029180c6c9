"""End to end: the hub in front of an existing FreqTrade bot (a relay producer).

A real FreqTrade 2026.9 producer (tests/interop/freqtrade_producer.py) is the
upstream; `runproducer` relays it to the hub; a real FreqTrade consumer and a
candlecast consumer worker follow the hub with their own tokens. The upstream is
restarted mid-run, missing a few candles' broadcasts: both consumers still end with
the upstream's frames, hole-free, with the dtypes FreqTrade itself gives them.
"""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from tests.processes import Stack, free_port

pytestmark = [pytest.mark.interop, pytest.mark.e2e, pytest.mark.timeout(420)]

PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
ROWS = 300
START = pd.Timestamp("2026-01-01T00:00:00+00:00")
STEP = pd.Timedelta(minutes=5)
UPSTREAM_TOKEN = "upstream-Token_1.x~"
# Candles that close while the upstream is down: its restart starts this far ahead.
MISSED = 3
# The FreqTrade consumer is done only once it holds this many rows per pair, which
# only the restarted upstream has: its frames span the restart.
FT_MIN_ROWS = ROWS + 45
SETUP = """
import json
from consumers.models import Consumer, Follow
from producers.models import FeedToken, Producer
producer = Producer(
    name="relayed", source="freqtrade", timeframe="5m", candle_type="spot",
    pairs=[], upstream_host="127.0.0.1", upstream_port={port}, {standby}
)
producer.set_upstream_token({token!r})
{standby_token}
producer.full_clean()
producer.save()
consumer = Consumer.objects.create(name="follower", sleep_time=1)
Follow.objects.create(consumer=consumer, name="default", producer=producer)
print(json.dumps({{
    "producer_key": producer.issue_key(),
    "consumer_key": consumer.issue_key(),
    "feed_token": FeedToken.issue(producer, "FreqTrade consumer")[1],
}}))
"""
RAN = re.compile(r"consumers\.strategy: (\S+/\S+) (\d{4}-\d\d-\d\d \d\d:\d\d) ")


def last_date(dump: Path) -> pd.Timestamp:
    meta = json.loads((dump / "meta.json").read_text())
    return min(pd.Timestamp(p["last_date"]) for p in meta["pairs"].values())


def runs(log: str) -> dict[str, pd.Timestamp]:
    """The newest candle the consumer strategy ran on, per pair."""
    seen: dict[str, pd.Timestamp] = {}
    for pair, candle in RAN.findall(log):
        seen[pair] = pd.Timestamp(candle, tz="UTC")
    return seen


def file_name(pair: str) -> str:
    return pair.replace("/", "_").replace(":", "_") + ".parquet"


def relay_and_follow(
    stack: Stack,
    secrets: dict,
    our_out: Path,
    ft_out: Path,
    ft_min_rows: int,
    ft_timeout: int,
) -> None:
    """The hub, the relay, and both consumers following it, once connected; the
    FreqTrade consumer is done once it holds ``ft_min_rows`` rows per pair."""
    stack.hub()
    stack.producer("relayed", secrets["producer_key"], name="relay")
    stack.consumer("follower", secrets["consumer_key"], dump=our_out)
    stack.freqtrade_consumer(
        "ft-consumer",
        secrets["feed_token"],
        timeframe="5m",
        expect_pairs=len(PAIRS),
        min_rows=ft_min_rows,
        wait_new_candle=True,
        timeout=ft_timeout,
        sleep_time=1,
        out=ft_out,
    )
    stack.wait_log("consumer", "all 3 pairs loaded", 90)
    stack.wait_until(
        "both consumers connected to the hub",
        lambda: stack.log("hub").count("connected to relayed with token") >= 2,
        60,
    )


def upstream(stack: Stack, name: str, port: int, rows: int, dump: Path) -> None:
    """The FreqTrade producer on ``port``, from START, once it printed READY."""
    stack.freqtrade_producer(
        name,
        UPSTREAM_TOKEN,
        pairs=",".join(PAIRS),
        rows=rows,
        port=port,
        seconds_per_candle=1,
        start=START.isoformat(),
        dump=dump,
    )


def test_it_relays_a_freqtrade_bot_through_a_restart(stack, tmp_path):
    """Both consumers end with the upstream's frames; the restart changes nothing."""
    stack.env["LOG_LEVEL"] = "DEBUG"  # the consumer strategy's per-pair lines
    port = free_port()
    first, final = tmp_path / "up1", tmp_path / "up2"
    ft_out, our_out = tmp_path / "ft", tmp_path / "ours"
    secrets = stack.setup(
        SETUP.format(port=port, token=UPSTREAM_TOKEN, standby="", standby_token="")
    )
    upstream(stack, "up1", port, ROWS, first)
    relay_and_follow(stack, secrets, our_out, ft_out, FT_MIN_ROWS, 180)
    assert stack.stop("up1", timeout=30) == 0
    stopped_at = last_date(first)
    stack.wait_log("relay", "reconnecting in")
    restart_rows = int((stopped_at - START) / STEP) + 1 + MISSED
    assert restart_rows < FT_MIN_ROWS, "the upstream ran too far before the restart"
    upstream(stack, "up2", port, restart_rows, final)
    restarted_at = START + (restart_rows - 1) * STEP
    assert stack.wait_exit("ft-consumer", 200) == 0
    stack.wait_until(
        "our consumer ran on candles after the restart",
        lambda: (
            len(runs(stack.log("consumer"))) == len(PAIRS)
            and min(runs(stack.log("consumer")).values()) > restarted_at
        ),
        60,
    )
    assert stack.stop("consumer") == 0
    assert stack.stop("up2", timeout=30) == 0
    upstream_log = stack.log("up2")
    # The restarted upstream served exactly one consumer: the relay.
    assert upstream_log.count("Connected to channel") == 1, upstream_log[-3000:]
    assert "refused" not in stack.log("relay")
    expected = {pair: pd.read_parquet(final / file_name(pair)) for pair in PAIRS}
    dtypes = json.loads((final / "dtypes.json").read_text())
    compare(ft_out, expected, dtypes, freqtrade=True, after=stopped_at)
    # Should our consumer's history be cut, its whole frames say which one did it.
    log = stack.log("consumer").splitlines()
    replaced = "\n".join([line for line in log if "replaced by" in line][-12:])
    try:
        compare(
            our_out / "default", expected, dtypes, freqtrade=False, after=stopped_at
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nour consumer's whole frames:\n{replaced}"
        ) from exc


def compare(
    out: Path,
    expected: dict[str, pd.DataFrame],
    dtypes: dict[str, dict[str, str]],
    *,
    freqtrade: bool,
    after: pd.Timestamp,
) -> None:
    assert json.loads((out / "whitelist.json").read_text()) == PAIRS
    for pair in PAIRS:
        mine = pd.read_parquet(out / file_name(pair))
        # FreqTrade's harness records them (parquet maps some); ours are as read.
        held = {c: str(t) for c, t in mine.dtypes.items()}
        if freqtrade:
            held = json.loads((out / "dtypes.json").read_text())[pair]
        upstream_frame = expected[pair]
        assert list(mine.columns) == list(upstream_frame.columns)
        # Frames hold the whole history (under initial_candle_limit), span the
        # restart, and the candles missed while it was down were filled: no hole.
        assert mine["date"].iloc[0] == START, f"{pair}: the older history was lost"
        assert after < mine["date"].iloc[-1]
        assert mine["date"].diff().dropna().eq(STEP).all(), f"a hole in {pair}"
        want = dict(dtypes[pair])
        if freqtrade:
            # What FreqTrade's own consumer makes of FreqTrade's own wire
            # (tests/interop/README.md): whole-number floats arrive as int64.
            want["rsi_zone"] = "int64"
        assert held == want
        common = upstream_frame[upstream_frame["date"].isin(mine["date"])]
        assert len(common) == len(mine), "candles the upstream never produced"
        # The upstream's encoder rounds floats to 10 decimals (to_json); the relay
        # passes them on exactly; read_json may add an ulp.
        assert_frame_equal(
            mine.reset_index(drop=True),
            common.reset_index(drop=True),
            check_dtype=False,
            check_exact=False,
            rtol=0,
            atol=1e-10,
        )


# How far ahead of the hub's newest candle the primary restarts: more candles than
# seconds its start takes (the standby adds one a second meanwhile).
AHEAD = 40
STATUS_TOKEN = "status-token-for-the-standby-test"


def relay_metrics(stack: Stack) -> tuple[str, ...]:
    """relay_switches_total and relay_following_standby, as /metrics says them."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.port}/metrics",
        headers={"Authorization": f"Bearer {STATUS_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    found = dict(
        re.findall(r'^candlecast_(relay_\w+)\{producer="relayed"\} (\S+)$', text, re.M)
    )
    return tuple(
        found.get(f"relay_{n}", "") for n in ("switches_total", "following_standby")
    )


def test_it_fails_over_to_a_standby_freqtrade_bot_and_back(stack, tmp_path):
    """kill -9 of the primary bot: the relay follows the standby within the
    failover time, and goes back once the primary returns; both consumers end
    with every candle, from the first, as the bots produced them."""
    stack.env["LOG_LEVEL"] = "DEBUG"  # the consumer strategy's per-pair lines
    stack.env["CANDLECAST_STATUS_TOKEN"] = STATUS_TOKEN
    primary, standby = free_port(), free_port()
    final = tmp_path / "primary2"
    ft_out, our_out = tmp_path / "ft", tmp_path / "ours"
    secrets = stack.setup(
        SETUP.format(
            port=primary,
            token=UPSTREAM_TOKEN,
            standby=f"standby_host='127.0.0.1', standby_port={standby}, "
            "failover_seconds=3,",
            standby_token=f"producer.set_standby_token({UPSTREAM_TOKEN!r})",
        )
    )
    upstream(stack, "primary", primary, ROWS, tmp_path / "primary")
    upstream(stack, "standby", standby, ROWS, tmp_path / "standby")
    relay_and_follow(stack, secrets, our_out, ft_out, ROWS + 60, 240)
    killed = time.monotonic()
    stack.stop("primary", sig=signal.SIGKILL)
    stack.wait_log("relay", "following the standby bot", 60)
    to_standby = time.monotonic() - killed
    # The primary comes back ahead of the standby (which runs on meanwhile, at the
    # same pace): the relay goes back once it holds the standby's newest candle.
    hub = stack.hub_frames(secrets["feed_token"], len(PAIRS))
    newest = max(frame["date"].iloc[-1] for frame in hub.values())
    restart_rows = int((newest - START) / STEP) + 1 + AHEAD
    upstream(stack, "primary2", primary, restart_rows, final)
    returned = time.monotonic()
    stack.wait_log("relay", "following the primary bot", 90)
    to_primary = time.monotonic() - returned
    back_at = START + (restart_rows - 1) * STEP
    assert stack.wait_exit("ft-consumer", 240) == 0
    stack.wait_until(
        "our consumer ran on the returned primary's candles",
        lambda: (
            len(runs(stack.log("consumer"))) == len(PAIRS)
            and min(runs(stack.log("consumer")).values()) > back_at
        ),
        90,
    )
    stack.wait_until(  # the relay reports every 5 s
        "/metrics says the relay is back on the primary after 2 switches",
        lambda: relay_metrics(stack) == ("2", "0"),
        30,
    )
    assert stack.stop("consumer") == 0
    assert stack.stop("primary2", timeout=30) == 0
    assert stack.stop("standby", timeout=30) == 0
    expected = {pair: pd.read_parquet(final / file_name(pair)) for pair in PAIRS}
    dtypes = json.loads((final / "dtypes.json").read_text())
    compare(ft_out, expected, dtypes, freqtrade=True, after=newest)
    compare(our_out / "default", expected, dtypes, freqtrade=False, after=back_at)
    print(
        f"standby failover: primary killed -> relay on the standby in "
        f"{to_standby:.1f} s (failover_seconds 3); primary back -> relay on it in "
        f"{to_primary:.1f} s; both consumers hold every candle from {START:%Y-%m-%d}"
    )
