"""Candle sources the producer worker reads: a synthetic random walk and file replay.

Pure module. A source has a clock (real, fast or replayed) and reveals only *closed*
candles: a candle opening at ``d`` is closed once ``d + timeframe <= now()``. Frames
have FreqTrade's columns: date (datetime64[ms, UTC], open time) and float64 OHLCV.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from pandas import DataFrame

from controlplane.lib.candles import (
    CANDLE_TYPES,
    is_calendar_timeframe,
    timeframe_seconds,
)

logger = logging.getLogger(__name__)

OHLCV_COLUMNS = ["date", "open", "high", "low", "close", "volume"]
# Candle types that are not candles, stored by FreqTrade under their own columns.
VALUE_COLUMNS = {
    "funding_rate": ["date", "funding_rate"],
    "open_interest": ["date", "open_interest_amount", "open_interest_value"],
}
DEFAULT_REPLAY_START = 1500
SOURCE_KINDS = ("synthetic", "files")

Clock = Callable[[], float]


class SourceError(Exception):
    """A candle source is misconfigured or its data cannot be read."""


class CandleSource(ABC):
    timeframe: str

    @abstractmethod
    def history(self, pair: str, count: int) -> DataFrame:
        """The last ``count`` closed candles as of ``now()`` (fewer if fewer exist)."""

    @abstractmethod
    def candles_after(self, pair: str, after: pd.Timestamp) -> DataFrame:
        """Closed candles with a date later than ``after``, as of ``now()``."""

    @abstractmethod
    def seconds_until_next_close(self) -> float:
        """Wall-clock seconds until the next candle closes (``math.inf``: never)."""

    @abstractmethod
    def now(self) -> pd.Timestamp:
        """The source clock, in UTC."""


class _Grid:
    """Candle open times as a function of a candle index counted from the epoch.

    Fixed timeframes align to multiples of their length (as FreqTrade's date rounding
    does); months and years align to calendar months.
    """

    def __init__(self, timeframe: str) -> None:
        self.seconds = timeframe_seconds(timeframe)
        self.months = _calendar_months(timeframe)

    def start_seconds(self, index: np.ndarray) -> np.ndarray:
        if not self.months:
            return index.astype("int64") * self.seconds
        months = (index.astype("int64") * self.months).astype("datetime64[M]")
        return months.astype("datetime64[s]").astype("int64")

    def position(self, seconds: float) -> float:
        """Fractional candle index at a moment: 3.5 is halfway through candle 3."""
        if not self.months:
            # The microsecond nudge keeps exact boundaries from flooring one below.
            return (seconds + 1e-6) / self.seconds
        month = np.datetime64(int(seconds * 1e6), "us").astype("datetime64[M]")
        index = int(month.astype("int64")) // self.months
        start, end = self.start_seconds(np.array([index, index + 1]))
        return index + (seconds - start) / (end - start)


def _calendar_months(timeframe: str) -> int:
    """Months per candle for 1M/3M/1y-style timeframes, 0 for fixed-length ones."""
    if not is_calendar_timeframe(timeframe):
        return 0
    return int(timeframe[:-1]) * (12 if timeframe[-1] == "y" else 1)


def _to_ms(when: pd.Timestamp | Any) -> int:
    stamp = pd.Timestamp(when)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.value // 1_000_000  # .value is nanoseconds whatever the unit


def _frame(ms: np.ndarray, columns: dict[str, np.ndarray]) -> DataFrame:
    dates = pd.Series(ms.astype("datetime64[ms]")).dt.tz_localize("UTC")
    data = {"date": dates} | {k: np.asarray(v, "float64") for k, v in columns.items()}
    return DataFrame(data)


# ---------------------------------------------------------------------------------
# Synthetic source


class SyntheticSource(CandleSource):
    """A seeded random walk whose candles depend only on (seed, pair, candle date).

    Log prices are Brownian bridges between anchors spaced ``BLOCK`` candles apart;
    anchors are independent draws, so any date is computed from one or two blocks
    (cheap) and the price stays near the pair's start price for ever. Each block
    and anchor draws from an RNG keyed by seed, pair and block number, so restarts and
    other processes see the same candles.
    """

    BLOCK = 2048

    def __init__(
        self,
        timeframe: str,
        *,
        seed: int = 1,
        seconds_per_candle: float | None = None,
        start_price: float | None = None,
        volatility: float = 0.002,
        skip_every: int | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.timeframe = timeframe
        self.grid = _Grid(timeframe)
        self.seed = seed % 2**63
        self.seconds_per_candle = seconds_per_candle
        self.start_price = start_price
        self.volatility = volatility
        self.skip_every = skip_every
        self.clock = clock
        self._wall0 = clock()
        self._index0 = math.floor(self.grid.position(self._wall0))
        self._blocks: OrderedDict[tuple[str, int], dict[str, np.ndarray]] = (
            OrderedDict()
        )

    # Clock: a fractional candle index; candle i is closed once position >= i + 1.

    def _position(self) -> float:
        if self.seconds_per_candle is None:
            return self.grid.position(self.clock())
        elapsed = max(0.0, self.clock() - self._wall0)
        return self._index0 + elapsed / self.seconds_per_candle + 1e-9

    def now(self) -> pd.Timestamp:
        if self.seconds_per_candle is None:
            return pd.Timestamp(self.clock(), unit="s", tz="UTC")
        position = self._position()
        index = math.floor(position)
        start, end = self.grid.start_seconds(np.array([index, index + 1]))
        seconds = start + (position - index) * (end - start)
        return pd.Timestamp(round(seconds * 1e6), unit="us", tz="UTC")

    def seconds_until_next_close(self) -> float:
        position = self._position()
        if self.seconds_per_candle is not None:
            return (math.floor(position) + 1 - position) * self.seconds_per_candle
        boundary = self.grid.start_seconds(np.array([math.floor(position) + 1]))[0]
        return max(0.0, float(boundary) - self.clock())

    def history(self, pair: str, count: int) -> DataFrame:
        last = math.floor(self._position()) - 1
        # Skipped slots are gaps, so look back far enough to still find `count` candles.
        span = count + (count // (self.skip_every - 1) + 1 if self.skip_every else 0)
        frame = self._candles(pair, last - span + 1, last)
        return frame.iloc[max(0, len(frame) - count) :].reset_index(drop=True)

    def candles_after(self, pair: str, after: pd.Timestamp) -> DataFrame:
        first = math.floor(self.grid.position(_to_ms(after) / 1000.0)) + 1
        return self._candles(pair, first, math.floor(self._position()) - 1)

    # Candle generation

    def _candles(self, pair: str, first: int, last: int) -> DataFrame:
        index = np.arange(first, last + 1, dtype="int64")
        if self.skip_every:
            index = index[index % self.skip_every != 0]
        parts = [
            self._block_candles(pair, block, index[index // self.BLOCK == block])
            for block in np.unique(index // self.BLOCK)
        ]
        columns = ("open", "high", "low", "close", "volume")
        values = {
            c: np.concatenate([p[c] for p in parts]) if parts else np.empty(0)
            for c in columns
        }
        return _frame(self.grid.start_seconds(index) * 1000, values)

    def _block_candles(
        self, pair: str, block: int, index: np.ndarray
    ) -> dict[str, np.ndarray]:
        data = self._block(pair, block)
        at = index - block * self.BLOCK
        price = self._start_price(pair)
        open_ = price * np.exp(data["level"][at])
        close = price * np.exp(data["level"][at + 1])
        return {
            "open": open_,
            "high": np.maximum(open_, close) * np.exp(data["wick_high"][at]),
            "low": np.minimum(open_, close) * np.exp(-data["wick_low"][at]),
            "close": close,
            "volume": data["volume"][at] * (1e6 / price),
        }

    def _block(self, pair: str, block: int) -> dict[str, np.ndarray]:
        key = (pair, block)
        if key in self._blocks:
            self._blocks.move_to_end(key)
            return self._blocks[key]
        rng = self._rng(pair, 0, block)
        walk = np.concatenate(
            [[0.0], np.cumsum(rng.standard_normal(self.BLOCK) * self.volatility)]
        )
        start, end = self._anchor(pair, block), self._anchor(pair, block + 1)
        # Brownian bridge: the walk bent to run from this anchor to the next one.
        fraction = np.arange(self.BLOCK + 1) / self.BLOCK
        data = {
            "level": start + walk - fraction * (walk[-1] - (end - start)),
            "wick_high": np.abs(rng.standard_normal(self.BLOCK)) * self.volatility / 2,
            "wick_low": np.abs(rng.standard_normal(self.BLOCK)) * self.volatility / 2,
            "volume": rng.lognormal(0.0, 0.5, self.BLOCK),
        }
        self._blocks[key] = data
        if len(self._blocks) > 1024:
            self._blocks.popitem(last=False)
        return data

    def _anchor(self, pair: str, block: int) -> float:
        # Spread so that anchor-to-anchor steps vary like BLOCK steps of the walk.
        spread = self.volatility * math.sqrt(self.BLOCK / 2)
        return float(self._rng(pair, 1, block).standard_normal()) * spread

    def _rng(self, pair: str, stream: int, block: int) -> np.random.Generator:
        pair_key = int.from_bytes(hashlib.sha256(pair.encode()).digest()[:8], "big")
        return np.random.default_rng([self.seed, pair_key, stream, block + 2**40])

    def _start_price(self, pair: str) -> float:
        if self.start_price is not None:
            return self.start_price
        # Between 0.1 and 10,000, fixed per pair name.
        digest = hashlib.sha256(f"price:{pair}".encode()).digest()
        exponent = int.from_bytes(digest[:8], "big") / 2**64 * 5 - 1
        return float(f"{10**exponent:.4g}")


# ---------------------------------------------------------------------------------
# File replay source


def pair_to_filename(pair: str) -> str:
    """FreqTrade's file name for a pair: BTC/USDT:USDT -> BTC_USDT_USDT."""
    for char in "/ .@$+:":
        pair = pair.replace(char, "_")
    return pair


