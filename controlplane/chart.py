"""The chart of one pair: a snapshot tail shaped for TradingView's lightweight-charts.

Pure module. Candles and volume come from the OHLCV columns; an indicator that tracks
the close (EMAs, Bollinger bands) is drawn over the candles, the others (RSI, MACD,
ATR) in a pane below; entry and exit columns become markers.
"""

from __future__ import annotations

import math
from typing import TypedDict

import orjson

OHLC = ("open", "high", "low", "close")
SIGNALS = {
    "enter_long": "enter long",
    "exit_long": "exit long",
    "enter_short": "enter short",
    "exit_short": "exit short",
}
TAGS = {"enter_long": "enter_tag", "enter_short": "enter_tag"}
TAGS |= {"exit_long": "exit_tag", "exit_short": "exit_tag"}
# An indicator whose values stay within this fraction of the close, on average, is
# drawn on the price scale.
PRICE_LIKE = 0.2

Point = tuple[int, float]


class Marker(TypedDict):
    time: int
    kind: str  # enter_long | exit_long | enter_short | exit_short
    text: str


class ChartData(TypedDict):
    candles: list[tuple[int, float, float, float, float]]  # time (s), O, H, L, C
    volume: list[Point]
    overlays: dict[str, list[Point]]
    oscillators: dict[str, list[Point]]
    markers: list[Marker]


def decode_rows(rows: list[bytes]) -> list[list]:
    """The snapshot's stored rows (JSON arrays) as lists, in one parse."""
    return orjson.loads(b"[" + b",".join(rows) + b"]")


def chart_data(columns: list[str], rows: list[list]) -> ChartData:
    """Shape rows of ``columns`` (date in ms) for the chart; rows lacking OHLC skip."""
    at = {name: i for i, name in enumerate(columns)}
    if "date" not in at or any(name not in at for name in OHLC):
        raise ValueError(
            "the frame has no date/open/high/low/close columns: nothing to chart"
        )
    rows = [row for row in rows if all(_number(row[at[n]]) for n in OHLC)]
    times = [int(row[at["date"]]) // 1000 for row in rows]
    closes = [float(row[at["close"]]) for row in rows]
    overlays: dict[str, list[Point]] = {}
    oscillators: dict[str, list[Point]] = {}
    for name in indicator_columns(columns, rows):
        points = [
            (t, float(row[at[name]]))
            for t, row in zip(times, rows, strict=True)
            if _number(row[at[name]])
        ]
        if points:
            price_like = _tracks(points, dict(zip(times, closes, strict=True)))
            (overlays if price_like else oscillators)[name] = points
    return {
        "candles": [(t, *_ohlc(row, at)) for t, row in zip(times, rows, strict=True)],
        "volume": _series(times, rows, at.get("volume")),
        "overlays": overlays,
        "oscillators": oscillators,
        "markers": markers(columns, rows, times),
    }


def indicator_columns(columns: list[str], rows: list[list]) -> list[str]:
    """Numeric columns other than OHLCV and signals, in the frame's order."""
    skip = {"date", "volume", *OHLC, *SIGNALS, *TAGS.values()}
    found = []
    for i, name in enumerate(columns):
        if name in skip:
            continue
        values = [row[i] for row in rows[-50:] if row[i] is not None]
        if values and all(_number(v) for v in values):
            found.append(name)
    return found


def markers(columns: list[str], rows: list[list], times: list[int]) -> list[Marker]:
    at = {name: i for i, name in enumerate(columns)}
    found: list[Marker] = []
    for kind, words in SIGNALS.items():
        if kind not in at:
            continue
        tag = at.get(TAGS[kind])
        for t, row in zip(times, rows, strict=True):
            if row[at[kind]] == 1:
                text = row[tag] if tag is not None and row[tag] else words
                found.append({"time": t, "kind": kind, "text": str(text)})
    return sorted(found, key=lambda m: m["time"])


def _series(times: list[int], rows: list[list], index: int | None) -> list[Point]:
    if index is None:
        return []
    return [
        (t, float(row[index]))
        for t, row in zip(times, rows, strict=True)
        if _number(row[index])
    ]


def _tracks(points: list[Point], closes: dict[int, float]) -> bool:
    gaps = [abs(v / closes[t] - 1) for t, v in points if closes.get(t)]
    return bool(gaps) and sum(gaps) / len(gaps) < PRICE_LIKE


def _number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _ohlc(row: list, at: dict[str, int]) -> tuple[float, float, float, float]:
    o, h, low, c = (float(row[at[name]]) for name in OHLC)
    return o, h, low, c
