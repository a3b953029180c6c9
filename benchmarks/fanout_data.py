"""The data bench_fanout publishes, computed once: analysed rows and encoded frames.

The sample strategy runs on the synthetic source for every pair, over the history
plus the ticks to come, and every frame is encoded for publishing with the producer
worker's own encoder (controlplane.lib.wire.publish.publish_frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from controlplane.lib.wire import publish
from producers.sources import SyntheticSource
from producers.strategies.sample import SampleStrategy

TIMEFRAME = "5m"
CANDLE_TYPE = "spot"
STEP_MS = 300_000
SEED = 11


@dataclass
class BenchData:
    pairs: list[str]
    rows: int
    columns: int
    history: list[publish.PublishFrame]  # one full frame per pair
    ticks: list[list[publish.PublishFrame]]  # per tick, every pair's new row
    tick_dates: list[int]  # ms, the candle each tick adds
    la: datetime


def pair_names(count: int) -> list[str]:
    return [f"C{index:03d}/USDT" for index in range(count)]


def analyse(pairs: int, rows: int, ticks: int) -> BenchData:
    """``rows`` analysed rows of history and ``ticks`` more per pair, as frames."""
    names = pair_names(pairs)
    source = SyntheticSource(TIMEFRAME, seed=SEED)
    strategy = SampleStrategy()
    warmup = strategy.startup_candle_count
    la = datetime.now(UTC)
    history, per_pair = [], []
    for pair in names:
        candles = source.history(pair, warmup + rows + ticks)
        metadata = {"pair": pair, "timeframe": TIMEFRAME, "candle_type": CANDLE_TYPE}
        frame = strategy.analyze(candles, metadata).iloc[warmup:]
        frame = frame.reset_index(drop=True)
        key = (pair, TIMEFRAME, CANDLE_TYPE)
        history.append(
            publish.publish_frame(
                key, frame.iloc[:rows], la, full=True, new_candle=False
            )
        )
        per_pair.append(
            [
                publish.publish_frame(
                    key,
                    frame.iloc[rows + t : rows + t + 1],
                    la,
                    full=False,
                    new_candle=True,
                )
                for t in range(ticks)
            ]
        )
    at = history[0]["columns"].index("date")
    dates = [per_pair[0][t]["rows"][0][at] for t in range(ticks)]
    return BenchData(
        pairs=names,
        rows=rows,
        columns=len(history[0]["columns"]),
        history=history,
        ticks=[[frames[t] for frames in per_pair] for t in range(ticks)],
        tick_dates=dates,
        la=la,
    )
