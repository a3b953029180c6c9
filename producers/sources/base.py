"""What every candle source is: the interface, its error and a frame builder.

A source has a clock (real, fast or replayed) and reveals only *closed* candles: a
candle opening at ``d`` is closed once ``d + timeframe <= now()``. Frames have
FreqTrade's columns: date (datetime64[ms, UTC], open time) and float64 OHLCV.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import pandas as pd
from pandas import DataFrame

Clock = Callable[[], float]


class SourceError(Exception):
    """A candle source is misconfigured or its data cannot be read."""


class CandleSource(ABC):
    """Closed candles of some pairs, on a clock of its own."""

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

    def resume(self, candle_ms: int, at: float) -> bool:
        """Continue the clock of an earlier run whose candle ``candle_ms`` (open
        time) closed at wall time ``at``; True when the clock moved.

        A clock that follows the wall clock needs nothing (the default). A fast or
        replayed clock that restarted from its start would run behind the history
        already published; after this it runs on from where it was, as if the
        worker had never stopped, so the candles missed meanwhile are closed too.
        """
        return False


def frame(ms: np.ndarray, columns: dict[str, np.ndarray]) -> DataFrame:
    dates = pd.Series(ms.astype("datetime64[ms]")).dt.tz_localize("UTC")
    data = {"date": dates} | {k: np.asarray(v, "float64") for k, v in columns.items()}
    return DataFrame(data)
