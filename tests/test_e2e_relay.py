"""End to end: the hub in front of an existing FreqTrade bot (a relay producer).

A real FreqTrade 2026.9 producer (tests/interop/freqtrade_producer.py) is the
upstream; `runproducer` relays it to the hub; a real FreqTrade consumer and a
candlecast consumer worker follow the hub with their own tokens. The upstream is
restarted mid-run, missing a few candles' broadcasts: both consumers still end with
the upstream's frames, hole-free, with the dtypes FreqTrade itself gives them.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from tests.processes import ROOT, Stack, free_port

pytestmark = [pytest.mark.interop, pytest.mark.e2e, pytest.mark.timeout(420)]

HARNESS = ROOT / "tests" / "interop"
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
    pairs=[], upstream_host="127.0.0.1", upstream_port={port},
)
producer.set_upstream_token({token!r})
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


@contextlib.contextmanager
def upstream(python: str, tmp: Path, port: int, rows: int, dump: Path, name: str):
    """The FreqTrade producer until it prints READY; yields the process."""
    args = [python, str(HARNESS / "freqtrade_producer.py"), "--token", UPSTREAM_TOKEN]
    args += ["--pairs", ",".join(PAIRS), "--rows", str(rows), "--port", str(port)]
    args += ["--seconds-per-candle", "1", "--start", START.isoformat()]
    args += ["--dump", str(dump)]
    with open(tmp / f"{name}.log", "w") as log:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        ready = process.stdout.readline()
        assert ready.startswith("READY "), (tmp / f"{name}.log").read_text()[-4000:]
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stdout.close()


def freqtrade_consumer(python: str, stack: Stack, token: str, out: Path):
    args = [python, str(HARNESS / "freqtrade_consumer.py"), "--host", "127.0.0.1"]
    args += ["--port", str(stack.port), "--token", token, "--timeframe", "5m"]
    args += ["--expect-pairs", str(len(PAIRS)), "--min-rows", str(FT_MIN_ROWS)]
    args += ["--wait-new-candle", "--timeout", "180", "--sleep-time", "1"]
    args += ["--out", str(out)]
    log = open(stack.tmp / "ft-consumer.log", "w")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)


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


def test_it_relays_a_freqtrade_bot_through_a_restart(freqtrade_python, tmp_path):
    """Both consumers end with the upstream's frames; the restart changes nothing."""
    stack = Stack(tmp_path)
    stack.env["LOG_LEVEL"] = "DEBUG"  # the consumer strategy's per-pair lines
    port = free_port()
    first, final = tmp_path / "up1", tmp_path / "up2"
    ft_out, our_out = tmp_path / "ft", tmp_path / "ours"
    try:
        stack.manage("migrate")
        secrets = stack.python(SETUP.format(port=port, token=UPSTREAM_TOKEN))
        (tmp_path / "producer.key").write_text(secrets["producer_key"])
        (tmp_path / "consumer.key").write_text(secrets["consumer_key"])
        with upstream(freqtrade_python, tmp_path, port, ROWS, first, "up1") as up:
            stack.start_hub()
            stack.start(
                "relay",
                "runproducer",
                "relayed",
                env={"CANDLECAST_PRODUCER_KEY_FILE": str(tmp_path / "producer.key")},
            )
            stack.start(
                "consumer",
                "runconsumer",
                "follower",
                "--dump",
                str(our_out),
                env={"CANDLECAST_CONSUMER_KEY_FILE": str(tmp_path / "consumer.key")},
            )
            ft = freqtrade_consumer(
                freqtrade_python, stack, secrets["feed_token"], ft_out
            )
            stack.wait_until(
                "our consumer loaded",
                lambda: "all 3 pairs loaded" in stack.log("consumer"),
                90,
            )
            stack.wait_until(
                "both consumers connected to the hub",
                lambda: stack.log("hub").count("connected to relayed with token") >= 2,
                60,
            )
            up.send_signal(signal.SIGTERM)
            assert up.wait(30) == 0
        stopped_at = last_date(first)
        stack.wait_until(
            "the relay saw the upstream go",
            lambda: "reconnecting in" in stack.log("relay"),
        )
        restart_rows = int((stopped_at - START) / STEP) + 1 + MISSED
        assert restart_rows < FT_MIN_ROWS, "the upstream ran too far before the restart"
        with upstream(
            freqtrade_python, tmp_path, port, restart_rows, final, "up2"
        ) as up:
            restarted_at = START + (restart_rows - 1) * STEP
            assert ft.wait(200) == 0, (tmp_path / "ft-consumer.log").read_text()[-6000:]
            stack.wait_until(
                "our consumer ran on candles after the restart",
                lambda: (
                    len(runs(stack.log("consumer"))) == len(PAIRS)
                    and min(runs(stack.log("consumer")).values()) > restarted_at
                ),
                60,
            )
            assert stack.stop("consumer") == 0
            up.send_signal(signal.SIGTERM)
            assert up.wait(30) == 0
        upstream_log = (tmp_path / "up2.log").read_text()
        relay_log = stack.log("relay")
    except BaseException:
        print(stack.logs(), file=sys.stderr)
        raise
    finally:
        stack.close()
    # The restarted upstream served exactly one consumer: the relay.
    assert upstream_log.count("Connected to channel") == 1, upstream_log[-3000:]
    assert "refused" not in relay_log
    expected = {pair: pd.read_parquet(final / file_name(pair)) for pair in PAIRS}
    dtypes = json.loads((final / "dtypes.json").read_text())
    compare(ft_out, expected, dtypes, freqtrade=True, after=stopped_at)
    compare(our_out / "default", expected, dtypes, freqtrade=False, after=stopped_at)


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
        # Frames span the restart, and the candles missed while it was down
        # were filled: no hole anywhere.
        assert mine["date"].iloc[0] < after < mine["date"].iloc[-1]
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
