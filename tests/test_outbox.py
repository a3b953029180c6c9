"""A slow feed socket's outbox: latest wins per stream, and a cap in bytes."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.lib.outbox import Outbox, SocketTooSlow, stream_key
from controlplane.lib.wire import freqtrade
from controlplane.lib.wire.columns import EPOCH

BTC = ("BTC/USDT", "5m", "spot")
ETH = ("ETH/USDT", "5m", "spot")


def candle(key: tuple[str, str, str], close: float) -> str:
    """A 1-row analyzed_df broadcast as the hub encodes it for FreqTrade."""
    doc = b'{"columns":["close"],"index":[0],"data":[[%r]]}' % close
    return freqtrade.analyzed_df_message(key, doc, EPOCH)


def put(box: Outbox, data: str | bytes, position: int = 0) -> None:
    box.put(stream_key(data, position), data, now=0.0)


async def drain(box: Outbox) -> list[str | bytes]:
    out = []
    while box.items:
        await box.ready()
        out.append(box.pop())
    box.sent()
    return out


def test_it_keys_freqtrade_s_messages_by_type_and_stream():
    assert stream_key(candle(BTC, 1.0), 0) == stream_key(candle(BTC, 2.0), 5)
    assert stream_key(candle(BTC, 1.0), 0) != stream_key(candle(ETH, 1.0), 0)
    assert stream_key(freqtrade.new_candle_message(BTC), 0) != stream_key(
        candle(BTC, 1.0), 0
    )
    assert stream_key(freqtrade.whitelist_message(["A"]), 0) == stream_key(
        freqtrade.whitelist_message(["A", "B"]), 0
    )


def test_it_never_replaces_an_exception():
    """Only a newer state of the same stream makes a queued message worthless."""
    text = freqtrade.exception_message("Error processing request")
    assert stream_key(text, 0) != stream_key(text, 0)


def test_it_keys_a_native_tick_s_messages_by_their_place_in_the_tick():
    assert stream_key(b"\x83tick-one", 0) == stream_key(b"\x83tick-two", 0)
    assert stream_key(b"\x83tick-one", 0) != stream_key(b"\x83tick-one", 1)


async def test_it_sends_the_newest_of_each_stream_once_it_drains():
    box = Outbox(cap=1 << 20)
    for close in (1.0, 2.0, 3.0):
        put(box, candle(BTC, close))
        put(box, candle(ETH, close * 10))
    assert box.superseded == 4
    assert await drain(box) == [candle(BTC, 3.0), candle(ETH, 30.0)]


async def test_it_moves_a_replaced_message_behind_the_others():
    """A replaced broadcast goes last: it is the newest thing the socket will read."""
    box = Outbox(cap=1 << 20)
    put(box, candle(BTC, 1.0))
    put(box, candle(ETH, 1.0))
    put(box, candle(BTC, 2.0))
    assert await drain(box) == [candle(ETH, 1.0), candle(BTC, 2.0)]


def test_it_counts_the_bytes_it_holds():
    box = Outbox(cap=1 << 20)
    put(box, candle(BTC, 1.0))
    put(box, candle(BTC, 22.0))
    put(box, b"\x83" * 100)
    assert box.nbytes == len(candle(BTC, 22.0)) + 100


def test_it_says_how_much_and_how_long_once_over_its_cap():
    box = Outbox(cap=3 << 20)
    box.put(("tick", 0), b"x" * (2 << 20), now=100.0)
    with pytest.raises(SocketTooSlow) as raised:
        box.put(("tick", 1), b"y" * (2 << 20), now=112.0)
    assert str(raised.value) == (
        "too slow: 4.0 MiB unread for 12 s; reconnect and request history"
    )


async def test_it_is_behind_from_its_first_queued_message_until_it_drains():
    box = Outbox(cap=1 << 20)
    assert box.behind_since is None
    box.put(("tick", 0), b"a", now=5.0)
    box.put(("tick", 1), b"b", now=9.0)
    assert box.behind_since == 5.0
    box.pop()
    box.sent()
    assert box.behind_since == 5.0  # one still queued
    box.pop()
    box.sent()
    assert box.behind_since is None
    assert box.nbytes == 0


async def test_it_wakes_a_waiting_sender_when_a_message_arrives():
    box = Outbox(cap=1 << 20)
    waiting = asyncio.create_task(box.ready())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    assert box.pop() is None
    box.put(("tick", 0), b"a")
    await asyncio.wait_for(waiting, 1)
    assert box.pop() == b"a"
