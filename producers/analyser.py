"""The strategy run on some pairs' candles: the one step the producer worker repeats.

Pure module. The worker runs one ``PairAnalyser`` for all pairs in its own process
(``--workers 1``), or one per analysis process of a pool (``producers.pool``), each
owning a fixed set of pairs; both give the same rows, bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from producers.strategy import IStrategy, StrategyError, load_strategy


@dataclass(frozen=True)
class AnalyserSpec:
    """What an analysis process needs to build its analyser (pickled to it)."""

    strategy: str  # dotted path
    timeframe: str
    candle_type: str
    history: int  # rows kept and published per pair


@dataclass
class Analysed:
    """One pair's outcome: its analysed rows, or why the strategy failed."""

    pair: str
    rows: pd.DataFrame | None
    la: datetime | None
    error: str | None = None
    # The pair's whole window, not only new rows: its process was replaced.
    full: bool = False


@dataclass
class Batch:
    """A batch's outcomes, with the time spent analysing it (seconds)."""

    outcomes: list[Analysed]
    seconds: float


class PairAnalyser:
    """Candles per pair and the strategy that analyses them."""

    def __init__(self, spec: AnalyserSpec, strategy: IStrategy | None = None) -> None:
        self.spec = spec
        self.strategy = strategy or load_strategy(spec.strategy)
        self.keep = spec.history + self.strategy.startup_candle_count
        self.candles: dict[str, pd.DataFrame] = {}

    def load(self, pair: str, candles: pd.DataFrame) -> pd.DataFrame:
        """Analyse a pair's whole window; its last ``history`` rows."""
        self.candles[pair] = candles
        frame = self._analyse(pair)
        return frame.iloc[-self.spec.history :].reset_index(drop=True)

    def advance(self, pair: str, new: pd.DataFrame) -> pd.DataFrame:
        """Append closed candles and analyse; only the new candles' rows.

        Rows already published stay as they were sent: re-analysing a sliding
        window shifts indicators with memory (EMA, RSI) on older rows, and a
        republished history must equal what consumers already hold.
        """
        merged = pd.concat([self.candles[pair], new], ignore_index=True)
        self.candles[pair] = merged.iloc[-self.keep :].reset_index(drop=True)
        return self._analyse(pair).iloc[-len(new) :].reset_index(drop=True)

    def drop(self, pair: str) -> None:
        self.candles.pop(pair, None)

    def run(self, kind: str, batch: dict[str, pd.DataFrame]) -> Batch:
        """``load`` or ``advance`` each pair of ``batch``; one failure stays one
        pair's, so the others are still analysed."""
        step = self.load if kind == "load" else self.advance
        started = time.perf_counter()
        outcomes = []
        for pair, candles in batch.items():
            try:
                rows = step(pair, candles)
            except StrategyError as exc:
                outcomes.append(Analysed(pair, None, None, str(exc)))
                continue
            outcomes.append(Analysed(pair, rows, datetime.now(UTC)))
        return Batch(outcomes, time.perf_counter() - started)

    def _analyse(self, pair: str) -> pd.DataFrame:
        metadata = {
            "pair": pair,
            "timeframe": self.spec.timeframe,
            "candle_type": self.spec.candle_type,
        }
        return self.strategy.analyze(self.candles[pair], metadata)
