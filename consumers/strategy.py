"""How the consumer worker runs a consumer strategy on its producers' frames.

A consumer strategy is a ``producers.strategy.IStrategy`` subclass whose ``self.dp`` is
the worker's DataProvider. It runs for a pair whenever the *trigger* producer (the
follow named "default", else the first follow in the config) stores a newer last
candle for that pair, the first frame included; frames of the other followed
producers are read through ``self.dp`` but trigger nothing, so one candle runs the
strategy once however many producers are followed. The base dataframe is the trigger
producer's OHLCV columns for the pair: a consumer never needs an exchange.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TypedDict

import pandas as pd
from pandas import DataFrame

from consumers.dataprovider import DataProvider
from controlplane.lib.feedclient.framestore import Key, Stored
from producers.strategy import OHLCV_COLUMNS, IStrategy, load_strategy

logger = logging.getLogger(__name__)

DEFAULT_TRIGGER = "default"
TAG_COLUMNS = ("enter_tag", "exit_tag")


class ConsumerStrategy(IStrategy):
    """Base class for consumer strategies; read producer frames with ``self.dp``.

    FreqTrade's documentation asks consumer strategies for
    ``process_only_new_candles = False``; ``candle_type`` is the default the
    DataProvider looks frames up with (FreqTrade takes it from the trading mode).
    """

    process_only_new_candles = False
    candle_type: str = "spot"
    dp: DataProvider


class PairSignals(TypedDict):
    candle: str  # the last candle's open date, ISO 8601
    fired: list[str]  # the enter_*/exit_* columns that are 1 on the last candle
    tags: dict[str, str]  # the non-empty enter_tag / exit_tag of the last candle


def load_consumer_strategy(path: str) -> IStrategy:
    """Import and instantiate ``package.module.ClassName`` (raises StrategyError)."""
    strategy = load_strategy(path)
    if getattr(strategy, "process_only_new_candles", False):
        logger.warning(
            "%s sets process_only_new_candles = True; consumer strategies "
            "should set it to False (FreqTrade's advice)",
            path,
        )
    return strategy


def base_frame(producer_df: DataFrame) -> DataFrame:
    """The candles of a producer frame: its OHLCV columns only, as a new frame."""
    columns = [column for column in OHLCV_COLUMNS if column in producer_df.columns]
    return producer_df.loc[:, columns].reset_index(drop=True)


def signals_of(frame: DataFrame) -> PairSignals:
    """What the last candle of an analysed frame says."""
    last = frame.iloc[-1]
    fired = [
        str(column)
        for column in frame.columns
        if str(column).startswith(("enter_", "exit_"))
        and column not in TAG_COLUMNS
        and _is_one(last[column])
    ]
    tags = {
        column: str(last[column])
        for column in TAG_COLUMNS
        if column in frame.columns and isinstance(last[column], str) and last[column]
    }
    return {
        "candle": pd.Timestamp(last["date"]).isoformat(),
        "fired": fired,
        "tags": tags,
    }


def _is_one(value: object) -> bool:
    try:
        return bool(value == 1)
    except (TypeError, ValueError):
        return False


def describe(pair: str, signals: PairSignals) -> str:
    """One log line: 'BTC/USDT 2026-11-25 10:15 enter_long_default=1 enter_long=1'."""
    candle = pd.Timestamp(signals["candle"]).strftime("%Y-%m-%d %H:%M")
    parts = [f"{column}=1" for column in signals["fired"]]
    parts += [f"{column}={tag}" for column, tag in signals["tags"].items()]
    return f"{pair} {candle} {' '.join(parts) or 'no signal'}"


# How long the runner waits after the first new candle for the rest of the close.
GATHER_SECONDS = 0.2


class StrategyRunner:
    """Runs the strategy for each pair with a new candle, one pair at a time.

    :meth:`notify` is called on the event loop by the producer clients; runs happen in
    a thread (strategies are plain pandas code) so the links keep flowing. Pairs that
    get new candles while a run is in progress are coalesced into one more run.
    """

    def __init__(self, strategy: IStrategy, dp: DataProvider) -> None:
        self.strategy = strategy
        self.dp = dp
        self.trigger: str | None = DEFAULT_TRIGGER
        self.signals: dict[str, PairSignals] = {}
        self.runs = 0
        self._pending: dict[str, Key] = {}
        self._ready = asyncio.Event()
        self._warned: set[str] = set()

    @property
    def name(self) -> str:
        return type(self.strategy).__name__

    def follow_names(self, names: list[str]) -> None:
        """Pick the trigger producer from the followed ones."""
        if DEFAULT_TRIGGER in names:
            self.trigger = DEFAULT_TRIGGER
        else:
            self.trigger = names[0] if names else None

    def notify(self, producer: str, stored: Stored) -> None:
        if producer != self.trigger or not stored.new_candle:
            return
        wanted = (
            self.strategy.timeframe,
            getattr(self.strategy, "candle_type", "spot"),
        )
        if stored.key[1:] != wanted:
            self._warn_once(
                f"mismatch:{stored.key[1:]}",
                f"producer {producer} publishes {stored.key[1]} {stored.key[2]} "
                f"candles but {self.name} runs on {wanted[0]} {wanted[1]}: set the "
                "strategy's timeframe and candle_type to the producer's",
            )
            return
        self._pending[stored.key[0]] = stored.key
        self._ready.set()

    async def run(self) -> None:
        """Run pairs as they are notified, until cancelled."""
        while True:
            await self._ready.wait()
            # A candle close arrives as one frame per pair within milliseconds:
            # gather them, so a close is one run and one log line.
            await asyncio.sleep(GATHER_SECONDS)
            self._ready.clear()
            pending, self._pending = self._pending, {}
            fired = []
            for key in pending.values():
                try:
                    signals = await asyncio.to_thread(self.run_pair, key)
                except Exception:  # keep running the other pairs and candles
                    logger.exception("running %s on %s failed", self.name, key[0])
                    continue
                if signals and (signals["fired"] or signals["tags"]):
                    fired.append(describe(key[0], signals))
            # One line per candle close, naming only the pairs that signalled.
            logger.info(
                "%s ran on %d pair(s): %s",
                self.name,
                len(pending),
                "; ".join(fired) or "no entry or exit signal",
            )

    def run_pair(self, key: Key) -> PairSignals | None:
        """Analyse one pair on the trigger producer's candles; log and keep signals."""
        pair, timeframe, candle_type = key
        producer_df, _ = self.dp.get_producer_df(
            pair, timeframe, candle_type, producer_name=self.trigger or DEFAULT_TRIGGER
        )
        if producer_df.empty:
            return None
        metadata = {"pair": pair, "timeframe": timeframe, "candle_type": candle_type}
        try:
            analysed = self.strategy.analyze(base_frame(producer_df), metadata)
        except Exception as exc:  # the user's code: report it, keep the worker going
            self._warn_once(
                f"error:{pair}:{exc}",
                f"{self.name} failed on {pair}: {type(exc).__name__}: {exc}",
                exc_info=True,
            )
            return None
        self.runs += 1
        signals = signals_of(analysed)
        self.signals[pair] = signals
        logger.debug("%s", describe(pair, signals))
        return signals

    def _warn_once(self, kind: str, text: str, exc_info: bool = False) -> None:
        if kind in self._warned:
            logger.debug("%s", text)
            return
        if len(self._warned) < 1000:
            self._warned.add(kind)
        logger.error("%s", text, exc_info=exc_info)
