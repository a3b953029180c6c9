"""``merge_informative_pair`` with FreqTrade's semantics, for consumer strategies.

Pure module (pandas only). Joins a producer's or an informative frame onto the
strategy's frame so each base candle only sees informative candles that had closed.
Month and year informative candles are placed on the calendar (see ``_merge_dates``).
"""

from __future__ import annotations

import pandas as pd
from pandas import DataFrame

from controlplane.lib.candles import candle_length, timeframe_seconds

MERGE_COLUMN = "date_merge"


def merge_informative_pair(
    dataframe: DataFrame,
    informative: DataFrame,
    timeframe: str,
    timeframe_inf: str,
    ffill: bool = True,
    append_timeframe: bool = True,
    date_column: str = "date",
    suffix: str | None = None,
) -> DataFrame:
    """Left-join ``informative`` onto ``dataframe`` without look-ahead.

    An informative candle lands on the base candle that closes when it closes: the
    14:00 1h candle on the 14:45 15m candle. Every informative column, its date
    included, is renamed ``<col>_<timeframe_inf>`` (``append_timeframe``) or
    ``<col>_<suffix>``. Neither input is modified.

    Args:
        dataframe: the strategy's frame, with a ``date`` column.
        informative: the frame to join, with dates in ``date_column``.
        timeframe: the strategy's timeframe.
        timeframe_inf: the informative timeframe, equal to or longer than ``timeframe``.
        ffill: repeat the last informative candle on every base candle until the
            next one closes (usual for longer timeframes). False joins on exact
            dates only: use it for a producer's signals, which must not repeat.
        append_timeframe: rename with the timeframe.
        date_column: the informative frame's date column.
        suffix: rename with this instead; requires ``append_timeframe=False``.

    Raises:
        ValueError: when ``timeframe_inf`` is shorter than ``timeframe``, or both
            ``suffix`` and ``append_timeframe`` are given.
    """
    merge_dates = _merge_dates(informative, timeframe, timeframe_inf, date_column)
    label = _label(timeframe_inf, append_timeframe, suffix)
    joined = informative.assign(**{MERGE_COLUMN: merge_dates})
    if label:
        joined.columns = [f"{column}_{label}" for column in joined.columns]
    on = f"{MERGE_COLUMN}_{label}" if label else MERGE_COLUMN
    if ffill:
        merged = _merge_forward_filled(dataframe, joined, on)
    else:
        merged = dataframe.merge(joined, how="left", left_on="date", right_on=on)
    return merged.drop(columns=on)


def _merge_dates(
    informative: DataFrame, timeframe: str, timeframe_inf: str, date_column: str
) -> pd.Series:
    """The base candle date each informative row joins: its close minus one base candle.

    FreqTrade uses a calendar month only for "1M" and nominal 30/365-day lengths for
    other month and year timeframes, which lands a year or quarter candle up to a day
    early (look-ahead); here months and years always follow the calendar.
    """
    base, longer = timeframe_seconds(timeframe), timeframe_seconds(timeframe_inf)
    if longer < base:
        raise ValueError(
            f"cannot merge a {timeframe_inf} informative frame into a {timeframe} "
            "frame: a shorter timeframe would add rows; resample the informative "
            "frame to at least the strategy's timeframe"
        )
    dates = informative[date_column]
    if longer == base or informative.empty:
        return dates
    return dates + candle_length(timeframe_inf) - candle_length(timeframe)


def _label(timeframe_inf: str, append_timeframe: bool, suffix: str | None) -> str:
    if suffix and append_timeframe:
        raise ValueError(
            f"got suffix={suffix!r} and append_timeframe=True; choose one: pass "
            "append_timeframe=False to rename columns with the suffix"
        )
    if append_timeframe:
        return timeframe_inf
    return suffix or ""


def _merge_forward_filled(
    dataframe: DataFrame, joined: DataFrame, on: str
) -> DataFrame:
    """Ordered left join that carries each informative row forward until the next."""
    merged = pd.merge_ordered(
        dataframe, joined, fill_method="ffill", left_on="date", right_on=on, how="left"
    )
    if len(merged) < 2 or joined.empty or pd.notna(merged[on].iloc[0]):
        return merged
    # The frames start unaligned: the base rows before the first match have nothing
    # to carry forward yet. Fill them from the last informative row that joins
    # before that first match, as FreqTrade does.
    first = merged[on].first_valid_index()
    if first is None:
        return merged
    earlier = joined[joined[on] < merged.at[first, on]]
    if earlier.empty:
        return merged
    head = merged.index < first
    filled = merged.loc[head].fillna(earlier.iloc[-1])
    merged.loc[head] = filled
    return merged
