"""candlecast.v1+zstd: the native message in one zstd frame, compressed once per hub.

Negotiation (zstd offered first, plain candlecast.v1 for an older peer), exact round
trips, clear refusals, and one compression per tick whatever the number of sockets.
"""

from __future__ import annotations

import re

import pytest
import zstandard

from controlplane.lib.feedclient.dispatch import Dispatch
from controlplane.lib.feedclient.framestore import FrameStore
from controlplane.lib.feedclient.requests import Requests
from controlplane.lib.wire import native
from controlplane.lib.wire.columns import ProtocolError, exact_rows
from tests.feeds import analysed_frame, feed, frame, native_reply, publish, request
from tests.test_native import (
    LA,
    SUBSCRIBE,
    assert_bit_exact,
    db,
    exotic_frame,
    received_bytes,
    worker,  # noqa: F401 (a fixture)
)

KEY = ("BTC/USDT", "5m", "spot")


def test_it_round_trips_a_native_reply_through_zstd_bit_exactly():
    plain = native_reply(KEY, exotic_frame(), LA)
    packed = native.compress(plain)
    assert len(packed) < len(plain)
    decoded = native.decode(native.decompress(packed, 8 << 20))
    assert_bit_exact(decoded["frames"][0]["df"], exotic_frame())


def shuffled_reply(df) -> bytes:
    names, codes, rows = exact_rows(df)
    columns = native.shuffled(native.columns_from_rows(names, codes, rows))
    block = native.frame_block(KEY, columns, len(df), 0, LA)
    return native.message("analyzed_df", [block])


def test_it_round_trips_byte_shuffled_columns_of_every_dtype_bit_exactly():
    for df in (exotic_frame(), analysed_frame(rows=300)):
        packed = native.compress(shuffled_reply(df))
        decoded = native.decode(native.decompress(packed, 8 << 20))
        assert_bit_exact(decoded["frames"][0]["df"], df)


def test_it_shuffles_so_that_zstd_finds_more_to_share():
    plain = native_reply(KEY, analysed_frame(rows=1500), LA)
    shuffled = shuffled_reply(analysed_frame(rows=1500))
    assert len(native.compress(shuffled)) < len(native.compress(plain))


def test_it_refuses_a_shuffled_column_of_strings():
    block = native.frame_block(KEY, [["tag", "str/s", b"ab"]], 1, 0, LA)
    with pytest.raises(ProtocolError, match="a shuffled column needs 1 values"):
        native.decode(native.message("analyzed_df", [block]))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"not zstd at all", "not a candlecast.v1+zstd message"),
        (native.compress(b"x" * 5000), "at most the 0 MiB message size limit"),
        (
            zstandard.ZstdCompressor(write_content_size=False).compress(b"x" * 10),
            "must say its size",
        ),
    ],
)
def test_it_refuses_a_zstd_message_it_cannot_trust_saying_why(data, error):
    with pytest.raises(ProtocolError, match=re.escape(error)):
        native.decompress(data, 1000)


async def test_it_drops_a_corrupt_zstd_message_and_counts_it():
    store = FrameStore()
    dispatch = Dispatch("hub", store, Requests("hub", 10), None, lambda _: None)
    await dispatch.handle(b"garbage", native.SUBPROTOCOL_ZSTD)
    assert dispatch.dropped == {"malformed": 1}


@db
async def test_it_selects_zstd_for_a_client_that_offers_it_first(feed_token):
    offer = [native.SUBPROTOCOL_ZSTD, native.SUBPROTOCOL]
    socket, connected = await feed(feed_token[0], subprotocols=offer)
    assert connected and socket.chosen == native.SUBPROTOCOL_ZSTD
    await socket.disconnect()


@db
async def test_it_still_speaks_plain_native_to_an_older_client(worker, feed_token):  # noqa: F811
    socket, _ = await feed(feed_token[0], subprotocols=[native.SUBPROTOCOL])
    assert socket.chosen == native.SUBPROTOCOL
    await request(socket, {"type": "analyzed_df", "data": {"pair": "BTC/USDT"}})
    reply = native.decode(await received_bytes(socket))  # not compressed
    assert_bit_exact(reply["frames"][0]["df"], exotic_frame())
    await socket.disconnect()


@db
async def test_it_answers_zstd_requests_with_exact_frames(worker, feed_token):  # noqa: F811
    socket, _ = await feed(feed_token[0], subprotocols=[native.SUBPROTOCOL_ZSTD])
    await request(socket, {"type": "analyzed_df", "data": {"pair": "BTC/USDT"}})
    data = native.decompress(await received_bytes(socket), 8 << 20)
    assert_bit_exact(native.decode(data)["frames"][0]["df"], exotic_frame())
    await socket.disconnect()


@db
async def test_it_compresses_a_tick_once_for_every_zstd_socket(
    worker,  # noqa: F811
    feed_token,
    monkeypatch,
):
    compressed: list[int] = []
    original = native.compress

    def counted(data: bytes) -> bytes:
        compressed.append(len(data))
        return original(data)

    monkeypatch.setattr(native, "compress", counted)
    sockets = [
        (await feed(feed_token[0], subprotocols=[native.SUBPROTOCOL_ZSTD]))[0]
        for _ in range(3)
    ]
    plain = (await feed(feed_token[0], subprotocols=[native.SUBPROTOCOL]))[0]
    for socket in [*sockets, plain]:
        await request(socket, SUBSCRIBE)
    late = analysed_frame(rows=1, start="2026-11-06 05:00", seed=9)
    await publish(worker, [frame("ETH/USDT", late, full=False)], seq=21)
    messages = [await received_bytes(socket) for socket in sockets]
    assert len(set(messages)) == 1
    assert len(compressed) == 1  # one tick, one compression, three sockets
    tick = native.decode(native.decompress(messages[0], 8 << 20))
    assert native.decompress(messages[0], 8 << 20) == await received_bytes(plain)
    assert [f["key"][0] for f in tick["frames"]] == ["ETH/USDT"]
    for socket in [*sockets, plain]:
        await socket.disconnect()


@db
async def test_it_compresses_a_reply_once_for_every_zstd_socket_that_asks(
    worker,  # noqa: F811
    feed_token,
    monkeypatch,
):
    compressed: list[int] = []
    original = native.compress
    monkeypatch.setattr(
        native, "compress", lambda data: compressed.append(len(data)) or original(data)
    )
    sockets = [
        (await feed(feed_token[0], subprotocols=[native.SUBPROTOCOL_ZSTD]))[0]
        for _ in range(3)
    ]
    replies = []
    for socket in sockets:
        await request(socket, {"type": "analyzed_df", "data": {"pair": "BTC/USDT"}})
        replies.append(await received_bytes(socket))
    assert len(set(replies)) == 1
    assert len(compressed) == 1  # the reply cache holds the compressed bytes
    for socket in sockets:
        await socket.disconnect()
