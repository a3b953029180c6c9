"""The native protocol (candlecast.v1): exact frames, negotiation, one message a tick.

Pure round trips first, then the hub's sockets through the real ASGI stack, then the
consumer client against fake `websockets` servers that select it or select nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import msgpack
import numpy as np
import orjson
import pandas as pd
import pytest
from asgiref.sync import sync_to_async
from pandas.testing import assert_frame_equal
from websockets.asyncio.server import ServerConnection, serve

from controlplane.lib import wire
from controlplane.lib.contracts import ConsumerSettings, Follow
from controlplane.lib.feedclient.client import ProducerClient
from controlplane.lib.feedclient.framestore import FrameStore
from controlplane.lib.wire import freqtrade, native
from controlplane.lib.wire.columns import EPOCH, ProtocolError, encode_row_json
from controlplane.lib.wire.publish import (
    PublishFrame,
    frame_rows,
    packed_rows,
    parse_publish,
    publish_frame,
    publish_message,
)
from controlplane.lib.wire.rows import date_unit
from producers.snapshots import MemoryStore, RedisStore
from tests.feeds import (
    analysed_frame,
    feed,
    frame,
    json_rows,
    native_block,
    native_reply,
    publish,
    publisher,
    request,
)
from tests.test_snapshots import REDIS_TEST_URL, delete_prefix, redis_or_skip

KEY = ("BTC/USDT", "5m", "spot")
STREAM = ("alpha", *KEY)
LA = datetime(2026, 11, 25, 10, 16, 1, 715292, tzinfo=UTC)
TIMEOUT = 2.0
I64 = np.iinfo(np.int64)


def exotic_frame() -> pd.DataFrame:
    """Every value FreqTrade's JSON loses or changes, in the dtypes strategies make."""
    dates = pd.date_range("2026-11-01", periods=5, freq="5min", tz="UTC")
    return pd.DataFrame(
        {
            "date": dates.as_unit(date_unit()),
            "close": [np.inf, -np.inf, np.nan, 1e-300, 0.1 + 0.2],
            "whole": [1.0, 2.0, 3.0, 4.0, 5.0],  # stays float64
            "count": np.array([I64.min, I64.max, 0, -1, 7], dtype=np.int64),
            "flag": [True, False, True, False, True],
            "seen": pd.DatetimeIndex(
                [dates[0] + pd.Timedelta(milliseconds=123), pd.NaT, *dates[2:]]
            ).as_unit(date_unit()),
            "enter_tag": pd.array(["a", None, "c", "", "e"], dtype="str"),
            "note": np.array([None, "x", 1, 2.5, [1, 2]], dtype=object),
        }
    )


