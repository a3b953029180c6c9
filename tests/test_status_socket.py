"""The StatusSocket through the real ASGI stack: staff sessions only, origin checked,
and a new snapshot pushed when a candle arrives, a feed socket comes or goes, or a
consumer worker reports."""

from __future__ import annotations

import asyncio
import json
import time

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from consumers.models import Consumer, Follow
from controlplane import statussocket
from controlplane.lib import counters
from tests.feeds import analysed_frame, frame, publish, publisher
from tests.statuskit import (
    REPORT,
    TIMEOUT,
    forget_reports,
    fresh_counters,
    make_user,
    status_socket,
)

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    """Flush and push at test speed; the real pace is tested on its own."""
    fresh_counters()
    forget_reports("bob")
    monkeypatch.setattr(counters, "FLUSH_SECONDS", 0.05)
    monkeypatch.setattr(statussocket, "MIN_INTERVAL", 0.1)
    monkeypatch.setattr(statussocket, "SHARED_FOR", 0.05)
    yield
    fresh_counters()
    forget_reports("bob")


@pytest.fixture
async def ada(db):
    return await sync_to_async(make_user)("ada", staff=True)


async def snapshot_from(socket) -> dict:
    message = orjson.loads(await socket.receive_from(timeout=TIMEOUT))
    assert message["type"] == "snapshot"
    return message["data"]


async def snapshot_where(socket, predicate) -> dict:
    """The first pushed snapshot for which ``predicate`` holds."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        data = await snapshot_from(socket)
        if predicate(data):
            return data
    raise AssertionError("no pushed snapshot matched")


def alpha(data: dict) -> dict:
    return next(p for p in data["producers"] if p["name"] == "alpha")


async def test_it_refuses_an_anonymous_browser(producer):
    socket, connected = await status_socket(None)
    assert not connected


async def test_it_refuses_a_user_who_is_not_staff(producer):
    charlie = await sync_to_async(make_user)("charlie", staff=False)
    socket, connected = await status_socket(charlie)
    assert not connected


async def test_it_refuses_a_page_of_another_site(producer, ada):
    socket, connected = await status_socket(
        ada, origin=(b"origin", b"https://evil.example")
    )
    assert not connected


async def test_it_refuses_a_request_without_origin(producer, ada):
    socket, connected = await status_socket(ada, origin=None)
    assert not connected


async def test_it_sends_the_whole_snapshot_on_connect(producer, ada):
    socket, connected = await status_socket(ada)
    assert connected
    data = await snapshot_from(socket)
    await socket.disconnect()
    assert alpha(data)["state"] == "offline"
    assert [r["pair"] for r in alpha(data)["pairs"]] == ["BTC/USDT", "ETH/USDT"]


async def test_it_pushes_a_new_candle(producer, producer_key, ada):
    socket, _ = await status_socket(ada)
    await snapshot_from(socket)
    worker, _ = await publisher(producer_key)
    df = analysed_frame(rows=30)
    await publish(worker, [frame("BTC/USDT", df, full=True)], seq=1)
    data = await snapshot_where(
        socket, lambda d: alpha(d)["pairs"][0]["last_candle"] is not None
    )
    last = df["date"].iloc[-1].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert alpha(data)["pairs"][0]["last_candle"] == last
    assert alpha(data)["state"] == "online"
    await publish(
        worker, [frame("BTC/USDT", analysed_frame(rows=31), full=True)], seq=2
    )
    newer = await snapshot_where(
        socket, lambda d: alpha(d)["pairs"][0]["last_candle"] != last
    )
    assert alpha(newer)["pairs"][0]["rows"] == 31
    await worker.disconnect()
    await socket.disconnect()


async def test_it_pushes_a_consumer_connecting_and_leaving(producer, ada):
    socket, _ = await status_socket(ada)
    await snapshot_from(socket)
    counters.feed_connected("alpha", "feed-1", label="bot one", address="10.0.0.9")
    data = await snapshot_where(socket, lambda d: alpha(d)["subscribers"])
    assert [(s["who"], s["address"]) for s in alpha(data)["subscribers"]] == [
        ("bot one", "10.0.0.9")
    ]
    counters.feed_disconnected("alpha", "feed-1")
    await snapshot_where(socket, lambda d: not alpha(d)["subscribers"])
    await socket.disconnect()


async def test_it_pushes_a_consumer_s_status_report(producer, ada):
    consumer = await Consumer.objects.acreate(name="bob")
    await Follow.objects.acreate(consumer=consumer, producer=producer)
    key = await sync_to_async(consumer.issue_key)()
    socket, _ = await status_socket(ada)
    first = await snapshot_from(socket)
    assert first["consumers"][0]["state"] == "never"
    response = await AsyncClient().post(
        "/api/v1/consumer/status",
        json.dumps(REPORT),
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 204
    data = await snapshot_where(socket, lambda d: d["consumers"][0]["state"] != "never")
    assert data["consumers"][0]["state"] == "online"
    await socket.disconnect()


async def test_it_sends_nothing_when_nothing_changed(producer, ada, monkeypatch):
    monkeypatch.setattr(statussocket, "PERIODIC", 0.1)  # rebuilds, but sends no copy
    socket, _ = await status_socket(ada)
    await snapshot_from(socket)
    assert await socket.receive_nothing(timeout=0.5)
    await socket.disconnect()


async def test_it_sends_at_most_one_update_per_interval(producer, ada, monkeypatch):
    monkeypatch.setattr(statussocket, "MIN_INTERVAL", 0.5)
    socket, _ = await status_socket(ada)
    await snapshot_from(socket)

    async def churn() -> None:  # a change every 50 ms for 1.2 s
        for n in range(24):
            counters.feed_connected(
                "alpha", f"feed-{n}", label=f"bot {n}", address="::1"
            )
            await asyncio.sleep(0.05)

    changes = asyncio.create_task(churn())
    stamps, counts = [], []
    while not counts or counts[-1] < 24:
        counts.append(len(alpha(await snapshot_from(socket))["subscribers"]))
        stamps.append(time.monotonic())
    await changes
    await socket.disconnect()
    assert 2 <= len(counts) <= 4, counts
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert min(gaps) > 0.45, gaps
