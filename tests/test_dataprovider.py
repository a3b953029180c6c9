"""DataProvider: FreqTrade's get_producer_df/get_producer_pairs, plus staleness."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from consumers.dataprovider import DataProvider
from controlplane.lib.feedclient.framestore import FrameStore

LA = datetime(2026, 1, 1, 12, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FakeClock:
    """An injectable clock the test moves by hand."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_frame(last_open: str, rows: int = 3, freq: str = "5min") -> pd.DataFrame:
    dates = pd.date_range(
        end=pd.Timestamp(last_open, tz="UTC"), periods=rows, freq=freq
    )
    return pd.DataFrame(
        {
            "date": dates,
            "close": [float(n) for n in range(rows)],
            "enter_long": 1.0,
            "exit_long": 0.0,
            "enter_tag": "breakout",
        }
    )


def provider_with(
    frames: dict[tuple[str, str, str], pd.DataFrame], **kwargs
) -> tuple[DataProvider, FrameStore]:
    store = FrameStore()
    for key, frame in frames.items():
        store.apply(key, frame, LA)
    store.set_whitelist(sorted({key[0] for key in frames}))
    dp = DataProvider(**kwargs)
    dp.attach("default", store)
    return dp, store


def test_it_returns_an_empty_frame_and_the_epoch_when_unknown():
    dp, _ = provider_with({("BTC/USDT", "5m", "spot"): make_frame("2026-01-01 11:55")})
    for df, la in (
        dp.get_producer_df("BTC/USDT", producer_name="nobody"),
        dp.get_producer_df("NOPE/USDT"),
        dp.get_producer_df("BTC/USDT", timeframe="1h"),
        dp.get_producer_df("BTC/USDT", candle_type="futures"),
    ):
        assert df.empty and list(df.columns) == []
        assert la == EPOCH
        assert df.attrs == {"stale": False, "age_seconds": None}


def test_it_returns_a_copy_and_last_analyzed():
    dp, store = provider_with(
        {("BTC/USDT", "5m", "spot"): make_frame("2026-01-01 11:55")}
    )
    df, la = dp.get_producer_df("BTC/USDT")
    assert la == LA
    assert list(df["close"]) == [0.0, 1.0, 2.0]
    df.loc[0, "close"] = 99.0
    stored, _ = store.get(("BTC/USDT", "5m", "spot"))
    assert stored.loc[0, "close"] == 0.0


def test_it_defaults_to_the_strategy_timeframe_and_candle_type():
    frames = {
        ("BTC/USDT", "1h", "futures"): make_frame("2026-01-01 11:00", freq="1h"),
        ("BTC/USDT", "5m", "spot"): make_frame("2026-01-01 11:55"),
    }
    dp, _ = provider_with(frames, timeframe="1h", candle_type="futures")
    assert dp.get_producer_df("BTC/USDT")[0]["date"].iloc[-1].hour == 11
    spot, _ = dp.get_producer_df("BTC/USDT", timeframe="5m", candle_type="spot")
    assert spot["date"].iloc[-1].minute == 55


def test_it_keeps_producers_apart():
    dp, _ = provider_with({("BTC/USDT", "5m", "spot"): make_frame("2026-01-01 11:55")})
    other = FrameStore()
    other.set_whitelist(["ETH/USDT"])
    dp.attach("second", other)
    assert dp.get_producer_pairs() == ["BTC/USDT"]
    assert dp.get_producer_pairs("second") == ["ETH/USDT"]
    assert dp.get_producer_df("BTC/USDT", producer_name="second")[0].empty


def test_it_returns_a_copy_of_the_whitelist():
    dp, _ = provider_with({("BTC/USDT", "5m", "spot"): make_frame("2026-01-01 11:55")})
    dp.get_producer_pairs().append("XRP/USDT")
    assert dp.get_producer_pairs() == ["BTC/USDT"]
    assert dp.get_producer_pairs("unknown") == []


