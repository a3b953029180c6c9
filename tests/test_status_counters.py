"""The hub's own counters (controlplane.lib.counters): what the sockets count,
how a process flushes them to the cache, and how readers sum every hub process."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.layers import get_channel_layer

from controlplane.lib import counterdocs, counters, wire
from producers.groups import feed_group
from tests.feeds import analysed_frame, feed, frame, publish, publisher
from tests.statuskit import fresh_counters


@pytest.fixture(autouse=True)
def _fresh():
    fresh_counters()
    yield
    fresh_counters()


def own(producer: str = "alpha") -> counterdocs.ProducerDoc:
    return counters.counters.document(time.time())["producers"][producer]


def update(pair: str, last: int, rows: int = 1500) -> counterdocs.PairUpdate:
    return counterdocs.PairUpdate(pair, last, rows, 1_700_000_000.0)


def test_it_counts_a_publish_and_keeps_each_pair_s_newest_candle():
    counters.published(
        "alpha", [update("BTC/USDT", 1000), update("ETH/USDT", 2000)], 512, 2
    )
    counters.published("alpha", [update("BTC/USDT", 3000)], 256, 1)
    doc = own()
    assert doc["totals"]["publishes"] == 2
    assert doc["totals"]["frames"] == 3
    assert doc["totals"]["candles"] == 3
    assert doc["totals"]["bytes_in"] == 768
    assert doc["pairs"]["BTC/USDT"]["last"] == 3000
    assert doc["pairs"]["ETH/USDT"]["last"] == 2000
    assert [tick[1] for tick in doc["ticks"]] == [2000, 3000]
    assert doc["last_publish"] == pytest.approx(time.time(), abs=5)


def test_it_lists_connected_feed_sockets_and_remembers_when_a_token_left():
    counters.feed_connected("alpha", "chan-1", label="bot one", address="10.0.0.9")
    counters.feed_connected(
        "alpha", "chan-2", label="bot two", address="::1", token_id=7
    )
    assert sorted(s["label"] for s in own()["subscribers"]) == ["bot one", "bot two"]
    counters.feed_disconnected("alpha", "chan-2")
    doc = own()
    assert [s["address"] for s in doc["subscribers"]] == ["10.0.0.9"]
    assert doc["departures"]["7"] == pytest.approx(time.time(), abs=5)
    assert "chan-1" not in str(doc), "channel names stay inside the hub"


def test_it_counts_deliveries_and_replies_through_the_feed_link():
    link = counters.feed_connected("alpha", "chan-1", label="", address="127.0.0.1")
    link.delivered({"messages": []}, 2, 300)
    link.delivered({"messages": []}, 1, 100)
    link.replied(5000)
    link.refused_oversize()
    totals = own()["totals"]
    assert (totals["deliveries"], totals["bytes_out"]) == (3, 400)
    assert (totals["replies"], totals["reply_bytes"], totals["oversize"]) == (
        1,
        5000,
        1,
    )


def test_it_counts_broadcasts_the_layer_dropped_before_a_socket():
    link = counters.feed_connected("alpha", "chan-1", label="", address="127.0.0.1")
    for seq in (1, 2, 5, 6):
        link.delivered({"origin": "pub-a", "seq": seq}, 1, 10)
    assert own()["totals"]["dropped"] == 2
    # A reconnected producer worker numbers from 1 again: not a loss.
    link.delivered({"origin": "pub-b", "seq": 1}, 1, 10)
    assert own()["totals"]["dropped"] == 2


def test_it_counts_refused_handshakes_by_reason():
    counters.handshake_refused("throttled")
    counters.handshake_refused("credentials")
    counters.handshake_refused("credentials")
    assert counters.read_state()["refused"] == {
        "throttled": 1,
        "credentials": 2,
        "disabled": 0,
        "worker_name": 0,
    }
    with pytest.raises(ValueError, match="unknown refusal"):
        counters.handshake_refused("bored")


def test_it_counts_a_producer_s_first_minute_from_its_first_event():
    """What happened before the first flush (a worker's history) is in the minute."""
    counters.published("alpha", [update("BTC/USDT", 1000)], 100, 0)
    assert own()["minute"]["frames"] == 1


async def test_it_counts_per_minute_within_the_last_sixty_seconds():
    start = time.time()
    counters.published("alpha", [update("BTC/USDT", 1000)], 100, 1)
    await counters.counters.flush(start)
    counters.published("alpha", [update("BTC/USDT", 2000)], 100, 1)
    await counters.counters.flush(start + 30)
    counters.published("alpha", [update("BTC/USDT", 3000)], 100, 1)
    await counters.counters.flush(start + 61)
    doc = counters.counters.document(start + 61)["producers"]["alpha"]
    assert doc["totals"]["frames"] == 3
    assert doc["minute"]["frames"] == 1, "only the publish after start + 30 s"


async def test_it_flushes_when_something_changed_and_wakes_the_status_group():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(counters.STATUS_GROUP, channel)
    now = time.time()
    counters.producer_connected("alpha", "pub-1", "127.0.0.1")
    assert await counters.counters.flush(now) is True
    assert await asyncio.wait_for(layer.receive(channel), 1) == {
        "type": counters.STATUS_CHANGED
    }
    assert await counters.counters.flush(now + 1) is False
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 0.2)


