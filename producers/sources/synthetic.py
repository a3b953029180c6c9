"""The synthetic source: a seeded random walk, the same in every process."""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict

import numpy as np
import pandas as pd
from pandas import DataFrame

from controlplane.lib.candles import candle_open_seconds, candle_position, epoch_ms
from producers.sources.base import CandleSource, Clock, SourceError, frame
from producers.sources.options import OptionReader


def build(
    timeframe: str,
    options: OptionReader,
    pairs: list[str],
    candle_type: str,
    clock: Clock,
) -> CandleSource:
    skip = options.number("skip_every", None, integer=True)
    if skip is not None and skip < 2:
        raise SourceError("Option skip_every must be at least 2 (or null).")
    return SyntheticSource(
        timeframe,
        seed=options.number("seed", 1, integer=True, positive=False),
        seconds_per_candle=options.number("seconds_per_candle", None),
        start_price=options.number("start_price", None),
        volatility=options.number("volatility", 0.002),
        skip_every=skip,
        clock=clock,
    )


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
        self.seed = seed % 2**63
        self.seconds_per_candle = seconds_per_candle
        self.start_price = start_price
        self.volatility = volatility
        self.skip_every = skip_every
        self.clock = clock
        self._wall0 = clock()
        self._index0 = math.floor(candle_position(self._wall0, self.timeframe))
        self._blocks: OrderedDict[tuple[str, int], dict[str, np.ndarray]] = (
            OrderedDict()
        )

    # Clock: a fractional candle index; candle i is closed once position >= i + 1.

    def _position(self) -> float:
        if self.seconds_per_candle is None:
            return candle_position(self.clock(), self.timeframe)
        elapsed = max(0.0, self.clock() - self._wall0)
        return self._index0 + elapsed / self.seconds_per_candle + 1e-9

    def resume(self, candle_ms: int, at: float) -> bool:
        if self.seconds_per_candle is None:
            return False
        closed = math.floor(candle_position(candle_ms / 1000.0, self.timeframe)) + 1
        elapsed = max(0.0, self.clock() - at)
        if closed + elapsed / self.seconds_per_candle <= self._position():
            return False  # the restarted clock is already past it
        self._wall0, self._index0 = at, closed
        return True

    def now(self) -> pd.Timestamp:
        if self.seconds_per_candle is None:
            return pd.Timestamp(self.clock(), unit="s", tz="UTC")
        position = self._position()
        index = math.floor(position)
        start, end = candle_open_seconds(np.array([index, index + 1]), self.timeframe)
        seconds = start + (position - index) * (end - start)
        return pd.Timestamp(round(seconds * 1e6), unit="us", tz="UTC")

    def seconds_until_next_close(self) -> float:
        position = self._position()
        if self.seconds_per_candle is not None:
            return (math.floor(position) + 1 - position) * self.seconds_per_candle
        boundary = candle_open_seconds(
            np.array([math.floor(position) + 1]), self.timeframe
        )[0]
        return max(0.0, float(boundary) - self.clock())

    def history(self, pair: str, count: int) -> DataFrame:
        last = math.floor(self._position()) - 1
        # Skipped slots are gaps, so look back far enough to still find `count` candles.
        span = count + (count // (self.skip_every - 1) + 1 if self.skip_every else 0)
        frame = self._candles(pair, last - span + 1, last)
        return frame.iloc[max(0, len(frame) - count) :].reset_index(drop=True)

    def candles_after(self, pair: str, after: pd.Timestamp) -> DataFrame:
        first = (
            math.floor(candle_position(epoch_ms(after) / 1000.0, self.timeframe)) + 1
        )
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
        return frame(candle_open_seconds(index, self.timeframe) * 1000, values)

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