def test_it_marks_fresh_frames_and_keeps_their_signals():
    # The 11:55 5m candle closes at 12:00; two minutes later it is 120 s old.
    clock = FakeClock(datetime(2026, 1, 1, 12, 2, tzinfo=UTC))
    frames = {("BTC/USDT", "5m", "spot"): make_frame("2026-01-01 11:55")}
    dp, _ = provider_with(frames, max_signal_age=300, clock=clock)
    df, _ = dp.get_producer_df("BTC/USDT")
    assert df.attrs == {"stale": False, "age_seconds": 120.0}
    assert (df["enter_long"] == 1.0).all()
    assert not dp.is_stale("BTC/USDT")


def test_it_removes_signals_from_stale_frames():
    clock = FakeClock(datetime(2026, 1, 1, 12, 2, tzinfo=UTC))
    frames = {("BTC/USDT", "5m", "spot"): make_frame("2026-01-01 11:55")}
    dp, store = provider_with(frames, max_signal_age=300, clock=clock)
    clock.now += timedelta(minutes=4)  # 360 s after the close
    df, _ = dp.get_producer_df("BTC/USDT")
    assert df.attrs == {"stale": True, "age_seconds": 360.0}
    assert dp.is_stale("BTC/USDT")
    assert (df["enter_long"] == 0).all() and (df["exit_short"] == 0).all()
    assert df["enter_tag"].isna().all()
    # Only the copy: the stored frame keeps the producer's signals.
    stored, _ = store.get(("BTC/USDT", "5m", "spot"))
    assert (stored["enter_long"] == 1.0).all()


def test_it_ages_monthly_candles_by_the_calendar():
    """The February candle closes on March 1st, not 30 days after it opened."""
    clock = FakeClock(datetime(2026, 3, 1, 0, 10, tzinfo=UTC))
    months = {("BTC/USDT", "1M", "spot"): make_frame("2026-02-01", 2, freq="MS")}
    dp, _ = provider_with(months, timeframe="1M", max_signal_age=3600, clock=clock)
    assert dp.get_producer_df("BTC/USDT")[0].attrs["age_seconds"] == 600.0
    assert not dp.is_stale("BTC/USDT")


def test_it_counts_missing_data_as_stale_only_when_checking():
    dp = DataProvider(max_signal_age=60)
    assert dp.is_stale("BTC/USDT")
    assert dp.get_producer_df("BTC/USDT")[0].attrs["stale"] is True
    assert not DataProvider().is_stale("BTC/USDT")


def test_it_never_marks_stale_without_max_signal_age():
    clock = FakeClock(datetime(2027, 1, 1, tzinfo=UTC))
    frames = {("BTC/USDT", "5m", "spot"): make_frame("2026-01-01 11:55")}
    dp, _ = provider_with(frames, clock=clock)
    df, _ = dp.get_producer_df("BTC/USDT")
    assert df.attrs["stale"] is False and df.attrs["age_seconds"] > 3e7
    assert (df["enter_long"] == 1.0).all()


def test_it_refuses_bad_settings():
    with pytest.raises(ValueError, match="not a timeframe"):
        DataProvider(timeframe="5 minutes")
    with pytest.raises(ValueError, match="max_signal_age"):
        DataProvider(max_signal_age=-1)


def test_it_reads_while_the_worker_writes():
    key = ("BTC/USDT", "5m", "spot")
    start = pd.Timestamp("2026-01-01 11:55", tz="UTC")
    dp, store = provider_with({key: make_frame("2026-01-01 11:55", rows=200)})
    done, errors = threading.Event(), []

    def write():
        for n in range(1, 300):
            store.apply(key, make_frame(str(start + n * pd.Timedelta("5min")), 1), LA)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not done.is_set():
        df, _ = dp.get_producer_df("BTC/USDT")
        if df.empty or not df["date"].is_monotonic_increasing:
            errors.append(len(df))
    writer.join()
    assert errors == []
    assert len(dp.get_producer_df("BTC/USDT")[0]) == 499
