"""merge_informative_pair: FreqTrade's documented cases, without FreqTrade installed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from consumers.merge import merge_informative_pair


def candles(start: str, rows: int, freq: str, **columns) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"date": pd.date_range(start, periods=rows, freq=freq, tz="UTC")}
    )
    frame["close"] = np.arange(rows, dtype="float64")
    for name, values in columns.items():
        frame[name] = values
    return frame


def at(frame: pd.DataFrame, when: str) -> pd.Series:
    """The row of ``when``: a date, or a time of day on 2026-01-01."""
    moment = pd.Timestamp(f"2026-01-01 {when}" if len(when) == 5 else when, tz="UTC")
    rows = frame[frame["date"] == moment]
    assert len(rows) == 1, when
    return rows.iloc[0]


def test_it_merges_a_producer_frame_with_the_consumer_recipe():
    """merge_informative_pair(df, producer_df, tf, tf, append_timeframe=False,
    suffix="default"), as FreqTrade's docs show for consumers."""
    base = candles("2026-01-01", 6, "5min")
    producer = candles("2026-01-01", 6, "5min", rsi=[30.0, 40, 50, 60, 70, 80])
    producer["enter_long"] = [np.nan, 1.0, np.nan, np.nan, 1.0, np.nan]
    producer = producer.drop(index=3)  # the producer missed a candle
    merged = merge_informative_pair(
        base,
        producer,
        "5m",
        "5m",
        ffill=False,
        append_timeframe=False,
        suffix="default",
    )
    assert list(merged.columns) == [
        "date",
        "close",
        "date_default",
        "close_default",
        "rsi_default",
        "enter_long_default",
    ]
    assert list(merged["enter_long_default"].fillna(0)) == [0, 1, 0, 0, 1, 0]
    assert merged["rsi_default"].isna().tolist() == [False] * 3 + [True, False, False]
    assert (merged["date_default"].dropna() == producer["date"].to_numpy()).all()


def test_it_forward_fills_a_same_timeframe_merge_by_default():
    base = candles("2026-01-01", 4, "5min")
    producer = candles("2026-01-01", 4, "5min", rsi=[1.0, 2, 3, 4]).drop(index=2)
    merged = merge_informative_pair(
        base, producer, "5m", "5m", append_timeframe=False, suffix="default"
    )
    assert list(merged["rsi_default"]) == [1.0, 2.0, 2.0, 4.0]


def test_it_lands_an_hourly_candle_on_the_quarter_hour_that_closes_with_it():
    base = candles("2026-01-01 12:00", 16, "15min")
    hourly = candles("2026-01-01 12:00", 4, "1h", rsi=[10.0, 20, 30, 40])
    merged = merge_informative_pair(base, hourly, "15m", "1h")
    # The 14:00 1h candle closes at 15:00, as the 14:45 15m candle does.
    assert at(merged, "14:45")["rsi_1h"] == 30.0
    assert at(merged, "14:45")["date_1h"] == pd.Timestamp("2026-01-01 14:00", tz="UTC")
    # Before that, the base rows see the 13:00 candle: no look-ahead.
    assert at(merged, "14:30")["rsi_1h"] == 20.0
    known = merged.dropna(subset=["date_1h"])
    assert (
        known["date_1h"] + pd.Timedelta("1h") <= known["date"] + pd.Timedelta("15min")
    ).all()
    # The 12:00-12:30 rows have no closed hourly candle yet.
    assert merged["rsi_1h"].isna().tolist()[:3] == [True, True, True]


def test_it_appends_the_timeframe_to_every_informative_column():
    base = candles("2026-01-01", 8, "1h")
    four_hourly = candles("2026-01-01", 2, "4h", rsi=[1.0, 2.0])
    merged = merge_informative_pair(base, four_hourly, "1h", "4h")
    assert list(merged.columns) == ["date", "close", "date_4h", "close_4h", "rsi_4h"]
    assert "date_merge" not in "".join(merged.columns)


def test_it_joins_only_exact_dates_without_forward_fill():
    base = candles("2026-01-01 12:00", 16, "15min")
    hourly = candles("2026-01-01 12:00", 4, "1h", rsi=[10.0, 20, 30, 40])
    merged = merge_informative_pair(base, hourly, "15m", "1h", ffill=False)
    filled = merged.dropna(subset=["rsi_1h"])
    assert [d.strftime("%H:%M") for d in filled["date"]] == [
        "12:45",
        "13:45",
        "14:45",
        "15:45",
    ]
    assert list(filled["rsi_1h"]) == [10.0, 20.0, 30.0, 40.0]


