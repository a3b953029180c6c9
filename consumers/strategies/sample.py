"""The demo consumer's strategy: FreqTrade's documented consumer pattern.

It merges the "default" producer's analysed frame onto its own candles (columns
``<name>_default``), enters where the producer entered and its own RSI agrees, and
exits where the producer exited. Nothing here needs an exchange or recomputes the
producer's indicators.
"""

from __future__ import annotations

from pandas import DataFrame

from consumers.merge import merge_informative_pair
from consumers.strategy import ConsumerStrategy
from producers import indicators

# The producer's signals that populate_entry/exit_trend read.
PRODUCER_COLUMNS = ("enter_long_default", "exit_long_default")


class SampleConsumerStrategy(ConsumerStrategy):
    timeframe = "5m"
    process_only_new_candles = False

    rsi_limit = 40.0

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["rsi"] = indicators.rsi(dataframe["close"], 14)
        producer_df, _ = self.dp.get_producer_df(metadata["pair"])
        if not producer_df.empty:
            # Same timeframe: every candle matches its own producer row exactly, so
            # forward-fill never repeats a producer signal here.
            dataframe = merge_informative_pair(
                dataframe,
                producer_df,
                self.timeframe,
                self.timeframe,
                append_timeframe=False,
                suffix="default",
            )
        # Nothing received yet, or a FreqTrade producer that left a signal unset.
        for column in PRODUCER_COLUMNS:
            if column not in dataframe.columns:
                dataframe[column] = float("nan")
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        entry = (dataframe["enter_long_default"] == 1) & (
            dataframe["rsi"] < self.rsi_limit
        )
        dataframe.loc[entry, "enter_long"] = 1
        dataframe.loc[entry, "enter_tag"] = "producer_default"
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        exit_ = dataframe["exit_long_default"] == 1
        dataframe.loc[exit_, "exit_long"] = 1
        dataframe.loc[exit_, "exit_tag"] = "producer_default"
        return dataframe
