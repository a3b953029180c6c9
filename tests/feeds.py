"""Test helpers for the hub's sockets: analysed frames and connected communicators."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import numpy as np
import orjson
import pandas as pd
from channels.testing import WebsocketCommunicator

from controlplane.asgi import application
from controlplane.lib.wire import freqtrade, native
from controlplane.lib.wire.columns import exact_rows
from controlplane.lib.wire.publish import PublishFrame, publish_frame, publish_message

TIMEOUT = 2


def json_rows(df: pd.DataFrame) -> tuple[list[str], list[list]]:
    """Columns and rows of ``df`` as FreqTrade's JSON carries them (NaN: None)."""
    names, _, rows = exact_rows(df)
    return names, [
        [None if isinstance(v, float) and not np.isfinite(v) else v for v in row]
        for row in rows
    ]


def native_block(
    key, df: pd.DataFrame, la: datetime, first: int = 0, *, new_candle: bool = False
) -> bytes:
    """``df`` as one packed native frame, as the hub builds it from stored rows."""
    names, codes, rows = exact_rows(df)
    columns = native.columns_from_rows(names, codes, rows)
    return native.frame_block(key, columns, len(df), first, la, new_candle=new_candle)


def native_reply(key, df: pd.DataFrame, la: datetime, first: int = 0) -> bytes:
    """``df`` as one native analyzed_df message."""
    return native.message("analyzed_df", [native_block(key, df, la, first)])


def analysed_frame(
    rows: int = 1500, start: str = "2026-11-01", seed: int = 1, freq: str = "5min"
) -> pd.DataFrame:
    """A frame shaped like a strategy's output: OHLCV, indicators, signals, tags."""
    rng = np.random.default_rng(seed)
    close = 100 + rng.standard_normal(rows).cumsum()
    df = pd.DataFrame(
        {
            "date": pd.date_range(start, periods=rows, freq=freq, tz="UTC"),
            "open": close + 0.1,
            "high": close + 1.123456789012345,
            "low": close - 1,
            "close": close,
            "volume": rng.uniform(1, 1000, rows),
            "rsi": rng.uniform(0, 100, rows),
            "tiny": rng.uniform(0, 1e-9, rows),
        }
    )
    df["enter_long"] = np.where(df["rsi"] < 20, 1.0, np.nan)
    df["enter_tag"] = np.where(df["rsi"] < 20, "rsi_low", "")
    return df


async def connect(
    path: str, *, headers: list | None = None, subprotocols: list | None = None
):
    communicator = WebsocketCommunicator(
        application, path, headers=headers or [], subprotocols=subprotocols
    )
    connected, chosen = await communicator.connect(timeout=TIMEOUT)
    communicator.chosen = chosen  # the subprotocol the socket selected, or None
    return communicator, connected


async def feed(
    token: str | None,
    *,
    bearer: bool = False,
    origin: str | None = None,
    subprotocols: list | None = None,
):
    headers = [(b"origin", origin.encode())] if origin else []
    path = "/api/v1/message/ws"
    if token and bearer:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    elif token:
        path += f"?token={token}"
    return await connect(path, headers=headers, subprotocols=subprotocols)


async def publisher(key: str):
    return await connect(
        "/api/v1/publish/ws", headers=[(b"authorization", f"Bearer {key}".encode())]
    )


async def publish(socket, frames: list, whitelist=None, seq: int = 1) -> dict:
    await socket.send_to(bytes_data=publish_message(seq, frames, whitelist))
    return orjson.loads(await socket.receive_from(timeout=TIMEOUT))


def frame(
    pair: str,
    df: pd.DataFrame,
    *,
    full: bool,
    new_candle: bool = False,
    la: datetime | None = None,
    timeframe: str = "5m",
) -> PublishFrame:
    return publish_frame(
        (pair, timeframe, "spot"),
        df,
        la or datetime.now(UTC),
        full=full,
        new_candle=new_candle,
    )


async def receive(socket) -> dict:
    return freqtrade.decode_message(await socket.receive_from(timeout=TIMEOUT))


async def request(socket, message: dict) -> None:
    await socket.send_to(text_data=orjson.dumps(message).decode())
    if message.get("type") == "subscribe":
        # The socket joins the producer's feed group as it handles its first
        # subscription (a layer round trip with Redis): ticks published before
        # that are not its own. Let it land before the test publishes.
        await asyncio.sleep(0.05)
