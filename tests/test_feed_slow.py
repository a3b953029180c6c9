"""A feed socket that reads slowly or not at all: latest wins, a cap, a reasoned close.

The client "does not read" here because the socket's sends are held at a gate, as
Daphne holds them while the connection's send buffer is full (runhub).
"""

from __future__ import annotations

import asyncio

import pytest

from controlplane.lib import counters as hub_counters
from producers.feed import CLOSE_TOO_SLOW, MAX_PENDING_REQUESTS, FeedSocket
from tests.feeds import (
    analysed_frame,
    feed,
    frame,
    publish,
    publisher,
    receive,
    request,
)

pytestmark = [pytest.mark.django_db(transaction=True)]

SUBSCRIBE = {"type": "subscribe", "data": ["analyzed_df"]}


@pytest.fixture
def gate(monkeypatch) -> asyncio.Event:
    """While clear, every feed socket's send waits: a client that stopped reading."""
    gate = asyncio.Event()
    original = FeedSocket._send

    async def held(self, data):
        await gate.wait()
        await original(self, data)

    monkeypatch.setattr(FeedSocket, "_send", held)
    return gate


def candle(minute: int):
    return frame(
        "BTC/USDT",
        analysed_frame(rows=1, start=f"2026-11-06 05:{minute:02d}", seed=minute),
        full=False,
    )


async def test_it_sends_a_socket_that_was_behind_only_the_newest_candle(
    producer_key, feed_token, gate
):
    hub_counters.reset()
    worker, _ = await publisher(producer_key)
    socket, _ = await feed(feed_token[0])
    await request(socket, SUBSCRIBE)
    await asyncio.sleep(0.05)  # the subscription is served by its own task
    for seq, minute in enumerate((0, 5, 10, 15), start=1):
        assert (await publish(worker, [candle(minute)], seq=seq))["type"] == "ack"
    await asyncio.sleep(0.1)
    gate.set()  # the client reads again
    dates = [str((await receive(socket))["data"]["df"]["date"].iloc[-1])]
    dates.append(str((await receive(socket))["data"]["df"]["date"].iloc[-1]))
    # 05:00 was already being written; 05:05 and 05:10 were replaced by 05:15.
    assert dates == ["2026-11-06 05:00:00+00:00", "2026-11-06 05:15:00+00:00"]
    assert await socket.receive_nothing(timeout=0.2)
    producer = hub_counters.read_state()["producers"]["alpha"]
    assert producer["totals"]["superseded"] == 2
    assert producer["totals"]["slow_closed"] == 0
    await socket.disconnect()
    await worker.disconnect()


async def test_it_shows_a_socket_behind_with_what_it_holds(
    producer_key, feed_token, gate, monkeypatch
):
    monkeypatch.setattr("producers.feed.BEHIND_SECONDS", 0.0)
    hub_counters.reset()
    worker, _ = await publisher(producer_key)
    socket, _ = await feed(feed_token[0])
    await request(socket, SUBSCRIBE)
    await asyncio.sleep(0.05)
    for seq, minute in enumerate((0, 5), start=1):
        await publish(worker, [candle(minute)], seq=seq)
    (subscriber,) = hub_counters.read_state()["producers"]["alpha"]["subscribers"]
    assert subscriber["behind"] is not None and subscriber["held"] > 0
    gate.set()
    await receive(socket)
    await receive(socket)
    (subscriber,) = hub_counters.read_state()["producers"]["alpha"]["subscribers"]
    assert subscriber["behind"] is None
    await socket.disconnect()
    await worker.disconnect()


async def test_it_closes_a_socket_over_its_cap_with_the_reason_in_words(
    producer_key, feed_token, gate, settings, caplog
):
    settings.CANDLECAST_FEED_SOCKET_CAP_MB = 0  # the first unsent broadcast is over
    hub_counters.reset()
    worker, _ = await publisher(producer_key)
    socket, _ = await feed(feed_token[0])
    await request(socket, SUBSCRIBE)
    await asyncio.sleep(0.05)
    await publish(worker, [candle(0)], seq=1)
    await publish(worker, [candle(5)], seq=2)
    closed = await socket.receive_output(timeout=2)
    assert closed["type"] == "websocket.close"
    assert closed["code"] == CLOSE_TOO_SLOW
    assert closed["reason"].startswith("too slow: 0.0 MiB unread for ")
    assert closed["reason"].endswith("; reconnect and request history")
    assert "feed: closing unknown (code 4008): too slow" in caplog.text
    assert caplog.records[-1].levelname == "WARNING"
    totals = hub_counters.read_state()["producers"]["alpha"]["totals"]
    assert totals["slow_closed"] == 1
    await worker.disconnect()


async def test_it_closes_a_client_that_piles_up_requests_it_never_reads(
    feed_token, gate
):
    hub_counters.reset()
    socket, _ = await feed(feed_token[0])
    history = {"type": "analyzed_df", "data": {"pair": "BTC/USDT"}}
    for _ in range(MAX_PENDING_REQUESTS + 2):  # one is being answered
        await request(socket, history)
    closed = await socket.receive_output(timeout=2)
    assert closed["code"] == CLOSE_TOO_SLOW
    assert closed["reason"] == f"{MAX_PENDING_REQUESTS} requests left unanswered"


