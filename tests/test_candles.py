"""Candle maths: lengths, calendar months, open and close times, epoch milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from controlplane.lib.candles import (
    calendar_months,
    candle_close,
    candle_length,
    candle_open_seconds,
    candle_position,
    candle_steps,
    epoch_ms,
    timeframe_ms,
)

JAN = datetime(2026, 1, 1, tzinfo=UTC)


def test_it_measures_fixed_timeframes_in_milliseconds() -> None:
    assert timeframe_ms("5m") == 300_000
    assert timeframe_ms("1h") == 3_600_000
    assert calendar_months("1d") == 0


def test_it_counts_months_per_calendar_candle() -> None:
    assert calendar_months("1M") == 1
    assert calendar_months("3M") == 3
    assert calendar_months("1y") == 12


def test_it_closes_candles_on_the_calendar() -> None:
    assert candle_close(datetime(2026, 2, 1), "1M") == pd.Timestamp("2026-03-01T00:00Z")
    assert candle_close(JAN, "1y") == pd.Timestamp("2027-01-01T00:00Z")
    assert candle_close(JAN, "3M") == pd.Timestamp("2026-04-01T00:00Z")
    assert candle_close(JAN, "4h") == pd.Timestamp("2026-01-01T04:00Z")


def test_it_adds_a_candle_to_a_series_of_dates() -> None:
    dates = pd.Series(pd.to_datetime(["2024-01-01", "2024-02-01"], utc=True))
    closes = dates + candle_length("1M")
    assert list(closes) == list(pd.to_datetime(["2024-02-01", "2024-03-01"], utc=True))


def test_it_counts_steps_between_open_dates() -> None:
    assert candle_steps(JAN, datetime(2026, 3, 1, tzinfo=UTC), "1M") == 2
    assert candle_steps(JAN, datetime(2028, 1, 1, tzinfo=UTC), "1y") == 2
    assert candle_steps(JAN, datetime(2026, 1, 1, 1), "15m") == 4


def test_it_numbers_candles_from_the_epoch() -> None:
    opens = candle_open_seconds(np.array([0, 1, 13]), "1M")
    feb_1971 = int(datetime(1971, 2, 1, tzinfo=UTC).timestamp())
    assert list(opens) == [0, 31 * 86400, feb_1971]
    assert list(candle_open_seconds(np.array([2]), "5m")) == [600]


def test_it_places_moments_between_candle_boundaries() -> None:
    assert candle_position(600.0, "5m") >= 2  # an exact boundary is not one below
    feb = datetime(2026, 2, 1, tzinfo=UTC).timestamp()
    middle = candle_position(JAN.timestamp() + (feb - JAN.timestamp()) / 2, "1M")
    assert middle == (2026 - 1970) * 12 + 0.5


def test_it_converts_to_epoch_milliseconds() -> None:
    assert epoch_ms(pd.Timestamp("2026-01-01T00:00:00.123Z")) == 1767225600123
    assert epoch_ms(datetime(2026, 1, 1)) == 1767225600000  # naive is UTC
    assert epoch_ms(1700000000.123) == 1700000000123
    assert epoch_ms(1.0006) == 1001  # rounded to the nearest millisecond
