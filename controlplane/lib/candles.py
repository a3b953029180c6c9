"""Timeframes and candle types, as FreqTrade spells them.

Pure module, the one home of candle maths: candle lengths, open and close times, gaps
and epoch milliseconds. ``timeframe_seconds`` understands every FreqTrade timeframe,
months and years included (FreqTrade's gap check fails on those; ours must not).
numpy and pandas are imported inside the functions that need them: the hub imports
this module and never loads pandas.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

CANDLE_TYPES = (
    "spot",
    "futures",
    "mark",
    "index",
    "premiumIndex",
    "funding_rate",
    "open_interest",
)

_UNITS = {
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "M": 2592000,
    "y": 31536000,
}
_TIMEFRAME = re.compile(r"^([1-9][0-9]{0,3})([smhdwMy])$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timeframe_seconds(timeframe: str) -> int:
    """Nominal length of a timeframe in seconds (a month counts 30 days, a year 365).

    Raises:
        ValueError: when ``timeframe`` is not like ``5m``, ``1h``, ``1d`` or ``1M``.
    """
    match = _TIMEFRAME.match(timeframe or "")
    if not match:
        raise ValueError(
            f"{timeframe!r} is not a timeframe: use a number and a unit, "
            "like 1m, 5m, 1h, 4h, 1d, 1w or 1M"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def is_calendar_timeframe(timeframe: str) -> bool:
    """Months and years have no fixed length: candles align to calendar boundaries."""
    return timeframe[-1:] in ("M", "y")


def timeframe_ms(timeframe: str) -> int:
    """Nominal length of a timeframe in milliseconds, the wire's unit for dates."""
    return timeframe_seconds(timeframe) * 1000


def calendar_months(timeframe: str) -> int:
    """Months per candle for 1M/3M/1y-style timeframes, 0 for fixed-length ones."""
    if not is_calendar_timeframe(timeframe):
        return 0
    return int(timeframe[:-1]) * (12 if timeframe[-1] == "y" else 1)


def epoch_ms(when: float | datetime) -> int:
    """Milliseconds since the epoch of a moment: epoch seconds or a datetime.

    A naive datetime is UTC (as the wire protocol says); seconds are rounded to the
    nearest millisecond, so float error cannot drop one.
    """
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return (when - _EPOCH) // timedelta(milliseconds=1)
    return round(when * 1000)


def candle_steps(earlier: datetime, later: datetime, timeframe: str) -> float:
    """How many ``timeframe`` candles separate two candle open dates.

    Months and years are counted on the calendar (a month is not 30 days), so 1M and
    1y gaps are measured where FreqTrade's ``to_timedelta`` raises.
    """
    if months := calendar_months(timeframe):
        first, last = _utc(earlier), _utc(later)
        return ((last.year - first.year) * 12 + (last.month - first.month)) / months
    delta = _utc(later) - _utc(earlier)
    return delta.total_seconds() / timeframe_seconds(timeframe)


def candle_length(timeframe: str) -> pd.DateOffset | pd.Timedelta:
    """One candle as something to add to open dates (one, or a pandas Series).

    pandas is imported here, not at the top: the hub imports this module and must
    never load pandas (tests/test_layering.py).
    """
    import pandas as pd

    if months := calendar_months(timeframe):
        return pd.DateOffset(months=months)
    return pd.Timedelta(seconds=timeframe_seconds(timeframe))


def candle_close(open_date: datetime, timeframe: str) -> pd.Timestamp:
    """When the candle that opened at ``open_date`` closes (calendar-aware)."""
    import pandas as pd

    return pd.Timestamp(_utc(open_date)) + candle_length(timeframe)


def candle_open_seconds(index: np.ndarray, timeframe: str) -> np.ndarray:
    """Open times (epoch seconds) of candles numbered from the epoch.

    Fixed timeframes align to multiples of their length (as FreqTrade's date rounding
    does); months and years align to calendar months.
    """

    if not (months := calendar_months(timeframe)):
        return index.astype("int64") * timeframe_seconds(timeframe)
    starts = (index.astype("int64") * months).astype("datetime64[M]")
    return starts.astype("datetime64[s]").astype("int64")


def candle_position(seconds: float, timeframe: str) -> float:
    """Fractional candle index at a moment: 3.5 is halfway through candle 3."""
    import numpy as np

    if not (months := calendar_months(timeframe)):
        # The microsecond nudge keeps exact boundaries from flooring one below.
        return (seconds + 1e-6) / timeframe_seconds(timeframe)
    month = np.datetime64(int(seconds * 1e6), "us").astype("datetime64[M]")
    index = int(month.astype("int64")) // months
    start, end = candle_open_seconds(np.array([index, index + 1]), timeframe)
    return index + (seconds - start) / (end - start)


def _utc(moment: datetime) -> datetime:
    # The wire protocol says naive datetimes are UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
