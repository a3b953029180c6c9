"""Candle sources: the synthetic walk, file replay and building them from options."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from controlplane.lib.candles import epoch_ms
from producers.sources import (
    FileSource,
    SourceError,
    SyntheticSource,
    build_source,
    candle_file_paths,
)

# A 5m boundary (divisible by 300) on 2027-01-15, well after any candle in the tests.
BOUNDARY = 1_800_000_000 - 1_800_000_000 % 300
FIVE_MINUTES = pd.Timedelta("5min")


class FakeClock:
    """Wall-clock seconds that move only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def synthetic(**options) -> tuple[SyntheticSource, FakeClock]:
    clock = FakeClock(options.pop("at", BOUNDARY + 100.0))
    return SyntheticSource(
        options.pop("timeframe", "5m"), clock=clock, **options
    ), clock


def assert_candles(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == ["date", "open", "high", "low", "close", "volume"]
    assert str(frame["date"].dtype) == "datetime64[ms, UTC]"
    assert (frame.dtypes.iloc[1:] == "float64").all()
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
    assert (frame["volume"] > 0).all()
    assert frame["date"].is_monotonic_increasing


# Synthetic source


def test_it_returns_only_closed_candles_in_real_time() -> None:
    source, clock = synthetic()
    frame = source.history("BTC/USDT", 1500)
    assert len(frame) == 1500
    assert_candles(frame)
    last = frame["date"].iloc[-1]
    assert last + FIVE_MINUTES == pd.Timestamp(BOUNDARY, unit="s", tz="UTC")
    assert source.seconds_until_next_close() == pytest.approx(200.0)
    clock.now = BOUNDARY + 300.0
    assert source.history("BTC/USDT", 1)["date"].iloc[-1] == last + FIVE_MINUTES


def test_it_makes_the_same_candles_for_the_same_dates() -> None:
    early, _ = synthetic(seed=4)
    later, _ = synthetic(seed=4, at=BOUNDARY + 7 * 86400.0)
    a = early.history("ETH/USDT", 3000)
    b = later.history("ETH/USDT", 6000)
    pd.testing.assert_frame_equal(
        a, b[b["date"] <= a["date"].iloc[-1]].tail(3000).reset_index(drop=True)
    )


def test_it_differs_by_seed_and_by_pair() -> None:
    one, _ = synthetic(seed=1)
    two, _ = synthetic(seed=2)
    assert not np.allclose(
        one.history("BTC/USDT", 50)["close"], two.history("BTC/USDT", 50)["close"]
    )
    assert one._start_price("BTC/USDT") != one._start_price("ETH/USDT")


def test_it_makes_the_same_candles_in_another_process() -> None:
    source, _ = synthetic(seed=9)
    here = source.history("DOGE/USDT", 5)["close"].tolist()
    code = (
        "from producers.sources import SyntheticSource as S;"
        f"s = S('5m', seed=9, clock=lambda: {BOUNDARY + 100.0});"
        "print(s.history('DOGE/USDT', 5)['close'].tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert json.loads(out.stdout) == here


def test_it_joins_blocks_without_a_jump() -> None:
    source, _ = synthetic(volatility=0.002)
    frame = source.history("BTC/USDT", 3 * SyntheticSource.BLOCK)
    assert (frame["open"].iloc[1:].to_numpy() == frame["close"].iloc[:-1]).all()
    returns = np.log(frame["close"]).diff().dropna()
    assert returns.abs().max() < 0.002 * 6
    assert returns.std() == pytest.approx(0.002, rel=0.1)


def test_it_runs_a_fast_clock_from_the_current_candle_boundary() -> None:
    source, clock = synthetic(seconds_per_candle=2.0)
    start = pd.Timestamp(BOUNDARY, unit="s", tz="UTC")
    assert source.now() == start
    assert source.seconds_until_next_close() == pytest.approx(2.0)
    last = source.history("BTC/USDT", 10)["date"].iloc[-1]
    clock.advance(7.0)
    assert source.now() == start + 3.5 * FIVE_MINUTES
    assert source.seconds_until_next_close() == pytest.approx(1.0)
    new = source.candles_after("BTC/USDT", last)
    assert new["date"].tolist() == [last + k * FIVE_MINUTES for k in (1, 2, 3)]
    assert_candles(new)


def test_it_returns_nothing_after_the_newest_closed_candle() -> None:
    source, _ = synthetic()
    last = source.history("BTC/USDT", 1)["date"].iloc[-1]
    assert source.candles_after("BTC/USDT", last).empty
    between = source.candles_after("BTC/USDT", last - pd.Timedelta("7min"))
    assert between["date"].tolist() == [last - FIVE_MINUTES, last]


def test_it_leaves_gaps_when_asked_to_skip_candles() -> None:
    source, _ = synthetic(skip_every=4)
    frame = source.history("BTC/USDT", 300)
    assert len(frame) == 300
    index = frame["date"].astype("int64") // 1000 // 300
    assert (index % 4 != 0).all()
    assert (frame["date"].diff().dropna() == 2 * FIVE_MINUTES).sum() >= 70


def test_it_aligns_monthly_candles_to_calendar_months() -> None:
    at = pd.Timestamp("2026-03-10 12:00", tz="UTC").timestamp()
    source, _ = synthetic(timeframe="1M", at=at)
    frame = source.history("BTC/USDT", 3)
    assert [d.strftime("%Y-%m-%d") for d in frame["date"]] == [
        "2025-12-01",
        "2026-01-01",
        "2026-02-01",
    ]
    march = pd.Timestamp("2026-04-01", tz="UTC").timestamp() - at
    assert source.seconds_until_next_close() == pytest.approx(march)


def test_it_serves_100_pairs_of_history_in_well_under_a_second() -> None:
    source, _ = synthetic()
    started = time.perf_counter()
    frames = [source.history(f"C{i}/USDT", 1500) for i in range(100)]
    assert time.perf_counter() - started < 1.0
    assert all(len(f) == 1500 for f in frames)


# File source, in the layout of 'freqtrade download-data'


def candles(rows: int, start: str = "2026-01-01") -> pd.DataFrame:
    dates = pd.date_range(start, periods=rows, freq="5min", tz="UTC").as_unit("ms")
    close = 100.0 + np.arange(rows)
    return pd.DataFrame(
        {
            "date": dates,
            "open": close - 0.5,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume": close * 10,
        }
    )


def write_feather(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The way FreqTrade's FeatherDataHandler stores candles.
    frame.reset_index(drop=True).to_feather(
        path, compression_level=9, compression="lz4"
    )


def write_json(path: Path, frame: pd.DataFrame) -> None:
    rows = frame.assign(date=frame["date"].astype("int64")).to_numpy().tolist()
    rows = [[int(r[0]), *r[1:]] for r in rows]
    path.write_text(json.dumps(rows))


def replay(tmp_path: Path, pairs: list[str], **options) -> tuple[FileSource, FakeClock]:
    clock = FakeClock(1_000_000.0)
    timeframe = options.pop("timeframe", "5m")
    source = FileSource(timeframe, pairs, datadir=tmp_path, clock=clock, **options)
    return source, clock


def test_it_reads_feather_and_json_files_alike(tmp_path: Path) -> None:
    write_feather(tmp_path / "BTC_USDT-5m.feather", candles(30))
    write_json(tmp_path / "ETH_USDT-5m.json", candles(30))
    source, _ = replay(tmp_path, ["BTC/USDT", "ETH/USDT"])
    feather = source.history("BTC/USDT", 100)
    assert_candles(feather)
    pd.testing.assert_frame_equal(feather, source.history("ETH/USDT", 100))
    pd.testing.assert_frame_equal(feather, candles(30))


def test_it_finds_futures_mark_and_funding_files(tmp_path: Path) -> None:
    futures = tmp_path / "futures"
    write_feather(futures / "BTC_USDT_USDT-5m-futures.feather", candles(10))
    write_feather(futures / "BTC_USDT_USDT-5m-mark.feather", candles(10))
    rates = candles(10)[["date"]].assign(funding_rate=0.0001)
    write_feather(futures / "BTC_USDT_USDT-5m-funding_rate.feather", rates)
    for candle_type in ("futures", "mark"):
        source = build_source(
            "files", "5m", {"datadir": str(tmp_path)}, ["BTC/USDT:USDT"], candle_type
        )
        assert len(source.history("BTC/USDT:USDT", 50)) == 10
    funding = build_source(
        "files", "5m", {"datadir": str(tmp_path)}, ["BTC/USDT:USDT"], "funding_rate"
    )
    frame = funding.history("BTC/USDT:USDT", 50)
    assert list(frame.columns) == ["date", "funding_rate", "open"]
    assert (frame["open"] == 0.0001).all()


def test_it_reads_monthly_files_named_the_freqtrade_way(tmp_path: Path) -> None:
    months = pd.date_range("2025-01-01", periods=6, freq="MS", tz="UTC")
    frame = candles(6).assign(date=months.as_unit("ms"))
    write_feather(tmp_path / "BTC_USDT-1Mo.feather", frame)
    source, _ = replay(tmp_path, ["BTC/USDT"], timeframe="1M", start=4)
    assert source.now() == pd.Timestamp("2025-05-01", tz="UTC")
    assert len(source.history("BTC/USDT", 10)) == 4


def test_it_replays_candles_as_replay_time_passes(tmp_path: Path) -> None:
    write_feather(tmp_path / "BTC_USDT-5m.feather", candles(20))
    source, clock = replay(tmp_path, ["BTC/USDT"], start=10, seconds_per_candle=2)
    first = source.history("BTC/USDT", 1500)
    assert len(first) == 10
    assert source.now() == first["date"].iloc[-1] + FIVE_MINUTES
    assert source.seconds_until_next_close() == pytest.approx(2.0)
    clock.advance(5.0)
    new = source.candles_after("BTC/USDT", first["date"].iloc[-1])
    pd.testing.assert_frame_equal(new, candles(20).iloc[10:12].reset_index(drop=True))
    assert source.seconds_until_next_close() == pytest.approx(1.0)


def test_it_says_when_the_replay_has_ended(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_feather(tmp_path / "BTC_USDT-5m.feather", candles(20))
    source, clock = replay(tmp_path, ["BTC/USDT"], start=18, seconds_per_candle=1)
    assert math.isfinite(source.seconds_until_next_close())
    clock.advance(2.0)
    with caplog.at_level(logging.INFO, logger="producers.sources"):
        assert source.seconds_until_next_close() == math.inf
        assert source.seconds_until_next_close() == math.inf
    ended = [r for r in caplog.records if "has ended" in r.getMessage()]
    assert len(ended) == 1
    assert len(source.history("BTC/USDT", 100)) == 20


def test_it_starts_with_the_whole_file_when_it_is_short(tmp_path: Path) -> None:
    write_feather(tmp_path / "BTC_USDT-5m.feather", candles(40))
    source, _ = replay(tmp_path, ["BTC/USDT"])
    assert len(source.history("BTC/USDT", 1500)) == 40
    assert source.seconds_until_next_close() == math.inf


def test_it_keeps_one_clock_over_pairs_of_different_length(tmp_path: Path) -> None:
    write_feather(tmp_path / "BTC_USDT-5m.feather", candles(30))
    write_feather(
        tmp_path / "ETH_USDT-5m.feather", candles(20, start="2026-01-01 00:50")
    )
    source, _ = replay(tmp_path, ["BTC/USDT", "ETH/USDT"], start=5)
    # ETH's fifth candle closes at 01:15, so BTC already has 15 closed by then.
    assert source.now() == pd.Timestamp("2026-01-01 01:15", tz="UTC")
    assert len(source.history("ETH/USDT", 100)) == 5
    assert len(source.history("BTC/USDT", 100)) == 15


def test_it_names_the_paths_it_tried_for_a_missing_pair(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        replay(tmp_path, ["SOL/USDT"])
    message = str(info.value)
    assert str(tmp_path / "SOL_USDT-5m.feather") in message
    assert str(tmp_path / "SOL_USDT-5m.json") in message
    assert "freqtrade download-data --pairs SOL/USDT --timeframes 5m" in message


def test_it_suggests_futures_mode_for_a_missing_futures_pair(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="--trading-mode futures") as info:
        build_source(
            "files", "1h", {"datadir": str(tmp_path)}, ["BTC/USDT:USDT"], "futures"
        )
    assert "futures/BTC_USDT_USDT-1h-futures.feather" in str(info.value)


def test_it_refuses_a_file_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "BTC_USDT-5m.json").write_text("[[1, 2, 3]]")
    with pytest.raises(SourceError, match="Cannot read candles from .*BTC_USDT-5m"):
        replay(tmp_path, ["BTC/USDT"])


def test_it_lays_out_paths_like_freqtrade() -> None:
    paths = candle_file_paths(Path("/d"), "BTC/USDT:USDT", "1M", "mark")
    assert paths[0] == Path("/d/futures/BTC_USDT_USDT-1Mo-mark.feather")
    assert Path("/d/futures/BTC_USDT_USDT-1M-mark.json") in paths


# Building a source from a producer's options


def test_it_builds_each_kind_from_options(tmp_path: Path) -> None:
    write_feather(tmp_path / "BTC_USDT-5m.feather", candles(5))
    synthetic_source = build_source("synthetic", "5m", {"seed": 3}, ["BTC/USDT"])
    assert isinstance(synthetic_source, SyntheticSource)
    assert synthetic_source.seed == 3
    files = build_source(
        "files", "5m", {"datadir": str(tmp_path), "start": 2}, ["BTC/USDT"]
    )
    assert isinstance(files, FileSource)
    assert len(files.history("BTC/USDT", 10)) == 2


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        (
            "exchange",
            {},
            "Unknown candle source 'exchange'; use one of synthetic, files",
        ),
        (
            "synthetic",
            {"sede": 1},
            "option.s. sede; valid options are seed, seconds_per_candle, start_price",
        ),
        (
            "files",
            {"path": "x"},
            "valid options are datadir, seconds_per_candle, start",
        ),
        ("files", {}, "Option datadir is required"),
        ("synthetic", {"seconds_per_candle": 0}, "must be a number above 0, not 0"),
        ("synthetic", {"seed": "one"}, "seed of the synthetic source must be a whole"),
        ("synthetic", {"skip_every": 1}, "skip_every must be at least 2"),
        ("synthetic", {"volatility": True}, "volatility .* must be a number"),
        ("synthetic", [], "must be a JSON object"),
    ],
)
def test_it_explains_bad_source_options(kind, options, message) -> None:
    with pytest.raises(SourceError, match=message):
        build_source(kind, "5m", options, ["BTC/USDT"])


def test_it_refuses_an_unknown_timeframe_or_candle_type() -> None:
    with pytest.raises(SourceError, match="not a timeframe"):
        build_source("synthetic", "5x", {}, [])
    with pytest.raises(SourceError, match="Unknown candle type 'perp'"):
        build_source("synthetic", "5m", {}, [], "perp")


def test_it_runs_a_fast_clock_on_from_where_a_restarted_worker_left_it() -> None:
    """Issue 15: a restart re-anchored the clock hours behind the published history."""
    first, clock = synthetic(seconds_per_candle=2.0)
    clock.advance(20.0)
    published = first.history("BTC/USDT", 30)
    newest = published["date"].iloc[-1]
    stored_at = clock()
    clock.advance(20.0)  # the worker is down; the market runs on
    restarted = SyntheticSource("5m", seconds_per_candle=2.0, clock=clock)
    assert restarted.history("BTC/USDT", 1)["date"].iloc[-1] < newest
    assert restarted.resume(epoch_ms(newest), stored_at)
    history = restarted.history("BTC/USDT", 30)
    assert history["date"].iloc[-1] == newest + 10 * FIVE_MINUTES
    pd.testing.assert_frame_equal(history, first.history("BTC/USDT", 30))
    assert restarted.now() == first.now()


def test_it_keeps_a_clock_that_is_already_past_the_published_candles() -> None:
    source, clock = synthetic(seconds_per_candle=2.0)
    newest = source.history("BTC/USDT", 1)["date"].iloc[-1]
    assert not source.resume(epoch_ms(newest - 3 * FIVE_MINUTES), clock())
    assert source.history("BTC/USDT", 1)["date"].iloc[-1] == newest
    real, _ = synthetic()
    assert not real.resume(epoch_ms(newest + 100 * FIVE_MINUTES), clock())
