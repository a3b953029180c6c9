"""Timeframes and candle types, as FreqTrade spells them.

Pure module. ``timeframe_seconds`` understands every FreqTrade timeframe, months and
years included (FreqTrade's gap check fails on those; ours must not).
"""

from __future__ import annotations

import re

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
