"""The publish socket: a key that ends closes its socket at once; a message the hub
refuses is answered, and shown on the status page and in /metrics."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone

from controlplane import metrics
from controlplane.overview import build_status_snapshot
from producers.models import Producer, ProducerKey
from producers.snapshots import get_store
from tests.feeds import analysed_frame, frame, publish, publisher
from tests.statuskit import fresh_counters

pytestmark = [pytest.mark.django_db(transaction=True)]

KEYS = "/admin/producers/producerkey/"


async def closed(socket, timeout: float = 3) -> dict:
    """The close the socket received (fails if it stays open ``timeout`` s)."""
    return await socket.receive_output(timeout=timeout)


def current_key(producer: Producer) -> ProducerKey:
    return ProducerKey.objects.get(producer=producer, revoked_at=None)


@pytest.fixture
def bravo_key(db) -> str:
    """Another producer's worker, which nothing here may disturb."""
    return Producer.objects.create(name="bravo", pairs=["XRP/USDT"]).issue_key()


async def test_it_closes_the_publish_socket_of_a_revoked_key(
    producer, producer_key, bravo_key
):
    socket, connected = await publisher(producer_key)
    bystander, _ = await publisher(bravo_key)
    assert connected
    key = await sync_to_async(current_key)(producer)
    await sync_to_async(key.revoke)()
    assert await closed(socket) == {
        "type": "websocket.close",
        "code": 4001,
        "reason": f"producer key {key.prefix}… was revoked",
    }
    assert await bystander.receive_nothing(timeout=0.2)
    assert not (await publisher(producer_key))[1]  # and the next handshake is refused
    await bystander.disconnect()


async def test_it_closes_it_when_the_key_is_revoked_in_the_admin(
    producer, producer_key, admin_user
):
    socket, _ = await publisher(producer_key)
    key = await sync_to_async(current_key)(producer)

    def revoke_in_the_admin():
        client = Client()
        client.force_login(admin_user)
        action = {"action": "revoke", "_selected_action": [key.pk]}
        return client.post(KEYS, action, follow=True)

    response = await sync_to_async(revoke_in_the_admin)()
    assert (
        "1 producer key(s) revoked: refused from now on; the publish connection "
        "using it is closed at once on every hub process" in response.content.decode()
    )
    assert (await closed(socket))["code"] == 4001


async def test_it_closes_the_old_keys_socket_when_a_new_key_is_issued(
    producer, producer_key
):
    socket, _ = await publisher(producer_key)
    old = await sync_to_async(current_key)(producer)
    new = await sync_to_async(producer.issue_key)()
    assert (await closed(socket))["reason"] == f"producer key {old.prefix}… was revoked"
    successor, connected = await publisher(new)
    assert connected
    await successor.disconnect()


async def test_it_closes_the_socket_of_a_deleted_key(producer, producer_key):
    socket, _ = await publisher(producer_key)
    key = await sync_to_async(current_key)(producer)
    await sync_to_async(key.delete)()
    assert await closed(socket) == {
        "type": "websocket.close",
        "code": 4001,
        "reason": f"producer key {key.prefix}… was deleted",
    }


