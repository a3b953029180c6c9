"""Frame encoding and decoding: FreqTrade's way against producers.protocol.

Run from the repository root: ``python benchmarks/bench_frames.py [--rows 1500]``.
Builds a frame shaped like the sample strategy's (26 columns) and prints the median
time of each path, side by side in one run, plus message sizes and the cost of a
reply served from the hub's cache. FreqTrade decodes with python-rapidjson; this
uses orjson for its outer parse, which flatters FreqTrade's figure slightly.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from producers import protocol  # noqa: E402
from producers.snapshots import MemoryStore, RedisStore, SnapshotStore  # noqa: E402

KEY = ("BTC/USDT", "5m", "spot")
STREAM = ("bench", *KEY)
LA = datetime(2026, 11, 25, 10, 16, 1, 715292, tzinfo=UTC)
REDIS_URL = "redis://127.0.0.1:6379/15"


def sample_frame(rows: int) -> pd.DataFrame:
    """date, OHLCV, 14 float indicators, four signal columns and two tags."""
    rng = np.random.default_rng(7)
    close = 35_000 + rng.standard_normal(rows).cumsum() * 40
    data: dict[str, object] = {
        "date": pd.date_range("2026-06-01", periods=rows, freq="5min", tz="UTC"),
        "open": close + rng.standard_normal(rows),
        "high": close + 20 * rng.random(rows),
        "low": close - 20 * rng.random(rows),
        "close": close,
        "volume": 1000 * rng.random(rows),
    }
    for name in (
        "rsi",
        "mfi",
        "adx",
        "cci",
        "sma_20",
        "ema_10",
        "ema_50",
        "bb_upper",
        "bb_lower",
        "bb_mid",
        "macd",
        "macdsignal",
        "atr",
        "fisher_rsi",
    ):
        data[name] = rng.standard_normal(rows) * 100 + 50
    for name in ("enter_long", "exit_long", "enter_short", "exit_short"):
        data[name] = np.where(rng.random(rows) < 0.05, 1.0, np.nan)
    data["enter_tag"] = np.where(rng.random(rows) < 0.05, "rsi_cross", "")
    data["exit_tag"] = np.where(rng.random(rows) < 0.05, "take_profit", "")
    return pd.DataFrame(data)


def freqtrade_encode(df: pd.DataFrame) -> bytes:
    """FreqTrade's dataframe_to_json in its orjson message (on a copy: it mutates)."""
    frame = df.copy()
    for column in frame.columns[frame.dtypes.astype(str).str.startswith("datetime")]:
        frame[column] = frame[column].dt.as_unit("ms").astype("int64")
    value = frame.to_json(orient="split")
    envelope = {"__type__": "dataframe", "__value__": value}
    message = {"type": "analyzed_df", "data": {"key": KEY, "df": envelope, "la": LA}}
    return orjson.dumps(message)


def freqtrade_decode(text: bytes) -> pd.DataFrame:
    message = orjson.loads(text)
    df = pd.read_json(StringIO(message["data"]["df"]["__value__"]), orient="split")
    df["date"] = pd.to_datetime(df["date"], unit="ms", utc=True)
    return df


def our_encode(df: pd.DataFrame) -> str:
    columns, rows = protocol.encode_rows(df)
    row_bytes = [protocol.encode_row_json(row) for row in rows]
    doc = protocol.split_document(columns, row_bytes, 0)
    return protocol.analyzed_df_message(KEY, doc, LA)


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000


async def cached_reply_us(store: SnapshotStore, df: pd.DataFrame, repeats: int):
    columns, rows = protocol.encode_rows(df)
    row_bytes = [protocol.encode_row_json(row) for row in rows]
    dates = [row[columns.index("date")] for row in rows]
    await store.replace(STREAM, columns, row_bytes, dates, LA)
    start = time.perf_counter()
    miss = await store.analyzed_df_reply(STREAM, None)
    miss_us = (time.perf_counter() - start) * 1e6
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        assert await store.analyzed_df_reply(STREAM, None) is miss
        timings.append(time.perf_counter() - start)
    return miss_us, statistics.median(timings) * 1e6


def redis_cache_figures(df: pd.DataFrame, repeats: int) -> tuple[float, float] | None:
    prefix = f"candlecast:snap:bench:{uuid.uuid4().hex}:"
    store = RedisStore(REDIS_URL, prefix=prefix, max_rows=len(df))

    async def run():
        try:
            return await cached_reply_us(store, df, repeats)
        finally:
            client = store._connection().client
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await store.aclose()

    try:
        return asyncio.run(run())
    except Exception as exc:  # no Redis here: say so and carry on
        print(f"(Redis cache figures skipped: {exc})")
        return None


def print_comparison(df: pd.DataFrame, repeats: int) -> None:
    one = df.tail(1)
    theirs, ours = freqtrade_encode(df), our_encode(df).encode()
    their_one, our_one = freqtrade_encode(one), our_encode(one)
    rows = [
        (
            "encode full frame (ms)",
            lambda: freqtrade_encode(df),
            lambda: our_encode(df),
        ),
        (
            "decode full frame (ms)",
            lambda: freqtrade_decode(theirs),
            lambda: protocol.decode_message(ours),
        ),
        (
            "encode 1-row broadcast (ms)",
            lambda: freqtrade_encode(one),
            lambda: our_encode(one),
        ),
        (
            "decode 1-row broadcast (ms)",
            lambda: freqtrade_decode(their_one),
            lambda: protocol.decode_message(our_one),
        ),
    ]
    print(f"{'':34}{'FreqTrade':>12}{'candlecast':>12}{'speed-up':>10}")
    for label, their_call, our_call in rows:
        a, b = median_ms(their_call, repeats), median_ms(our_call, repeats)
        print(f"{label:34}{a:12.3f}{b:12.3f}{a / b:9.1f}x")
    print(f"{'message size (bytes)':34}{len(theirs):12d}{len(ours):12d}")


def print_encode_steps(df: pd.DataFrame, repeats: int) -> None:
    columns, rows = protocol.encode_rows(df)
    row_bytes = [protocol.encode_row_json(row) for row in rows]
    steps = [
        ("encode_rows", lambda: protocol.encode_rows(df)),
        ("encode_row_json for every row", lambda: list(map(orjson.dumps, rows))),
        (
            "split_document + analyzed_df_message",
            lambda: protocol.analyzed_df_message(
                KEY, protocol.split_document(columns, row_bytes, 0), LA
            ),
        ),
    ]
    print("\ncandlecast encode steps (ms)")
    for label, call in steps:
        print(f"  {label:36}{median_ms(call, repeats):8.3f}")


def print_reply_cache(df: pd.DataFrame) -> None:
    print(f"\nhub reply, whole snapshot (us){'miss':>14}{'cache hit':>12}")
    memory = asyncio.run(cached_reply_us(MemoryStore(max_rows=len(df)), df, 1000))
    print(f"  {'MemoryStore':32}{memory[0]:10.0f}{memory[1]:12.2f}")
    shared = redis_cache_figures(df, 1000)
    if shared:
        print(
            f"  {'RedisStore (1 HMGET per hit)':32}{shared[0]:10.0f}{shared[1]:12.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    df = sample_frame(args.rows)
    print(f"frame: {df.shape[0]} rows x {df.shape[1]} columns; median of runs\n")
    print_comparison(df, args.repeats)
    print_encode_steps(df, args.repeats)
    print_reply_cache(df)


if __name__ == "__main__":
    main()