def candle_file_paths(
    datadir: Path, pair: str, timeframe: str, candle_type: str
) -> list[Path]:
    """Where ``freqtrade download-data`` stores a pair's candles, in search order."""
    suffix = "" if candle_type == "spot" else f"-{candle_type}"
    folder = datadir if candle_type == "spot" else datadir / "futures"
    # FreqTrade writes 1M as 1Mo (case-insensitive file systems) and reads both.
    timeframes = dict.fromkeys([timeframe.replace("M", "Mo"), timeframe])
    return [
        folder / f"{pair_to_filename(pair)}-{tf}{suffix}.{ext}"
        for ext in ("feather", "json", "json.gz", "parquet")
        for tf in timeframes
    ]


def read_candle_file(path: Path, candle_type: str) -> DataFrame:
    """A downloaded candle file as a sorted frame with FreqTrade's in-memory columns.

    Funding rates also get FreqTrade's ``open`` alias of the rate.
    """
    columns = VALUE_COLUMNS.get(candle_type, OHLCV_COLUMNS)
    try:
        raw = _read_raw(path)
        frame = _normalize_columns(raw, columns, candle_type)
    except Exception as exc:
        raise SourceError(f"Cannot read candles from {path}: {exc}") from exc
    dates = frame["date"]
    if pd.api.types.is_numeric_dtype(dates):
        dates = pd.to_datetime(dates, unit="ms", utc=True)
    elif getattr(dates.dt, "tz", None) is None:
        dates = dates.dt.tz_localize("UTC")
    frame = frame.astype({c: "float64" for c in columns[1:]})
    frame["date"] = dates.dt.tz_convert("UTC").dt.as_unit("ms")
    if candle_type == "funding_rate":
        frame["open"] = frame["funding_rate"]
    frame = frame.sort_values("date").drop_duplicates("date", keep="last")
    return frame.reset_index(drop=True)