async def test_it_finds_an_expired_key_at_its_next_check(
    producer, producer_key, settings
):
    settings.CANDLECAST_TOKEN_RECHECK_SECONDS = 0.2
    socket, _ = await publisher(producer_key)
    key = await sync_to_async(current_key)(producer)
    # Past its expiry without any message: only the socket's own check sees it.
    await sync_to_async(ProducerKey.objects.filter(pk=key.pk).update)(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert await closed(socket) == {
        "type": "websocket.close",
        "code": 4002,
        "reason": f"producer key {key.prefix}… expired",
    }


async def test_a_valid_key_keeps_publishing_through_its_checks(
    producer, producer_key, settings
):
    settings.CANDLECAST_TOKEN_RECHECK_SECONDS = 0.05
    socket, _ = await publisher(producer_key)
    assert await socket.receive_nothing(timeout=0.3)  # several checks went by
    df = analysed_frame(rows=3)
    reply = await publish(socket, [frame("BTC/USDT", df, full=True)], seq=5)
    assert reply == {"type": "ack", "seq": 5}
    await socket.disconnect()


async def test_it_logs_the_close_with_the_key_prefix_only(
    producer, producer_key, caplog
):
    socket, _ = await publisher(producer_key)
    key = await sync_to_async(current_key)(producer)
    await sync_to_async(key.revoke)()
    await closed(socket)
    lines = [r.getMessage() for r in caplog.records if r.name == "producers.publish"]
    assert any(
        "closing producer worker alpha's socket" in line
        and f"producer key {key.prefix}… was revoked" in line
        for line in lines
    ), lines
    assert not any(producer_key in line for line in caplog.messages)


async def test_a_rewound_history_is_refused_and_shown_on_the_status_page(
    producer, producer_key
):
    await sync_to_async(fresh_counters)()
    socket, _ = await publisher(producer_key)
    df = analysed_frame(rows=300)
    assert (await publish(socket, [frame("BTC/USDT", df, full=True)]))["type"] == "ack"
    # A restarted worker whose clock was reset: its history ends 100 candles earlier.
    rewound = frame("BTC/USDT", df.iloc[:200], full=True)
    reply = await publish(socket, [rewound], seq=2)
    assert reply["type"] == "error" and "cannot go back in time" in reply["data"]
    snapshot = await sync_to_async(build_status_snapshot)()
    row = next(p for p in snapshot["producers"] if p["name"] == "alpha")
    assert row["rejection"].startswith("the hub refused its worker's publish (last ")
    assert "before the 2026-11-02T00:55:00+00:00 candle" in row["rejection"]
    assert f"Producer alpha: {row['rejection']}" in snapshot["problems"]
    assert row["totals"]["rejected"] == 1
    text = metrics.render(snapshot)
    assert 'candlecast_producer_rejected_total{producer="alpha"} 1' in text
    # The published rows are kept and still served.
    assert row["pairs"][0]["rows"] == 300


### Messages the hub cannot take


async def test_it_closes_with_4400_and_says_why_after_a_malformed_message(
    producer_key,
):
    """A worker out of step with the hub starts afresh: error reply, then close."""
    socket, _ = await publisher(producer_key)
    await socket.send_to(bytes_data=b"\x91" * 5000 + b"\xc0")  # nested too deep
    error = orjson.loads(await socket.receive_from(timeout=3))
    assert error["type"] == "error" and error["seq"] is None
    assert error["data"].startswith("invalid msgpack (StackError)")
    close = await closed(socket)
    assert (close["code"], close["reason"]) == (4400, error["data"])


async def test_it_closes_with_4413_a_message_over_the_size_limit(
    producer_key, settings
):
    settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB = 1
    socket, _ = await publisher(producer_key)
    await socket.send_to(bytes_data=b"\x00" * ((1 << 20) + 1))
    assert "over the 1 MiB message size limit" in (await socket.receive_from())
    assert (await closed(socket))["code"] == 4413


async def test_it_stores_nothing_of_a_message_with_one_bad_frame(producer_key):
    """The first frame is good, the second another timeframe: neither is stored,
    the whitelist is not changed, and the socket keeps serving."""
    socket, _ = await publisher(producer_key)
    good = frame("BTC/USDT", analysed_frame(rows=5), full=True)
    bad = frame("ETH/USDT", analysed_frame(rows=5), full=True, timeframe="1h")
    reply = await publish(socket, [good, bad], whitelist=["BTC/USDT"])
    assert reply["type"] == "error" and reply["seq"] == 1
    assert reply["data"].startswith("frame 1 key ")
    store = get_store()
    assert await store.tail(("alpha", "BTC/USDT", "5m", "spot"), 5) is None
    assert await store.whitelist("alpha") != ["BTC/USDT"]
    assert (await publish(socket, [good], seq=2)) == {"type": "ack", "seq": 2}
    assert len((await store.tail(("alpha", "BTC/USDT", "5m", "spot"), 5)).rows) == 5
    await socket.disconnect()
