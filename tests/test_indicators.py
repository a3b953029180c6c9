"""Indicators against hand-worked values, slow loop references and TA-Lib's output."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from producers import indicators

NAN = float("nan")


def wave(n: int = 60) -> tuple[pd.Series, pd.Series, pd.Series]:
    """A deterministic trend plus wave; TA-Lib 0.8.2 values below were taken on it."""
    i = np.arange(n, dtype="float64")
    close = 100 + 10 * np.sin(i / 5) + 0.3 * i
    high = close + 1 + 0.5 * np.cos(i / 3)
    low = close - 1 - 0.5 * np.sin(i / 4)
    return pd.Series(high), pd.Series(low), pd.Series(close)


def walk(n: int = 400, seed: int = 7) -> tuple[pd.Series, pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    high = close * (1 + np.abs(rng.normal(0, 0.004, n)))
    low = close * (1 - np.abs(rng.normal(0, 0.004, n)))
    return pd.Series(high), pd.Series(low), pd.Series(close)


def assert_same(actual: pd.Series, expected: list[float]) -> None:
    np.testing.assert_allclose(actual.to_numpy(), expected, rtol=1e-10, atol=1e-10)


# Slow, textbook loop versions, written independently of the vectorised code.


def loop_sma(values: list[float], n: int) -> list[float]:
    return [
        NAN if i < n - 1 else sum(values[i - n + 1 : i + 1]) / n
        for i in range(len(values))
    ]


def loop_ema(values: list[float], n: int, seed_at: int | None = None) -> list[float]:
    seed_at = n - 1 if seed_at is None else seed_at
    out = [NAN] * len(values)
    k = 2 / (n + 1)
    prev = sum(values[seed_at - n + 1 : seed_at + 1]) / n
    out[seed_at] = prev
    for i in range(seed_at + 1, len(values)):
        prev = values[i] * k + prev * (1 - k)
        out[i] = prev
    return out


def loop_wilder(values: list[float], n: int) -> list[float]:
    """Wilder's average of values[1:], first output at index n."""
    out = [NAN] * len(values)
    prev = sum(values[1 : n + 1]) / n
    out[n] = prev
    for i in range(n + 1, len(values)):
        prev = (prev * (n - 1) + values[i]) / n
        out[i] = prev
    return out


def loop_rsi(close: list[float], n: int) -> list[float]:
    gains = [0.0] + [max(close[i] - close[i - 1], 0.0) for i in range(1, len(close))]
    losses = [0.0] + [max(close[i - 1] - close[i], 0.0) for i in range(1, len(close))]
    up, down = loop_wilder(gains, n), loop_wilder(losses, n)
    return [
        NAN if math.isnan(u) else 100 * u / (u + d)
        for u, d in zip(up, down, strict=True)
    ]


def loop_atr(
    high: list[float], low: list[float], close: list[float], n: int
) -> list[float]:
    ranges = [NAN] + [
        max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        for i in range(1, len(close))
    ]
    return loop_wilder(ranges, n)


def test_it_computes_small_series_by_hand() -> None:
    values = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0])
    assert_same(indicators.sma(values, 3), [NAN, NAN, 2.0, 3.0, 4.0])
    # Seed (1+2+3)/3 = 2, then k = 0.5: 0.5*4 + 0.5*2 = 3, 0.5*5 + 0.5*3 = 4.
    assert_same(indicators.ema(values, 3), [NAN, NAN, 2.0, 3.0, 4.0])


def test_it_smooths_rsi_the_wilder_way_by_hand() -> None:
    close = pd.Series([1.0, 2.0, 3.0, 2.0, 3.0, 4.0])
    # Gains/losses 1,1 | -1 | 1 | 1 with period 2: (1, 0) -> (0.5, 0.5) ->
    # (0.75, 0.25) -> (0.875, 0.125).
    assert_same(indicators.rsi(close, 2), [NAN, NAN, 100.0, 50.0, 75.0, 87.5])


def test_it_works_out_true_range_and_atr_by_hand() -> None:
    high = pd.Series([10.0, 12.0, 11.0, 15.0])
    low = pd.Series([8.0, 9.0, 7.0, 12.0])
    close = pd.Series([9.0, 11.0, 8.0, 14.0])
    # Row 3: max(15-12, |15-8|, |12-8|) = 7; the gap to the previous close counts.
    assert_same(indicators.true_range(high, low, close), [NAN, 3.0, 4.0, 7.0])
    assert_same(indicators.atr(high, low, close, 2), [NAN, NAN, 3.5, 5.25])