def _read_raw(path: Path) -> DataFrame:
    name = path.name
    if name.endswith(".feather"):
        return pd.read_feather(path)
    if name.endswith(".parquet"):
        return pd.read_parquet(path)
    data = path.read_bytes()
    rows = orjson.loads(gzip.decompress(data) if name.endswith(".gz") else data)
    return DataFrame(rows)


def _normalize_columns(
    raw: DataFrame, columns: list[str], candle_type: str
) -> DataFrame:
    if set(columns).issubset(raw.columns):
        return raw.loc[:, columns].copy()
    legacy_funding = candle_type == "funding_rate"
    if legacy_funding and set(OHLCV_COLUMNS).issubset(raw.columns):
        return raw.rename(columns={"open": "funding_rate"}).loc[:, columns].copy()
    # JSON files are positional: [ms, open, high, low, close, volume] per row.
    if raw.shape[1] == len(columns):
        return raw.set_axis(columns, axis=1)
    if legacy_funding and raw.shape[1] == len(OHLCV_COLUMNS):
        return (
            raw.set_axis(OHLCV_COLUMNS, axis=1)
            .rename(columns={"open": "funding_rate"})
            .loc[:, columns]
        )
    raise ValueError(
        f"expected the columns {', '.join(columns)}, found {list(raw.columns)}"
    )