async def test_it_rewrites_a_quiet_process_s_document_as_its_heartbeat():
    now = time.time()
    counters.producer_connected("alpha", "pub-1", "127.0.0.1")
    await counters.counters.flush(now)
    other = counters.HubCounters()  # how another hub process reads this one
    assert other.process != counters.counters.process
    later = now + counters.REFRESH_SECONDS + 1
    assert await counters.counters.flush(later) is False  # nothing new to announce
    key = f"status:process:{counters.counters.process}"
    from django.core.cache import cache

    assert cache.get(key)["written"] == later


def other_process(now: float, **producer: object) -> counterdocs.ProcessDoc:
    doc = counterdocs.empty_producer()
    doc.update(producer)
    return {
        "process": "elsewhere:1:abc",
        "written": now,
        "processes": 1,
        "producers": {"alpha": doc},
        "refused": {"throttled": 3, "credentials": 0, "disabled": 0},
    }


def test_it_sums_the_counters_of_every_hub_process():
    now = time.time()
    counters.published("alpha", [update("BTC/USDT", 1000)], 100, 1)
    counters.feed_connected("alpha", "chan-1", label="here", address="127.0.0.1")
    totals = dict.fromkeys(counterdocs.COUNTERS, 0) | {"frames": 10, "deliveries": 40}
    counters.write_document(
        other_process(
            now,
            totals=totals,
            subscribers=[
                {
                    "id": "x",
                    "address": "10.1.1.1",
                    "since": now,
                    "label": "there",
                    "token_id": None,
                }
            ],
            pairs={
                "BTC/USDT": {"last": 9000, "rows": 5, "received": now + 1, "la": now}
            },
        )
    )
    state = counters.read_state(now)
    alpha = state["producers"]["alpha"]
    assert state["processes"] == 2
    assert alpha["totals"]["frames"] == 11
    assert alpha["totals"]["deliveries"] == 40
    assert sorted(s["label"] for s in alpha["subscribers"]) == ["here", "there"]
    assert alpha["pairs"]["BTC/USDT"]["last"] == 9000, "the newest received wins"
    assert state["refused"]["throttled"] == 3


def test_it_drops_a_hub_process_that_stopped_writing():
    now = time.time()
    counters.write_document(other_process(now - counters.PROCESS_TTL - 1))
    assert counters.read_state(now)["processes"] == 1


@pytest.mark.django_db(transaction=True)
async def test_the_publish_socket_records_the_worker_and_its_candles(
    producer, producer_key
):
    socket, connected = await publisher(producer_key)
    assert connected
    df = analysed_frame(rows=20)
    reply = await publish(socket, [frame("BTC/USDT", df, full=True)], seq=1)
    assert reply == {"type": "ack", "seq": 1}
    doc = own()
    assert len(doc["publishers"]) == 1
    last = int(df["date"].iloc[-1].timestamp() * 1000)
    assert doc["pairs"]["BTC/USDT"]["last"] == last
    assert doc["pairs"]["BTC/USDT"]["rows"] == 20
    assert doc["totals"]["publishes"] == 1
    await socket.disconnect()
    assert own()["publishers"] == []


@pytest.mark.django_db(transaction=True)
async def test_the_publish_socket_numbers_its_broadcasts(producer, producer_key):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(feed_group(producer.name, wire.FREQTRADE), channel)
    socket, _ = await publisher(producer_key)
    df = analysed_frame(rows=3)
    for seq in (1, 2):
        await publish(
            socket, [frame("BTC/USDT", df.iloc[: seq + 1], full=True)], seq=seq
        )
    first = await asyncio.wait_for(layer.receive(channel), 1)
    second = await asyncio.wait_for(layer.receive(channel), 1)
    await socket.disconnect()
    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["origin"] == second["origin"]


@pytest.mark.django_db(transaction=True)
async def test_the_publish_socket_counts_a_refused_key(producer):
    socket, connected = await publisher("ccp_notakey")
    assert not connected
    assert counters.read_state()["refused"]["credentials"] == 1


@pytest.mark.django_db(transaction=True)
async def test_a_socket_killed_by_its_channel_layer_leaves_the_status(
    producer, producer_key, feed_token, monkeypatch
):
    """A dead Redis ends sockets without websocket.disconnect; none stays listed."""
    layer, broken = get_channel_layer(), asyncio.Event()
    read = layer.receive

    async def receive(channel):
        message = await read(channel)
        if broken.is_set():
            raise ConnectionError("Error connecting to 127.0.0.1:6379")
        return message

    monkeypatch.setattr(layer, "receive", receive)
    socket, _ = await publisher(producer_key)
    follower, _ = await feed(feed_token[0])
    meter = counters.counters.meter(producer.name)
    channels = [*meter.publishers, *meter.subscribers]
    assert len(channels) == 2
    broken.set()
    for communicator, channel in zip((socket, follower), channels, strict=True):
        await layer.send(channel, {"type": "anything"})
        with pytest.raises(ConnectionError):
            await communicator.wait(1)
    doc = own(producer.name)
    assert (doc["publishers"], doc["subscribers"]) == ([], [])
