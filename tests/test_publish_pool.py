"""The publish socket's pool: named producer workers are told their pairs, frames of
another worker's pairs are refused, a ghost of a name is closed with 4409, and a
socket without a name publishes as before."""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
import pytest
from asgiref.sync import sync_to_async

from controlplane.lib import counters
from producers import publish as publish_socket
from producers.leases import Leases, assignment, leases
from producers.models import Producer
from producers.snapshots import get_store
from tests.feeds import analysed_frame, connect, frame, publish, publisher
from tests.statuskit import fresh_counters

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _counted_from_zero():
    fresh_counters()


PAIRS = ["BTC/USDT", "ETH/USDT"]


async def pool_worker(key: str, name: str):
    return await connect(
        "/api/v1/publish/ws",
        headers=[
            (b"authorization", f"Bearer {key}".encode()),
            (b"x-candlecast-worker", name.encode()),
        ],
    )


async def assigned(socket, timeout: float = 3) -> list[str]:
    """The pairs of the next message, which must be an assign."""
    message = orjson.loads(await socket.receive_from(timeout=timeout))
    assert message["type"] == "assign", message
    return message["data"]["pairs"]


async def settled(socket, pairs: list[str], timeout: float = 3) -> None:
    """Read assigns until one gives ``pairs``: two workers that connect at once may
    each see the other's lease, or not yet, at their first assignment."""
    deadline = time.monotonic() + timeout
    while (got := await assigned(socket, deadline - time.monotonic())) != pairs:
        assert time.monotonic() < deadline, f"still {got}, not {pairs}"


def history(pair: str, rows: int = 10, start: str = "2026-11-01"):
    return frame(pair, analysed_frame(rows, start=start), full=True)


def key(pair: str) -> tuple[str, str, str, str]:
    return ("alpha", pair, "5m", "spot")


async def test_it_assigns_a_lone_worker_every_pair(producer_key):
    socket, connected = await pool_worker(producer_key, "worker-a")
    assert connected
    assert await assigned(socket) == PAIRS
    assert await socket.receive_nothing(timeout=1.3)  # a refresh changes nothing
    await socket.disconnect()


async def test_it_splits_the_pairs_and_gives_them_back(producer_key):
    """A second worker takes its share at once; when it leaves, the first gets
    the pairs back at once (not at the lease's expiry)."""
    shares = assignment(PAIRS, ["worker-a", "worker-b"])
    a, _ = await pool_worker(producer_key, "worker-a")
    assert await assigned(a) == PAIRS
    b, _ = await pool_worker(producer_key, "worker-b")
    assert await assigned(b) == shares["worker-b"]
    assert await assigned(a, timeout=2) == shares["worker-a"]
    await b.disconnect()
    assert await assigned(a, timeout=2) == PAIRS  # before the lease expired
    await a.disconnect()


async def test_it_refuses_the_frames_of_a_pair_not_assigned(
    producer, producer_key, monkeypatch
):
    """Worker a lost ``theirs`` to b (and has no grace for it here) and never had
    DOGE/USDT."""
    monkeypatch.setattr(publish_socket, "HANDOVER_GRACE_SECONDS", 0.0)
    shares = assignment(PAIRS, ["worker-a", "worker-b"])
    mine, theirs = shares["worker-a"][0], shares["worker-b"][0]
    a, _ = await pool_worker(producer_key, "worker-a")
    b, _ = await pool_worker(producer_key, "worker-b")
    await settled(a, shares["worker-a"]), await settled(b, shares["worker-b"])
    reply = await publish(a, [history(mine), history(theirs), history("DOGE/USDT")])
    assert reply["type"] == "error" and reply["seq"] == 1
    assert reply["data"].startswith(
        f"frames for {theirs}, DOGE/USDT refused: not assigned to producer worker "
        "worker-a"
    )
    store = get_store()
    assert len((await store.tail(key(mine), None)).rows) == 10  # the rest stored
    assert await store.tail(key(theirs), None) is None
    state = counters.read_state()["producers"]["alpha"]
    assert state["totals"]["rejected"] == 1
    assert state["last_rejection"]["text"] == reply["data"]
    assert (await publish(b, [history(theirs)], seq=1))["type"] == "ack"
    await a.disconnect()
    await b.disconnect()