def _close_ms(dates: pd.Series, timeframe: str) -> np.ndarray:
    if months := _calendar_months(timeframe):
        dates = dates + pd.DateOffset(months=months)
    else:
        dates = dates + pd.Timedelta(seconds=timeframe_seconds(timeframe))
    return dates.dt.as_unit("ms").astype("int64").to_numpy()


class FileSource(CandleSource):
    """Replays FreqTrade's downloaded candle files as if they were arriving live.

    The replay clock starts where each pair has ``start`` closed candles (default
    ``min(candles in the file, 1500)``, enough for the worker's history; with pairs of
    different lengths, where the latest of them reaches that count) and advances one
    timeframe every ``seconds_per_candle`` wall seconds (default: real time).
    """

    def __init__(
        self,
        timeframe: str,
        pairs: list[str],
        *,
        datadir: str | Path,
        candle_type: str = "spot",
        seconds_per_candle: float | None = None,
        start: int | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.timeframe = timeframe
        self.datadir = Path(datadir).expanduser()
        self.clock = clock
        if not pairs:
            raise SourceError("The files source needs at least one pair to replay.")
        spc = seconds_per_candle or float(timeframe_seconds(timeframe))
        self._speed = timeframe_seconds(timeframe) / spc
        self._frames = {p: self._load(p, candle_type) for p in pairs}
        self._dates = {p: _to_ms_array(f["date"]) for p, f in self._frames.items()}
        self._closes = {
            p: _close_ms(f["date"], timeframe) for p, f in self._frames.items()
        }
        count = start if start is not None else DEFAULT_REPLAY_START
        self._origin_ms = int(
            max(c[min(max(count, 1), len(c)) - 1] for c in self._closes.values())
        )
        self._all_closes = np.unique(np.concatenate(list(self._closes.values())))
        self._wall0 = clock()
        self._ended_logged = False
        logger.info(
            "Replaying %d pair(s) of %s candles from %s, starting at %s, "
            "%.3g s per candle",
            len(pairs),
            timeframe,
            self.datadir,
            self.now().isoformat(),
            spc,
        )

    def _load(self, pair: str, candle_type: str) -> DataFrame:
        paths = candle_file_paths(self.datadir, pair, self.timeframe, candle_type)
        path = next((p for p in paths if p.is_file()), None)
        if path is None:
            mode = "" if candle_type == "spot" else " --trading-mode futures"
            raise SourceError(
                f"No {self.timeframe} {candle_type} candles for {pair}: tried "
                f"{', '.join(str(p) for p in paths)}. Download them with "
                f"'freqtrade download-data --pairs {pair} --timeframes "
                f"{self.timeframe}{mode} --datadir {self.datadir}'."
            )
        frame = read_candle_file(path, candle_type)
        if frame.empty:
            raise SourceError(f"{path} has no candles for {pair}.")
        return frame

    def _now_ms(self) -> int:
        elapsed = max(0.0, self.clock() - self._wall0)
        return self._origin_ms + int(elapsed * self._speed * 1000)

    def now(self) -> pd.Timestamp:
        return pd.Timestamp(self._now_ms(), unit="ms", tz="UTC")

    def _closed(self, pair: str) -> int:
        if pair not in self._frames:
            raise SourceError(
                f"{pair} is not replayed by this source; its pairs are "
                f"{', '.join(self._frames)}."
            )
        return int(np.searchsorted(self._closes[pair], self._now_ms(), side="right"))

    def history(self, pair: str, count: int) -> DataFrame:
        closed = self._closed(pair)
        rows = self._frames[pair].iloc[max(0, closed - count) : closed]
        return rows.reset_index(drop=True)

    def candles_after(self, pair: str, after: pd.Timestamp) -> DataFrame:
        closed = self._closed(pair)
        first = int(np.searchsorted(self._dates[pair], _to_ms(after), side="right"))
        return self._frames[pair].iloc[first:closed].reset_index(drop=True)

    def seconds_until_next_close(self) -> float:
        now_ms = self._now_ms()
        upcoming = int(np.searchsorted(self._all_closes, now_ms, side="right"))
        if upcoming == len(self._all_closes):
            if not self._ended_logged:
                self._ended_logged = True
                last = pd.Timestamp(int(self._all_closes[-1]), unit="ms", tz="UTC")
                logger.info(
                    "Replay of %s has ended: its last candle closed at %s and no "
                    "more will come; restart the worker to replay it again.",
                    self.datadir,
                    last.isoformat(),
                )
            return math.inf
        return (int(self._all_closes[upcoming]) - now_ms) / 1000.0 / self._speed


def _to_ms_array(dates: pd.Series) -> np.ndarray:
    return dates.dt.as_unit("ms").astype("int64").to_numpy()


# ---------------------------------------------------------------------------------
# Construction from a producer's settings

SYNTHETIC_OPTIONS = (
    "seed",
    "seconds_per_candle",
    "start_price",
    "volatility",
    "skip_every",
)
FILE_OPTIONS = ("datadir", "seconds_per_candle", "start")


def build_source(
    kind: str,
    timeframe: str,
    options: dict[str, Any],
    pairs: list[str],
    candle_type: str = "spot",
    *,
    clock: Clock = time.time,
) -> CandleSource:
    """The source a producer's ``source`` and ``source_options`` describe.

    Raises:
        SourceError: unknown kind, timeframe, candle type or option, a bad option
            value, or (files) a pair without a readable file.
    """
    try:
        timeframe_seconds(timeframe)
    except ValueError as exc:
        raise SourceError(str(exc)) from exc
    if candle_type not in CANDLE_TYPES:
        raise SourceError(
            f"Unknown candle type {candle_type!r}; "
            f"use one of {', '.join(CANDLE_TYPES)}."
        )
    if kind not in SOURCE_KINDS:
        raise SourceError(
            f"Unknown candle source {kind!r}; use one of {', '.join(SOURCE_KINDS)}."
        )
    options = _OptionReader(kind, {} if options is None else options)
    if kind == "synthetic":
        return SyntheticSource(timeframe, clock=clock, **options.synthetic())
    return FileSource(
        timeframe, list(pairs), candle_type=candle_type, clock=clock, **options.files()
    )


class _OptionReader:
    """Checks a source's options (JSON from the admin) and names the valid ones."""

    def __init__(self, kind: str, options: object) -> None:
        self.kind = kind
        valid = SYNTHETIC_OPTIONS if kind == "synthetic" else FILE_OPTIONS
        if not isinstance(options, dict):
            raise SourceError(f"{kind} source options must be a JSON object.")
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise SourceError(
                f"Unknown {kind} source option(s) {', '.join(unknown)}; "
                f"valid options are {', '.join(valid)}."
            )
        self.options = options

    def synthetic(self) -> dict[str, Any]:
        skip = self._number("skip_every", None, integer=True)
        if skip is not None and skip < 2:
            raise SourceError("Option skip_every must be at least 2 (or null).")
        seed = self._number("seed", 1, integer=True, positive=False)
        return {
            "seed": seed,
            "seconds_per_candle": self._number("seconds_per_candle", None),
            "start_price": self._number("start_price", None),
            "volatility": self._number("volatility", 0.002),
            "skip_every": skip,
        }

    def files(self) -> dict[str, Any]:
        datadir = self.options.get("datadir")
        if not isinstance(datadir, str) or not datadir:
            raise SourceError(
                "Option datadir is required for the files source: the folder "
                "'freqtrade download-data' wrote to, e.g. user_data/data/binance."
            )
        return {
            "datadir": datadir,
            "seconds_per_candle": self._number("seconds_per_candle", None),
            "start": self._number("start", None, integer=True),
        }

    def _number(
        self, name: str, default: Any, *, integer: bool = False, positive: bool = True
    ) -> Any:
        value = self.options.get(name, default)
        if value is None:
            return None
        kinds = (int,) if integer else (int, float)
        wrong = isinstance(value, bool) or not isinstance(value, kinds)
        if wrong or (positive and not value > 0) or not math.isfinite(value):
            need = "a whole number" if integer else "a number"
            raise SourceError(
                f"Option {name} of the {self.kind} source must be {need}"
                f"{' above 0' if positive else ''}, not {value!r}."
            )
        return value