def test_it_fills_an_unaligned_start_from_the_last_earlier_candle():
    """Base starts at 05:30: its first rows get the 04:00 candle, closed at 05:00."""
    base = candles("2026-01-01 05:30", 8, "15min")
    hourly = candles("2026-01-01 00:00", 12, "1h", rsi=np.arange(12.0) * 10)
    merged = merge_informative_pair(base, hourly, "15m", "1h")
    assert at(merged, "05:30")["rsi_1h"] == 40.0
    assert at(merged, "05:30")["date_1h"] == pd.Timestamp("2026-01-01 04:00", tz="UTC")
    assert at(merged, "05:45")["rsi_1h"] == 50.0
    assert not merged["rsi_1h"].isna().any()


def test_it_leaves_an_unaligned_start_empty_without_forward_fill():
    base = candles("2026-01-01 05:30", 8, "15min")
    hourly = candles("2026-01-01 00:00", 12, "1h", rsi=np.arange(12.0) * 10)
    merged = merge_informative_pair(base, hourly, "15m", "1h", ffill=False)
    assert np.isnan(at(merged, "05:30")["rsi_1h"])


def test_it_lands_a_monthly_candle_on_the_last_day_of_its_month():
    base = candles("2026-01-01", 60, "1D")
    monthly = candles("2025-12-01", 3, "MS", rsi=[1.0, 2.0, 3.0])
    merged = merge_informative_pair(base, monthly, "1d", "1M")
    assert at(merged, "2026-01-30")["rsi_1M"] == 1.0  # December's candle
    assert at(merged, "2026-01-31")["rsi_1M"] == 2.0  # January closes Feb 1st
    assert at(merged, "2026-02-27")["rsi_1M"] == 2.0
    assert at(merged, "2026-02-28")["rsi_1M"] == 3.0  # February is 28 days long


def test_it_lands_a_yearly_candle_on_the_calendar_in_leap_years():
    """FreqTrade adds 365 days for 1y: the 2028 candle would land a day early."""
    base = candles("2028-12-29", 5, "1D")
    yearly = candles("2027-01-01", 2, "YS", rsi=[27.0, 28.0])
    merged = merge_informative_pair(base, yearly, "1d", "1y")
    assert at(merged, "2028-12-30")["rsi_1y"] == 27.0
    assert at(merged, "2028-12-31")["rsi_1y"] == 28.0


def test_it_adds_empty_columns_for_an_empty_informative_frame():
    base = candles("2026-01-01", 4, "15min")
    merged = merge_informative_pair(base, candles("2026-01-01", 0, "1h"), "15m", "1h")
    assert list(merged.columns) == ["date", "close", "date_1h", "close_1h"]
    assert merged["close_1h"].isna().all()


def test_it_leaves_both_inputs_untouched():
    base = candles("2026-01-01", 8, "15min")
    hourly = candles("2026-01-01", 2, "1h", rsi=[1.0, 2.0])
    before = (base.copy(), hourly.copy())
    merge_informative_pair(base, hourly, "15m", "1h")
    assert_frame_equal(base, before[0])
    assert_frame_equal(hourly, before[1])


def test_it_uses_a_custom_informative_date_column():
    base = candles("2026-01-01", 4, "1h")
    informative = candles("2026-01-01", 4, "1h").rename(columns={"date": "open_time"})
    merged = merge_informative_pair(
        base, informative, "1h", "1h", date_column="open_time"
    )
    assert list(merged["close_1h"]) == [0.0, 1.0, 2.0, 3.0]
    assert "open_time_1h" in merged.columns


def test_it_refuses_a_shorter_informative_timeframe():
    base = candles("2026-01-01", 4, "1h")
    with pytest.raises(ValueError, match="shorter timeframe would add rows"):
        merge_informative_pair(base, candles("2026-01-01", 4, "5min"), "1h", "5m")


def test_it_refuses_a_suffix_together_with_append_timeframe():
    base = candles("2026-01-01", 4, "1h")
    with pytest.raises(ValueError, match="append_timeframe=False"):
        merge_informative_pair(base, base, "1h", "1h", suffix="default")