def test_it_matches_loop_references_on_a_random_walk() -> None:
    high, low, close = walk()
    c = close.tolist()
    assert_same(indicators.sma(close, 20), loop_sma(c, 20))
    assert_same(indicators.ema(close, 21), loop_ema(c, 21))
    assert_same(indicators.rsi(close, 14), loop_rsi(c, 14))
    expected = loop_atr(high.tolist(), low.tolist(), c, 14)
    assert_same(indicators.atr(high, low, close, 14), expected)


def test_it_uses_population_deviation_for_bollinger_bands() -> None:
    _, _, close = walk(120)
    bands = indicators.bollinger_bands(close, 20, 2.0)
    values = close.tolist()
    for i in (19, 57, 119):
        window = values[i - 19 : i + 1]
        mean = sum(window) / 20
        deviation = math.sqrt(sum((v - mean) ** 2 for v in window) / 20)
        assert bands.middle[i] == pytest.approx(mean, rel=1e-12)
        assert bands.upper[i] == pytest.approx(mean + 2 * deviation, rel=1e-12)
        assert bands.lower[i] == pytest.approx(mean - 2 * deviation, rel=1e-12)
    assert bands.middle[:19].isna().all()


def test_it_seeds_macd_lines_like_ta_lib() -> None:
    _, _, close = walk()
    c = close.tolist()
    result = indicators.macd(close, 12, 26, 9)
    # Both EMAs start on row 25; the fast one is seeded on rows 14..25.
    line = [
        f - s for f, s in zip(loop_ema(c, 12, seed_at=25), loop_ema(c, 26), strict=True)
    ]
    signal = loop_ema([0.0] * 25 + line[25:], 9, seed_at=33)
    assert_same(result.signal, signal)
    assert_same(result.macd, [NAN] * 33 + line[33:])
    assert_same(
        result.hist,
        [NAN] * 33 + [a - b for a, b in zip(line, signal, strict=True)][33:],
    )


def test_it_matches_values_recorded_from_ta_lib() -> None:
    high, low, close = wave()
    assert_same(
        indicators.rsi(close, 14)[[14, 30, 59]],
        [71.78637535164641, 66.8166088616747, 51.359172265417556],
    )
    assert_same(
        indicators.ema(close, 10)[[9, 30, 59]],
        [107.95246727208155, 101.8002006779492, 109.30412162539257],
    )
    bands = indicators.bollinger_bands(close, 20, 2.0)
    assert_same(bands.upper[[19, 59]], [115.74856110790383, 123.8946363061317])
    assert_same(bands.lower[[19, 59]], [98.57047912571939, 101.63805954998571])
    macd = indicators.macd(close)
    assert_same(macd.macd[[33, 59]], [-0.09515047130257415, -1.1482434600342373])
    assert_same(macd.signal[[33, 59]], [-2.6553722148243475, -0.6280422707300588])
    assert_same(macd.hist[[33, 59]], [2.5602217435217733, -0.5202011893041785])
    assert_same(
        indicators.atr(high, low, close, 14)[[14, 59]],
        [2.488910502184584, 2.5300971113957416],
    )


def test_it_leaves_rows_before_the_lookback_empty() -> None:
    high, low, close = wave()
    assert indicators.rsi(close, 14).first_valid_index() == 14
    assert indicators.ema(close, 10).first_valid_index() == 9
    assert indicators.sma(close, 20).first_valid_index() == 19
    assert indicators.atr(high, low, close, 14).first_valid_index() == 14
    assert all(s.first_valid_index() == 33 for s in indicators.macd(close))


def test_it_returns_zero_rsi_for_a_flat_market_as_ta_lib_does() -> None:
    flat = indicators.rsi(pd.Series([5.0] * 20), 14)
    assert flat[14:].eq(0.0).all()


def test_it_keeps_rsi_between_0_and_100() -> None:
    _, _, close = walk(1000, seed=3)
    values = indicators.rsi(close, 14).dropna()
    assert values.between(0, 100).all()
    assert values.min() < 30 < 70 < values.max()


def test_it_returns_all_nan_when_the_series_is_too_short() -> None:
    short = pd.Series([1.0, 2.0, 3.0])
    assert indicators.rsi(short, 14).isna().all()
    assert indicators.ema(short, 5).isna().all()
    assert len(indicators.ema(short, 5)) == 3


def test_it_rejects_a_period_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="period must be a positive whole number"):
        indicators.sma(pd.Series([1.0]), 0)