async def test_a_pair_handed_over_moments_ago_is_left_to_its_new_worker(
    producer, producer_key, caplog
):
    """A worker that has not heard it lost a pair yet publishes it once more: a
    handover, acked, not stored and not counted as refused."""
    shares = assignment(PAIRS, ["worker-a", "worker-b"])
    mine, theirs = shares["worker-a"][0], shares["worker-b"][0]
    a, _ = await pool_worker(producer_key, "worker-a")
    await settled(a, PAIRS)
    b, _ = await pool_worker(producer_key, "worker-b")
    await settled(a, shares["worker-a"]), await settled(b, shares["worker-b"])
    with caplog.at_level(logging.INFO, logger="producers.publish"):
        reply = await publish(a, [history(mine), history(theirs)])
    assert reply == {"type": "ack", "seq": 1}
    store = get_store()
    assert len((await store.tail(key(mine), None)).rows) == 10
    assert await store.tail(key(theirs), None) is None
    assert counters.read_state()["producers"]["alpha"]["totals"]["rejected"] == 0
    assert any(
        f"worker worker-a sent frames for {theirs}, which the pool handed to another "
        "worker"
        in record.getMessage()
        and record.levelno == logging.INFO
        for record in caplog.records
    )
    # Never its own: refused, handover or not.
    reply = await publish(a, [history("DOGE/USDT")], seq=2)
    assert reply["type"] == "error"
    await a.disconnect()
    await b.disconnect()


async def test_a_pool_workers_whitelist_is_the_definitions(producer_key):
    a, _ = await pool_worker(producer_key, "worker-a")
    await assigned(a)
    reply = await publish(a, [history("BTC/USDT")], whitelist=["BTC/USDT"])
    assert reply["type"] == "ack"
    assert await get_store().whitelist("alpha") == PAIRS
    await a.disconnect()


async def test_it_closes_the_older_socket_of_a_name_with_4409(producer_key):
    """A restarted worker replaces its ghost at once; the ghost's end leaves the
    name's lease to the new socket."""
    ghost, _ = await pool_worker(producer_key, "worker-a")
    await assigned(ghost)
    fresh, connected = await pool_worker(producer_key, "worker-a")
    assert connected
    assert await assigned(fresh) == PAIRS
    close = await ghost.receive_output(timeout=2)
    assert close["type"] == "websocket.close" and close["code"] == 4409
    assert close["reason"] == (
        "producer worker worker-a is replaced: it connected again from unknown; "
        "this older socket is closed"
    )
    await ghost.disconnect()
    assert await sync_to_async(leases.live)("alpha") == ["worker-a"]
    assert (await publish(fresh, [history("ETH/USDT")]))["type"] == "ack"
    await fresh.disconnect()


async def test_a_socket_without_a_name_publishes_as_before(producer_key):
    """Older workers and relays: no assign, any of the producer's pairs."""
    named, _ = await pool_worker(producer_key, "worker-a")
    await assigned(named)
    unnamed, connected = await publisher(producer_key)
    assert connected
    assert await unnamed.receive_nothing(timeout=1.2)
    reply = await publish(unnamed, [history("BTC/USDT"), history("ETH/USDT")])
    assert reply == {"type": "ack", "seq": 1}
    assert await named.receive_nothing(timeout=0.2)  # nor does it join the pool
    await unnamed.disconnect()
    await named.disconnect()


async def test_it_follows_a_worker_that_another_hub_holds(producer_key):
    """Hub processes share nothing but the cache: a lease another hub refreshes
    changes this hub's assignment within a refresh, and its expiry gives the
    pairs back."""
    other_hub = Leases()  # the same cache (Redis in scale-out)
    shares = assignment(PAIRS, ["worker-a", "worker-remote"])
    a, _ = await pool_worker(producer_key, "worker-a")
    assert await assigned(a) == PAIRS
    since = time.time()
    await sync_to_async(other_hub.hold)("alpha", "worker-remote", "elsewhere", since)
    assert await assigned(a, timeout=2) == shares["worker-a"]
    computed = await sync_to_async(other_hub.shares)("alpha", PAIRS)
    assert computed == shares  # both hubs see the same split
    await sync_to_async(other_hub.drop)("alpha", "worker-remote", "elsewhere")
    assert await assigned(a, timeout=2) == PAIRS
    await a.disconnect()


