"""Technical indicators for strategies, in pandas and numpy only (no TA library).

Each function follows TA-Lib's definition (seeding, smoothing, lookback), so values
match ``talib.RSI``, ``talib.EMA``, ``talib.BBANDS``, ``talib.MACD`` and ``talib.ATR``
and rows before the lookback are NaN. Inputs are float series without gaps (OHLCV).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd


class BollingerBands(NamedTuple):
    middle: pd.Series
    upper: pd.Series
    lower: pd.Series


class Macd(NamedTuple):
    macd: pd.Series
    signal: pd.Series
    hist: pd.Series


def _check_period(period: int, name: str = "period") -> None:
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"{name} must be a positive whole number, not {period!r}")


def _seeded_smoothing(
    values: pd.Series, period: int, alpha: float, seed_end: int
) -> pd.Series:
    """Recursive smoothing seeded with the mean of the ``period`` values up to
    ``seed_end``; NaN before it. This is how TA-Lib starts EMA, RSI and ATR."""
    arr = values.to_numpy(dtype="float64")
    out = np.full(len(arr), np.nan)
    if period - 1 <= seed_end < len(arr):
        # The recursion y = (1 - alpha) * y_prev + alpha * x is ewm(adjust=False)
        # once the first value is replaced by the seed mean.
        tail = arr[seed_end:].copy()
        tail[0] = arr[seed_end - period + 1 : seed_end + 1].mean()
        out[seed_end:] = pd.Series(tail).ewm(alpha=alpha, adjust=False).mean()
    return pd.Series(out, index=values.index)


def sma(series: pd.Series, period: int = 30) -> pd.Series:
    """Simple moving average; the first value is at row ``period - 1``."""
    _check_period(period)
    return series.astype("float64").rolling(period, min_periods=period).mean()


def ema(series: pd.Series, period: int = 30) -> pd.Series:
    """Exponential moving average with k = 2 / (period + 1), seeded with the SMA of
    the first ``period`` values (TA-Lib's default, not pandas' ``adjust=True``)."""
    _check_period(period)
    return _seeded_smoothing(series, period, 2.0 / (period + 1), period - 1)


def rsi(close: pd.Series, period: int = 14) -> pd.Series:
    """Relative strength index with Wilder's smoothing; first value at row ``period``.

    A window without any change gives 0, as TA-Lib does.
    """
    _check_period(period)
    diff = close.astype("float64").diff()
    gain = diff.clip(lower=0.0)
    loss = -diff.clip(upper=0.0)
    avg_gain = _seeded_smoothing(gain, period, 1.0 / period, period)
    avg_loss = _seeded_smoothing(loss, period, 1.0 / period, period)
    total = avg_gain + avg_loss
    out = 100.0 * avg_gain / total
    return out.mask(total == 0.0, 0.0)


def bollinger_bands(
    close: pd.Series, period: int = 20, stds: float = 2.0
) -> BollingerBands:
    """SMA middle band, upper/lower at ``stds`` population standard deviations."""
    _check_period(period)
    rolling = close.astype("float64").rolling(period, min_periods=period)
    middle = rolling.mean()
    # ddof=0: TA-Lib's BBANDS uses the population deviation of the window.
    deviation = rolling.std(ddof=0) * stds
    return BollingerBands(middle, middle + deviation, middle - deviation)


def macd(close: pd.Series, fast: int = 12, slow: int = 26, signal: int = 9) -> Macd:
    """MACD line, signal line and histogram, all NaN before row slow + signal - 2.

    As in TA-Lib, the fast EMA is seeded on the window that ends where the slow one
    starts, so both lines begin together.
    """
    for name, value in (("fast", fast), ("slow", slow), ("signal", signal)):
        _check_period(value, name)
    if fast > slow:
        fast, slow = slow, fast
    values = close.astype("float64")
    fast_ema = _seeded_smoothing(values, fast, 2.0 / (fast + 1), slow - 1)
    slow_ema = _seeded_smoothing(values, slow, 2.0 / (slow + 1), slow - 1)
    line = fast_ema - slow_ema
    signal_line = _seeded_smoothing(line, signal, 2.0 / (signal + 1), slow + signal - 2)
    line = line.where(signal_line.notna())
    return Macd(line, signal_line, line - signal_line)


def true_range(high: pd.Series, low: pd.Series, close: pd.Series) -> pd.Series:
    """Greatest of high - low and the gaps to the previous close; NaN on row 0."""
    h, low_ = high.to_numpy("float64"), low.to_numpy("float64")
    prev_close = close.astype("float64").shift(1).to_numpy()
    # np.maximum keeps the NaN of row 0 (no previous close), as TA-Lib does.
    ranges = np.maximum(
        h - low_, np.maximum(abs(h - prev_close), abs(low_ - prev_close))
    )
    return pd.Series(ranges, index=close.index)


def atr(
    high: pd.Series, low: pd.Series, close: pd.Series, period: int = 14
) -> pd.Series:
    """Average true range with Wilder's smoothing; first value at row ``period``."""
    _check_period(period)
    return _seeded_smoothing(true_range(high, low, close), period, 1.0 / period, period)