def assert_bit_exact(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """Equal frames, dtypes and all, and every float identical to the bit."""
    assert_frame_equal(left, right, check_exact=True, check_index_type=False)
    for name in left.columns:
        if left[name].dtype == np.float64:
            bits = np.asarray(left[name]).view(np.int64)
            assert (bits == np.asarray(right[name]).view(np.int64)).all(), name


def freqtrade_text(df: pd.DataFrame, key=KEY) -> str:
    """``df`` as FreqTrade's analyzed_df text frame."""
    columns, rows = json_rows(df)
    split = freqtrade.split_document(columns, [encode_row_json(row) for row in rows], 0)
    return freqtrade.analyzed_df_message(key, split, LA)


def published(df: pd.DataFrame, *, full: bool = True) -> PublishFrame:
    """A frame as the hub parses it from the producer worker's msgpack publish."""
    frame = publish_frame(KEY, df, LA, full=full, new_candle=False)
    message = parse_publish(publish_message(1, [frame]))
    return message["data"]["frames"][0]


async def store_frame(store, frame: PublishFrame) -> None:
    rows, dates = frame_rows(frame)
    packed = packed_rows(frame)
    update = store.replace if frame["full"] else store.upsert
    await update(
        STREAM,
        frame["columns"],
        rows,
        packed,
        dates,
        LA,
        dtypes=frame.get("dtypes"),
    )


### The encoding


def test_it_round_trips_every_dtype_bit_exactly():
    df = exotic_frame()
    message = native.decode(native_reply(KEY, df, LA))
    assert message["type"] == "analyzed_df"
    (decoded,) = message["frames"]
    assert decoded["key"] == list(KEY) and decoded["la"] == LA
    assert_bit_exact(decoded["df"], df)


def test_it_gives_dates_the_dtype_freqtrade_s_decoding_gives():
    """A frame decoded from either protocol can be appended to the other's."""
    df = analysed_frame(rows=3)
    theirs = freqtrade.decode_message(freqtrade_text(df))["data"]["df"]
    ours = native.decode(native_reply(KEY, df, LA))["frames"][0]["df"]
    assert ours["date"].dtype == theirs["date"].dtype


@pytest.mark.parametrize(
    "data, error",
    [
        (b"\xc1", r"invalid msgpack \(FormatError\): send a candlecast.v1 message"),
        (b"\x91" * 5000 + b"\xc0", r"invalid msgpack \(StackError\)"),
        (b"\x81\x90\x01", "invalid msgpack .*unhashable"),
        (msgpack.packb([1, 2]), 'a map with a "type"'),
        (msgpack.packb({"type": "tick"}), 'needs a "frames" list'),
        (
            msgpack.packb({"type": "tick", "whitelist": [1], "frames": []}),
            "whitelist must be a list of pairs",
        ),
        (
            msgpack.packb({"type": "tick", "frames": [{"key": ["A/B"]}]}),
            r"key must be \[pair, timeframe, candle_type\]",
        ),
        (
            msgpack.packb(
                {
                    "type": "tick",
                    "frames": [
                        {"key": list(KEY), "rows": 2, "columns": [["c", "<f8", b"x"]]}
                    ],
                }
            ),
            "column 'c' must hold 2 x 8 bytes",
        ),
        (
            msgpack.packb(
                {
                    "type": "tick",
                    "frames": [
                        {"key": list(KEY), "rows": 1, "columns": [["c", "<U8", b""]]}
                    ],
                }
            ),
            "column 'c' has an unknown dtype '<U8'",
        ),
    ],
)
def test_it_refuses_malformed_native_messages_saying_what_is_wrong(data, error):
    with pytest.raises(ProtocolError, match=error):
        native.decode(data)


def test_it_carries_nan_inf_and_dtypes_through_the_publish_message():
    frame = published(exotic_frame())
    assert frame["dtypes"] == ["M8", "<f8", "<f8", "<i8", "|b1", "M8", "str", "O"]
    assert frame["rows"][0][1] == np.inf and frame["rows"][1][1] == -np.inf
    assert frame["rows"][2][1] != frame["rows"][2][1]  # NaN, not None


@pytest.mark.parametrize("text", ['{"type":"publish","seq":3}', b"", None])
def test_it_tells_an_older_worker_that_publishes_are_msgpack(text):
    with pytest.raises(ProtocolError, match="publish messages are binary"):
        parse_publish(text)


@pytest.mark.parametrize(
    "dtypes, error",
    [
        (["<f8"], "dtypes must list one dtype code per column"),
        (["M8", "<U4"], "dtypes must list one dtype code per column"),
    ],
)
def test_it_refuses_a_publish_with_bad_dtypes(dtypes, error):
    frame = publish_frame(
        KEY, analysed_frame(rows=1)[["date", "close"]], LA, full=True, new_candle=False
    )
    frame["dtypes"] = dtypes
    with pytest.raises(ProtocolError, match=error):
        parse_publish(publish_message(1, [frame]))


def test_it_refuses_a_publish_value_with_no_json_form():
    frame = publish_frame(
        KEY, analysed_frame(rows=1)[["date", "close"]], LA, full=True, new_candle=False
    )
    frame["rows"][0][1] = b"\x00raw"
    parsed = parse_publish(publish_message(1, [frame]))
    with pytest.raises(ProtocolError, match="holds a value with no JSON form"):
        frame_rows(parsed["data"]["frames"][0])


def test_it_infers_a_dtype_where_stored_rows_no_longer_fit_the_declared_one():
    """A producer whose int column gained a None: nothing is lost, it turns float."""
    rows = [[0, 1, True], [300_000, None, None]]
    columns = native.columns_from_rows(["date", "n", "b"], ["M8", "<i8", "|b1"], rows)
    assert [code for _, code, _ in columns] == ["M8", "<f8", "O"]
    block = native.frame_block(KEY, columns, 2, 0, LA)
    df = native.decode(native.message("tick", [block]))["frames"][0]["df"]
    assert df["n"].tolist()[0] == 1.0 and np.isnan(df["n"].iloc[1])
    assert df["b"].tolist() == [True, None]


def test_it_keeps_an_int_too_wide_for_its_dtype_as_an_object():
    columns = native.columns_from_rows(["v"], ["<i4"], [[2**40]])
    assert columns == [["v", "O", [2**40]]]


def test_it_splits_a_tick_under_the_size_limit_and_reports_oversize_frames():
    blocks = [native_block(KEY, analysed_frame(rows=1), LA)] * 5
    size = len(blocks[0])
    messages, oversize = native.tick_messages(blocks, ["BTC/USDT"], 2 * size + 100)
    assert len(messages) == 3 and oversize == []
    decoded = [native.decode(m) for m in messages]
    assert [len(m["frames"]) for m in decoded] == [2, 2, 1]
    assert [m["whitelist"] for m in decoded] == [["BTC/USDT"], None, None]
    big = native_block(KEY, analysed_frame(rows=500), LA)
    messages, oversize = native.tick_messages([blocks[0], big], None, size + 100)
    assert oversize == [1] and len(native.decode(messages[0])["frames"]) == 1


### The snapshot store: exact native replies, cached per format


async def test_it_serves_exact_native_replies_from_stored_rows(store):
    df = exotic_frame()
    await store_frame(store, published(df))
    reply = native.decode(await store.reply(STREAM, None, wire.NATIVE))
    assert_bit_exact(reply["frames"][0]["df"], df)
    tail = native.decode(await store.reply(STREAM, 2, wire.NATIVE))["frames"][0]
    assert list(tail["df"].index) == [3, 4]  # FreqTrade's labels of the tail
    assert_bit_exact(
        tail["df"].reset_index(drop=True), df.tail(2).reset_index(drop=True)
    )


async def test_it_keeps_freqtrade_replies_as_freqtrade_sends_them(store):
    """The same stored rows, on FreqTrade's wire: NaN and +-inf are null."""
    await store_frame(store, published(exotic_frame()))
    text = await store.reply(STREAM, None, wire.FREQTRADE)
    split = orjson.loads(orjson.loads(text)["data"]["df"]["__value__"])
    assert [row[1] for row in split["data"]] == [None, None, None, 1e-300, 0.1 + 0.2]


async def test_it_caches_replies_per_format_until_the_key_changes(store):
    df = analysed_frame(rows=8)
    await store_frame(store, published(df))
    first = await store.reply(STREAM, None, wire.NATIVE)
    assert await store.reply(STREAM, None, wire.NATIVE) is first
    text = await store.reply(STREAM, None, wire.FREQTRADE)
    assert (
        isinstance(text, str)
        and await store.reply(STREAM, None, wire.FREQTRADE) is text
    )
    late = analysed_frame(rows=1, start="2026-11-06 05:00", seed=9)
    await store_frame(store, published(late, full=False))
    fresh = await store.reply(STREAM, None, wire.NATIVE)
    assert fresh is not first
    assert len(native.decode(fresh)["frames"][0]["df"]) == 9


async def test_it_builds_a_reply_once_for_requests_that_arrive_together(
    store, monkeypatch
):
    """A cold start: many consumers ask at once; each reply is encoded once."""
    await store_frame(store, published(analysed_frame(rows=8)))
    builds = []
    build = store._build_reply

    async def counted(*args):
        builds.append(args)
        await asyncio.sleep(0.05)  # others ask while this one is being built
        return await build(*args)

    monkeypatch.setattr(store, "_build_reply", counted)
    replies = await asyncio.gather(
        *(store.reply(STREAM, None, wire.NATIVE) for _ in range(20))
    )
    assert len(builds) == 1
    assert all(reply is replies[0] for reply in replies)


async def test_it_answers_an_unknown_stream_with_an_empty_native_frame(store):
    reply = native.decode(
        await store.reply(("x", "NOPE/USDT", "5m", "spot"), 3, wire.NATIVE)
    )
    (frame,) = reply["frames"]
    assert frame["df"].empty and frame["la"] == EPOCH


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    """A store keeping 10 rows per stream, of each kind."""
    if request.param == "memory":
        yield MemoryStore(max_rows=10)
        return
    prefix = request.getfixturevalue("redis_prefix")
    shared = RedisStore(REDIS_TEST_URL, prefix=prefix, max_rows=10)
    yield shared
    await shared.aclose()


@pytest.fixture
def redis_prefix():
    redis_or_skip()
    prefix = f"candlecast:snap:test:native:{time.time_ns()}:"
    yield prefix
    delete_prefix(prefix)


### The hub's sockets

db = pytest.mark.django_db(transaction=True)
SUBSCRIBE = {"type": "subscribe", "data": ["whitelist", "analyzed_df", "new_candle"]}


async def received_bytes(socket) -> bytes:
    output = await socket.receive_output(timeout=TIMEOUT)
    assert output["type"] == "websocket.send" and output.get("bytes") is not None, (
        output
    )
    return output["bytes"]


@pytest.fixture
async def worker(producer, producer_key):
    """The producer worker's publish socket, with both pairs' history published."""
    socket, connected = await publisher(producer_key)
    assert connected
    for seq, pair in enumerate(producer.pairs, start=1):
        df = exotic_frame() if pair == "BTC/USDT" else analysed_frame(rows=20)
        reply = await publish(
            socket, [frame(pair, df, full=True)], whitelist=producer.pairs, seq=seq
        )
        assert reply == {"type": "ack", "seq": seq}
    yield socket
    await socket.disconnect()


@db
async def test_it_selects_the_native_subprotocol_when_offered(feed_token):
    socket, connected = await feed(
        feed_token[0], subprotocols=["other", native.SUBPROTOCOL]
    )
    assert connected and socket.chosen == native.SUBPROTOCOL
    await socket.disconnect()


@db
async def test_it_selects_nothing_for_a_client_that_offers_nothing(feed_token):
    socket, connected = await feed(feed_token[0])
    assert connected and socket.chosen is None
    await socket.disconnect()


@db
async def test_it_answers_native_requests_with_exact_binary_frames(worker, feed_token):
    socket, _ = await feed(feed_token[0], subprotocols=[native.SUBPROTOCOL])
    await request(socket, {"type": "analyzed_df", "data": {"pair": "BTC/USDT"}})
    reply = native.decode(await received_bytes(socket))
    assert reply["type"] == "analyzed_df"
    assert_bit_exact(reply["frames"][0]["df"], exotic_frame())
    await request(socket, {"type": "whitelist"})  # requests and this reply stay JSON
    assert orjson.loads(await socket.receive_from(timeout=TIMEOUT)) == {
        "type": "whitelist",
        "data": ["BTC/USDT", "ETH/USDT"],
    }
    await socket.disconnect()


@db
async def test_it_sends_one_binary_message_a_tick_to_native_sockets_only(
    worker, feed_token
):
    """A native socket gets every pair's rows in one message; FreqTrade's, per pair."""
    ours, _ = await feed(feed_token[0], subprotocols=[native.SUBPROTOCOL])
    theirs, _ = await feed(feed_token[0])
    for socket in (ours, theirs):
        await request(socket, SUBSCRIBE)
    late = analysed_frame(rows=1, start="2026-11-06 05:00", seed=9)
    frames = [
        frame(pair, late, full=False, new_candle=True)
        for pair in ("BTC/USDT", "ETH/USDT")
    ]
    # BTC's history has other columns: its new row is shaped like that history.
    btc = exotic_frame().head(1).assign(date=late["date"].dt.as_unit(date_unit()))
    frames[0] = frame("BTC/USDT", btc, full=False, new_candle=True)
    assert (await publish(worker, frames, seq=20))["type"] == "ack"
    tick = native.decode(await received_bytes(ours))
    assert tick["type"] == "tick"
    assert [f["key"][0] for f in tick["frames"]] == ["BTC/USDT", "ETH/USDT"]
    assert all(f["new_candle"] for f in tick["frames"])
    assert list(tick["frames"][0]["df"].index) == [5]  # appended after 5 rows
    assert_bit_exact(tick["frames"][0]["df"].reset_index(drop=True), btc)
    assert await ours.receive_nothing(timeout=0.2)
    kinds = [orjson.loads(await theirs.receive_from(TIMEOUT))["type"] for _ in range(4)]
    assert kinds == ["analyzed_df", "new_candle", "analyzed_df", "new_candle"]
    assert await theirs.receive_nothing(timeout=0.2)
    await ours.disconnect()
    await theirs.disconnect()


@db
async def test_it_encodes_a_native_tick_once_for_every_native_socket(
    worker, feed_token, monkeypatch
):
    calls: list = []
    original = native.frame_block

    def counted(*args, **kwargs):
        calls.append(list(args[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(native, "frame_block", counted)
    sockets = [
        (await feed(feed_token[0], subprotocols=[native.SUBPROTOCOL]))[0]
        for _ in range(3)
    ]
    for socket in sockets:
        await request(socket, SUBSCRIBE)
    late = analysed_frame(rows=1, start="2026-11-06 05:00", seed=9)
    await publish(worker, [frame("ETH/USDT", late, full=False)], seq=21)
    messages = [await received_bytes(socket) for socket in sockets]
    assert len(set(messages)) == 1
    assert calls == [["ETH/USDT", "5m", "spot"]]
    for socket in sockets:
        await socket.disconnect()


@db
async def test_it_broadcasts_a_whitelist_change_to_native_sockets(worker, feed_token):
    socket, _ = await feed(feed_token[0], subprotocols=[native.SUBPROTOCOL])
    await request(socket, SUBSCRIBE)
    await publish(worker, [], whitelist=["BTC/USDT"], seq=22)
    tick = native.decode(await received_bytes(socket))
    assert tick["whitelist"] == ["BTC/USDT"] and tick["frames"] == []
    await socket.disconnect()


@db
async def test_it_sends_no_tick_to_a_native_socket_that_subscribed_to_nothing(
    worker, feed_token
):
    socket, _ = await feed(feed_token[0], subprotocols=[native.SUBPROTOCOL])
    late = analysed_frame(rows=1, start="2026-11-06 05:00", seed=9)
    await publish(worker, [frame("ETH/USDT", late, full=False)], seq=23)
    assert await socket.receive_nothing(timeout=0.2)
    await socket.disconnect()


@db
async def test_it_closes_a_revoked_token_s_native_sockets(feed_token):
    plaintext, token = feed_token
    socket, _ = await feed(plaintext, subprotocols=[native.SUBPROTOCOL])
    await sync_to_async(token.revoke)()
    output = await socket.receive_output(timeout=TIMEOUT)
    assert output["type"] == "websocket.close" and output["code"] == 4001


@db
async def test_it_refuses_a_native_reply_over_the_message_size_limit(
    worker, feed_token, settings
):
    settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB = 0
    socket, _ = await feed(feed_token[0], subprotocols=[native.SUBPROTOCOL])
    await request(socket, {"type": "analyzed_df", "data": {"pair": "BTC/USDT"}})
    message = orjson.loads(await socket.receive_from(timeout=TIMEOUT))
    assert message["type"] == "exception" and "limit" in message["data"]
    await socket.disconnect()


### The consumer client


class FakeHub:
    """A `websockets` feed on 127.0.0.1:0 answering in the native protocol when the
    client offers it and ``native`` is on, else in FreqTrade's (selecting nothing)."""

    def __init__(self, native_on: bool, frames: dict[str, pd.DataFrame]) -> None:
        self.native_on, self.frames = native_on, frames
        self.offered: list[str | None] = []
        self.sockets: list[ServerConnection] = []
        self.requests: list[dict] = []

    async def __aenter__(self) -> FakeHub:
        self._server = await serve(
            self._serve,
            "127.0.0.1",
            0,
            select_subprotocol=self._select,
            compression=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    def _select(self, ws: ServerConnection, offered: list[str]) -> str | None:
        # Like our hub: native when offered, FreqTrade's protocol otherwise.
        if self.native_on and native.SUBPROTOCOL in offered:
            return native.SUBPROTOCOL
        return None

    async def _serve(self, ws: ServerConnection) -> None:
        self.offered.append(ws.request.headers.get("Sec-WebSocket-Protocol"))
        self.sockets.append(ws)
        with contextlib.suppress(Exception):
            async for text in ws:
                self.requests.append(orjson.loads(text))
                await self._answer(ws, self.requests[-1])

    async def _answer(self, ws: ServerConnection, request: dict) -> None:
        if request["type"] == "whitelist":
            await ws.send(freqtrade.whitelist_message(list(self.frames)))
        elif request["type"] == "analyzed_df" and not request["data"]["pair"]:
            for pair, df in self.frames.items():
                key = (pair, "5m", "spot")
                if ws.subprotocol == native.SUBPROTOCOL:
                    await ws.send(native_reply(key, df, LA))
                else:
                    await ws.send(freqtrade_text(df, key))

    def follow(self) -> Follow:
        return Follow("default", "candlecast", "127.0.0.1", self.port, False, "tok")


async def eventually(predicate: Any, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:.1f} s")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def following(hub: FakeHub, *, offer: bool = True, on_stored=None):
    settings = ConsumerSettings(sleep_time=0.05, wait_timeout=5.0, ping_timeout=1.0)
    client = ProducerClient(
        hub.follow(), settings, FrameStore(), on_stored, native=offer
    )
    task = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        await client.close()
        await asyncio.wait_for(task, TIMEOUT)


def two_pairs() -> dict[str, pd.DataFrame]:
    return {
        "BTC/USDT": exotic_frame(),
        "ETH/USDT": analysed_frame(rows=5).assign(
            date=lambda d: d["date"].dt.as_unit(date_unit())
        ),
    }


def held(client: ProducerClient, pair: str) -> pd.DataFrame | None:
    entry = client.store.get((pair, "5m", "spot"))
    return None if entry is None else entry[0]


async def test_it_speaks_native_with_a_hub_that_selects_it(caplog):
    caplog.set_level(logging.INFO, "controlplane.lib.feedclient.client")
    frames = two_pairs()
    async with FakeHub(True, frames) as hub, following(hub) as client:
        await eventually(lambda: all(held(client, p) is not None for p in frames))
        assert client.protocol == native.SUBPROTOCOL
        # zstd first; a hub that predates it selects plain candlecast.v1
        assert hub.offered == [f"{native.SUBPROTOCOL_ZSTD}, {native.SUBPROTOCOL}"]
        assert_bit_exact(held(client, "BTC/USDT"), frames["BTC/USDT"])
    assert "speaking candlecast.v1" in caplog.text


async def test_it_stores_every_pair_of_a_native_tick(caplog):
    stored: list = []
    frames = two_pairs()
    async with (
        FakeHub(True, frames) as hub,
        following(hub, on_stored=lambda name, s: stored.append(s)) as client,
    ):
        await eventually(lambda: len(stored) == 2)
        blocks = [
            native_block(
                (pair, "5m", "spot"),
                df.head(1).assign(date=df["date"].iloc[-1] + pd.Timedelta("5min")),
                LA,
                new_candle=True,
            )
            for pair, df in frames.items()
        ]
        await hub.sockets[-1].send(native.message("tick", blocks))
        await eventually(lambda: len(stored) == 4)
        assert [(s.key[0], s.rows, s.appended) for s in stored[2:]] == [
            ("BTC/USDT", 6, 1),
            ("ETH/USDT", 6, 1),
        ]
        assert held(client, "BTC/USDT")["close"].iloc[-1] == np.inf


async def test_it_asks_for_the_history_after_a_gap_in_native_ticks():
    frames = two_pairs()
    async with FakeHub(True, frames) as hub, following(hub) as client:
        await eventually(lambda: held(client, "ETH/USDT") is not None)
        df = frames["ETH/USDT"]
        later = df.tail(1).assign(date=df["date"].iloc[-1] + pd.Timedelta("20min"))
        block = native_block(("ETH/USDT", "5m", "spot"), later, LA)
        await hub.sockets[-1].send(native.message("tick", [block]))
        gap = {"type": "analyzed_df", "data": {"limit": 5, "pair": "ETH/USDT"}}
        await eventually(lambda: gap in hub.requests)


async def test_it_falls_back_to_freqtrade_s_protocol_when_nothing_is_selected(caplog):
    caplog.set_level(logging.INFO, "controlplane.lib.feedclient.client")
    frames = two_pairs()
    async with FakeHub(False, frames) as hub, following(hub) as client:
        await eventually(lambda: all(held(client, p) is not None for p in frames))
        assert client.protocol == "freqtrade"
        offered = f"{native.SUBPROTOCOL_ZSTD}, {native.SUBPROTOCOL}"
        assert hub.offered == [offered]  # offered, not taken
        assert held(client, "BTC/USDT")["close"].isna().tolist()[:3] == [True] * 3
    assert caplog.text.count("speaking FreqTrade's protocol") == 1


async def test_it_never_offers_native_when_told_not_to():
    async with FakeHub(True, two_pairs()) as hub, following(hub, offer=False) as client:
        await eventually(lambda: held(client, "ETH/USDT") is not None)
        assert hub.offered == [None] and client.protocol == "freqtrade"


async def test_it_drops_a_malformed_native_message_and_keeps_the_link(caplog):
    async with FakeHub(True, two_pairs()) as hub, following(hub) as client:
        await eventually(lambda: held(client, "ETH/USDT") is not None)
        await hub.sockets[-1].send(b"\xc1\xc1")
        await eventually(lambda: client.dropped.get("malformed") == 1)
        assert client.connected and client.protocol == native.SUBPROTOCOL
    assert "dropped a malformed candlecast.v1 message" in caplog.text


def test_it_reports_no_protocol_while_not_connected():
    client = ProducerClient(
        Follow("x", "candlecast", "127.0.0.1", 1, False, "t"),
        ConsumerSettings(),
        FrameStore(),
    )
    assert client.protocol is None and client.native is True