async def test_it_keeps_broadcasting_while_a_reply_waits_on_the_client(
    producer_key, feed_token, gate
):
    """A reply held by a client that does not read holds up nothing else: the
    socket's broadcasts are still taken from the layer and kept latest-wins."""
    hub_counters.reset()
    worker, _ = await publisher(producer_key)
    socket, _ = await feed(feed_token[0])
    await request(socket, SUBSCRIBE)
    await request(socket, {"type": "analyzed_df", "data": {"pair": "BTC/USDT"}})
    await asyncio.sleep(0.05)
    for seq, minute in enumerate((0, 5, 10), start=1):
        await publish(worker, [candle(minute)], seq=seq)
    await asyncio.sleep(0.1)
    totals = hub_counters.read_state()["producers"]["alpha"]["totals"]
    assert totals["superseded"] == 2  # the reply at the gate; 05:00, 05:05 replaced
    assert totals["deliveries"] == 3  # all three were taken from the layer
    gate.set()
    reply = await receive(socket)
    assert reply["data"]["df"].empty  # asked before the first candle
    # Queued behind the reply, 05:00 was replaced by 05:05, then by 05:10.
    assert last_date(await receive(socket)) == "2026-11-06 05:10:00+00:00"
    assert await socket.receive_nothing(timeout=0.2)
    await socket.disconnect()
    await worker.disconnect()


async def test_it_never_sends_a_reply_older_than_a_candle_sent_before_it(
    producer_key, feed_token, monkeypatch
):
    """A candle that arrives while a reply is read goes first, and the reply is
    read again: sent after it, the older reply would rewind the consumer."""
    from producers.snapshots import get_store

    worker, _ = await publisher(producer_key)
    socket, _ = await feed(feed_token[0])
    await request(socket, SUBSCRIBE)
    await asyncio.sleep(0.05)
    await publish(worker, [candle(0)], seq=1)
    assert last_date(await receive(socket)) == "2026-11-06 05:00:00+00:00"
    store = get_store()
    original = type(store).reply
    reads = []

    async def read_while_a_candle_arrives(self, key, limit, fmt):
        text = await original(self, key, limit, fmt)
        reads.append(text)
        if len(reads) == 1:  # the hub stores and broadcasts 05:05 meanwhile
            await publish(worker, [candle(5)], seq=2)
            await asyncio.sleep(0.1)
        return text

    monkeypatch.setattr(type(store), "reply", read_while_a_candle_arrives)
    await request(socket, {"type": "analyzed_df", "data": {"pair": "BTC/USDT"}})
    received = [last_date(await receive(socket)) for _ in range(2)]
    assert received == ["2026-11-06 05:05:00+00:00"] * 2  # the candle, the reply
    assert len(reads) == 2
    assert await socket.receive_nothing(timeout=0.2)
    await socket.disconnect()
    await worker.disconnect()


async def test_it_sends_a_whitelist_reply_after_the_whitelists_queued_before_it(
    producer_key, feed_token, gate
):
    """Sent before an older queued whitelist, the reply would be undone by it."""
    worker, _ = await publisher(producer_key)
    socket, _ = await feed(feed_token[0])
    await request(socket, {"type": "subscribe", "data": ["whitelist"]})
    await asyncio.sleep(0.05)
    await publish(worker, [], whitelist=["BTC/USDT"], seq=1)  # being written
    await publish(worker, [], whitelist=["BTC/USDT", "ETH/USDT"], seq=2)  # queued
    await request(socket, {"type": "whitelist"})
    await asyncio.sleep(0.1)
    gate.set()
    received = [(await receive(socket))["data"] for _ in range(3)]
    newest = ["BTC/USDT", "ETH/USDT"]
    assert received == [["BTC/USDT"], newest, newest]  # the reply last
    assert await socket.receive_nothing(timeout=0.2)
    await socket.disconnect()
    await worker.disconnect()


def last_date(message: dict) -> str:
    return str(message["data"]["df"]["date"].iloc[-1])


async def test_it_shows_a_slow_socket_on_the_status_page_and_in_metrics(
    producer_key, feed_token, gate, monkeypatch
):
    from asgiref.sync import sync_to_async

    from controlplane import metrics
    from controlplane.overview import build_status_snapshot

    monkeypatch.setattr("producers.feed.BEHIND_SECONDS", 0.0)
    hub_counters.reset()
    worker, _ = await publisher(producer_key)
    socket, _ = await feed(feed_token[0])
    await request(socket, SUBSCRIBE)
    await asyncio.sleep(0.05)
    for seq, minute in enumerate((0, 5, 10), start=1):
        await publish(worker, [candle(minute)], seq=seq)
    await asyncio.sleep(0.1)  # the layer hands the last tick to the socket
    snapshot = await sync_to_async(build_status_snapshot)()
    (row,) = snapshot["producers"][0]["subscribers"]
    assert row["behind"].startswith("behind for 0 s: 0.0 MiB unsent")
    text = metrics.render(snapshot)
    assert 'candlecast_feed_subscribers_behind{producer="alpha"} 1' in text
    assert 'candlecast_producer_superseded_total{producer="alpha"} 1' in text
    assert 'candlecast_producer_slow_closed_total{producer="alpha"} 0' in text
    gate.set()
    await socket.disconnect()
    await worker.disconnect()
