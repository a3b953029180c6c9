"""The demo producer's strategy: common indicators and RSI-cross signals.

It exists to give consumers a realistically wide analysed frame (about fifteen float
indicator columns plus FreqTrade's signal and tag columns) and a few signals an hour.
"""

from __future__ import annotations

import pandas as pd
from pandas import DataFrame

from producers import indicators
from producers.strategy import IStrategy


def crossed_above(series: pd.Series, level: float) -> pd.Series:
    """True on the row where ``series`` moves from at or below ``level`` to above."""
    return (series > level) & (series.shift(1) <= level)


def crossed_below(series: pd.Series, level: float) -> pd.Series:
    """True on the row where ``series`` moves from at or above ``level`` to below."""
    return (series < level) & (series.shift(1) >= level)


class SampleStrategy(IStrategy):
    timeframe = "5m"
    # MACD(12, 26, 9) is the slowest indicator: rows 0-32 have no value yet.
    startup_candle_count = 33

    rsi_entry = 30.0
    rsi_exit = 70.0

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        close = dataframe["close"]
        dataframe["rsi"] = indicators.rsi(close, 14)
        dataframe["ema_fast"] = indicators.ema(close, 12)
        dataframe["ema_slow"] = indicators.ema(close, 26)
        dataframe["sma_20"] = indicators.sma(close, 20)
        bands = indicators.bollinger_bands(close, 20, 2.0)
        dataframe["bb_lower"] = bands.lower
        dataframe["bb_middle"] = bands.middle
        dataframe["bb_upper"] = bands.upper
        dataframe["bb_width"] = (bands.upper - bands.lower) / bands.middle
        dataframe["bb_percent"] = (close - bands.lower) / (bands.upper - bands.lower)
        macd = indicators.macd(close, 12, 26, 9)
        dataframe["macd"] = macd.macd
        dataframe["macdsignal"] = macd.signal
        dataframe["macdhist"] = macd.hist
        dataframe["atr"] = indicators.atr(
            dataframe["high"], dataframe["low"], close, 14
        )
        dataframe["atr_percent"] = dataframe["atr"] / close * 100.0
        dataframe["volume_mean"] = indicators.sma(dataframe["volume"], 20)
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        entry = (
            crossed_above(dataframe["rsi"], self.rsi_entry)
            & (dataframe["close"] > dataframe["bb_lower"])
            & (dataframe["volume"] > 0)
        )
        dataframe.loc[entry, "enter_long"] = 1
        dataframe.loc[entry, "enter_tag"] = "rsi_cross"
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        exit_ = crossed_below(dataframe["rsi"], self.rsi_exit) & (
            dataframe["volume"] > 0
        )
        dataframe.loc[exit_, "exit_long"] = 1
        dataframe.loc[exit_, "exit_tag"] = "rsi_high"
        return dataframe