async def test_another_hubs_join_is_heard_at_once(producer_key, monkeypatch):
    """The hub that takes a worker's lease tells every hub's pool sockets through
    the channel layer: no refresh needed (here none comes for 30 s)."""
    from channels.layers import get_channel_layer

    from producers import publish as publish_socket
    from producers.groups import POOL_CHANGED, publish_group

    monkeypatch.setattr(publish_socket, "REFRESH_SECONDS", 30.0)
    shares = assignment(PAIRS, ["worker-a", "worker-remote"])
    a, _ = await pool_worker(producer_key, "worker-a")
    assert await assigned(a) == PAIRS
    assert await a.receive_nothing(timeout=0.3)  # its own join's wake-up: no change
    await sync_to_async(Leases().hold)(
        "alpha", "worker-remote", "elsewhere", time.time()
    )
    assert await a.receive_nothing(timeout=0.5)  # unheard: no refresh comes
    await get_channel_layer().group_send(publish_group("alpha"), {"type": POOL_CHANGED})
    assert await assigned(a, timeout=1) == shares["worker-a"]
    await a.disconnect()


async def test_it_refuses_a_bad_worker_name_at_the_handshake(producer_key):
    for name in ("", "x" * 65, "worker a", "<b>", "-lead"):
        _, connected = await pool_worker(producer_key, name)
        assert not connected, name
    assert counters.read_state()["refused"]["worker_name"] == 5


async def test_a_new_owner_may_start_one_candle_behind_the_old_one(producer_key):
    """Each worker runs its own source clock: the pair's new owner can load its
    history a candle before the old owner's newest. That history is taken and the
    held newer candle kept; one that ends on a candle the hub never held is still
    refused as rewound."""
    store = get_store()
    old, _ = await pool_worker(producer_key, "worker-a")
    await assigned(old)
    assert (await publish(old, [history("BTC/USDT", rows=11)]))["type"] == "ack"
    await old.disconnect()
    new, _ = await pool_worker(producer_key, "worker-b")
    assert await assigned(new) == PAIRS
    behind = history("BTC/USDT", rows=10)  # ends a candle before the held newest
    assert (await publish(new, [behind]))["type"] == "ack"
    held = await store.tail(key("BTC/USDT"), None)
    assert len(held.rows) == 11
    gap = history("BTC/USDT", rows=5, start="2026-10-01")  # no held candle in it
    reply = await publish(new, [gap], seq=2)
    assert reply["type"] == "error" and "cannot go back in time" in reply["data"]
    await new.disconnect()


async def test_an_unnamed_socket_is_still_refused_a_rewound_history(producer_key):
    socket, _ = await publisher(producer_key)
    assert (await publish(socket, [history("BTC/USDT", rows=11)]))["type"] == "ack"
    reply = await publish(socket, [history("BTC/USDT", rows=10)], seq=2)
    assert reply["type"] == "error" and "cannot go back in time" in reply["data"]
    await socket.disconnect()


async def test_the_status_shows_each_workers_share(producer, producer_key):
    from controlplane import metrics
    from controlplane.overview import build_status_snapshot

    shares = assignment(PAIRS, ["worker-a", "worker-b"])
    a, _ = await pool_worker(producer_key, "worker-a")
    b, _ = await pool_worker(producer_key, "worker-b")
    await settled(a, shares["worker-a"]), await settled(b, shares["worker-b"])
    await sync_to_async(Producer.record_analysis_status)(
        producer,
        {"workers": 1, "candle_seconds": 0.25, "processes": [], "worker": "worker-a"},
    )
    await asyncio.sleep(0)
    snapshot = await sync_to_async(build_status_snapshot)()
    row = next(p for p in snapshot["producers"] if p["name"] == "alpha")
    assert [(w["name"], w["pairs"]) for w in row["workers"]] == [
        ("worker-a", 1),
        ("worker-b", 1),
    ]
    assert row["pool"] == (
        "2 workers: worker-a (1 pair, 0.25 s per candle); worker-b (1 pair)"
    )
    text = metrics.render(snapshot)
    assert (
        'candlecast_producer_worker_pairs{producer="alpha",worker="worker-b"} 1' in text
    )
    assert (
        'candlecast_producer_worker_candle_seconds{producer="alpha",'
        'worker="worker-a"} 0.250' in text
    )
    await a.disconnect()
    await b.disconnect()
