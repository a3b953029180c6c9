"""The files source: replays FreqTrade's downloaded candle files as if live."""

from __future__ import annotations

import gzip
import logging
import math
import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from pandas import DataFrame

from controlplane.lib.candles import candle_length, epoch_ms, timeframe_seconds
from producers.sources.base import CandleSource, Clock, SourceError
from producers.sources.options import OptionReader

# A child of "producers.sources": its records reach that logger's handlers.
logger = logging.getLogger(__name__)

OHLCV_COLUMNS = ["date", "open", "high", "low", "close", "volume"]
# Candle types that are not candles, stored by FreqTrade under their own columns.
VALUE_COLUMNS = {
    "funding_rate": ["date", "funding_rate"],
    "open_interest": ["date", "open_interest_amount", "open_interest_value"],
}
DEFAULT_REPLAY_START = 1500


def build(
    timeframe: str,
    options: OptionReader,
    pairs: list[str],
    candle_type: str,
    clock: Clock,
) -> CandleSource:
    datadir = options.options.get("datadir")
    if not isinstance(datadir, str) or not datadir:
        raise SourceError(
            "Option datadir is required for the files source: the folder "
            "'freqtrade download-data' wrote to, e.g. user_data/data/binance."
        )
    return FileSource(
        timeframe,
        list(pairs),
        datadir=datadir,
        candle_type=candle_type,
        seconds_per_candle=options.number("seconds_per_candle", None),
        start=options.number("start", None, integer=True),
        clock=clock,
    )


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
    return _to_ms_array(dates + candle_length(timeframe))


def _to_ms_array(dates: pd.Series) -> np.ndarray:
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

    def resume(self, candle_ms: int, at: float) -> bool:
        closes = self._all_closes
        upcoming = int(np.searchsorted(closes, candle_ms, side="right"))
        if upcoming == len(closes):
            return False  # not a candle of these files
        closed_at = int(closes[upcoming])  # the first close after its open
        elapsed = max(0.0, self.clock() - at)
        if closed_at + elapsed * self._speed * 1000 <= self._now_ms():
            return False
        self._origin_ms, self._wall0 = closed_at, at
        return True

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
        first = int(np.searchsorted(self._dates[pair], epoch_ms(after), side="right"))
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
