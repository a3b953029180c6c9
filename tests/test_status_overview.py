"""build_status_snapshot(): who is online, what is stale or lagging, and why."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import time_machine

from consumers.models import Consumer, Follow
from controlplane.lib import counters
from controlplane.overview import build_status_snapshot
from producers.models import FeedToken, Producer
from tests.statuskit import REPORT, forget_reports, fresh_counters

STEP = 300_000  # 5 minutes in ms
T0 = int(datetime(2026, 11, 1, 10, 0, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture(autouse=True)
def _fresh():
    fresh_counters()
    forget_reports("bob", "carol")
    yield
    fresh_counters()
    forget_reports("bob", "carol")


@pytest.fixture
def demo(db) -> Producer:
    """A 5m producer on a fast clock: a candle every 5 s."""
    return Producer.objects.create(
        name="demo",
        pairs=["BTC/USDT", "ETH/USDT"],
        timeframe="5m",
        source_options={"seed": 1, "seconds_per_candle": 5},
    )


@pytest.fixture
def bob(demo) -> Consumer:
    consumer = Consumer.objects.create(name="bob")
    Follow.objects.create(consumer=consumer, name="default", producer=demo)
    return consumer


def tick(producer: str = "demo", last: int = T0, pairs=("BTC/USDT", "ETH/USDT")):
    updates = [counters.PairUpdate(p, last, 1500, time.time()) for p in pairs]
    counters.published(producer, updates, 1000, len(updates))


def producer_row(snapshot, name: str = "demo") -> dict:
    return next(p for p in snapshot["producers"] if p["name"] == name)


def consumer_row(snapshot, name: str = "bob") -> dict:
    return next(c for c in snapshot["consumers"] if c["name"] == name)


def pair_row(row: dict, pair: str) -> dict:
    return next(r for r in row["pairs"] if r["pair"] == pair)


def report(last_candle: int, *, connected: bool = True, error: str | None = None):
    stamp = datetime.fromtimestamp(last_candle / 1000, UTC).isoformat()
    document = {
        **REPORT,
        "producers": {"default": dict(REPORT["producers"]["default"])},
    }
    follow = document["producers"]["default"]
    follow.update(connected=connected, last_error=error)
    follow["pairs"] = {"BTC/USDT": {"last_candle": stamp, "rows": 1500}}
    return document


def test_it_says_a_producer_whose_worker_never_connected_is_offline(demo):
    row = producer_row(build_status_snapshot())
    assert row["state"] == "offline"
    assert row["reason"] == "no producer worker has connected since the hub started"
    assert [r["state"] for r in row["pairs"]] == ["waiting", "waiting"]
    assert pair_row(row, "BTC/USDT")["reason"] == "no candle received yet"


def test_it_shows_an_online_producer_with_its_pairs_fresh(demo):
    counters.producer_connected("demo", "pub-1", "10.0.0.5")
    tick(last=T0)
    snapshot = build_status_snapshot()
    row = producer_row(snapshot)
    assert (row["state"], row["reason"]) == ("online", "")
    assert row["worker"] == "10.0.0.5"
    assert (row["interval"], row["fast_clock"]) == (5.0, True)
    assert row["newest_candle"] == "2026-11-01T10:00:00Z"
    assert [r["state"] for r in row["pairs"]] == ["ok", "ok"]
    assert pair_row(row, "ETH/USDT")["rows"] == 1500
    assert snapshot["problems"] == []


def test_it_says_when_the_worker_left(demo):
    counters.producer_connected("demo", "pub-1", "10.0.0.5")
    tick()
    counters.producer_disconnected("demo", "pub-1")
    row = producer_row(build_status_snapshot(time.time() + 90))
    assert row["state"] == "offline"
    assert row["reason"] == "no producer worker connected; last publish 1 min 30 s ago"


def test_it_says_a_connected_worker_that_stopped_publishing_is_late(demo):
    counters.producer_connected("demo", "pub-1", "10.0.0.5")
    tick()
    # Two candle intervals of 5 s, but never sooner than 15 s.
    assert producer_row(build_status_snapshot(time.time() + 14))["state"] == "online"
    snapshot = build_status_snapshot(time.time() + 40)
    row = producer_row(snapshot)
    assert row["state"] == "late"
    assert row["reason"] == (
        "its worker is connected but published nothing for 40 s; a candle is due "
        "every 5 s"
    )
    assert pair_row(row, "BTC/USDT")["state"] == "stale"
    assert pair_row(row, "BTC/USDT")["reason"] == (
        "no new candle for 40 s; one is due every 5 s"
    )
    assert snapshot["problems"][0].startswith("Producer demo is late: its worker")


def test_it_judges_a_real_time_producer_by_its_timeframe(db):
    Producer.objects.create(name="slow", pairs=["BTC/USDT"], timeframe="1h")
    counters.producer_connected("slow", "pub-1", "10.0.0.5")
    tick("slow", pairs=["BTC/USDT"])
    row = producer_row(build_status_snapshot(time.time() + 3600), "slow")
    assert (row["interval"], row["fast_clock"]) == (3600.0, False)
    assert row["state"] == "online", "one hour without a candle is on time for 1h"
    assert producer_row(build_status_snapshot(time.time() + 7300), "slow")["state"] == (
        "late"
    )


def test_it_flags_a_pair_behind_the_producer_s_newest_candle(demo):
    counters.producer_connected("demo", "pub-1", "10.0.0.5")
    tick(last=T0, pairs=["ETH/USDT"])
    tick(last=T0 + 2 * STEP, pairs=["BTC/USDT"])
    row = producer_row(build_status_snapshot())
    assert pair_row(row, "BTC/USDT")["state"] == "ok"
    eth = pair_row(row, "ETH/USDT")
    assert eth["state"] == "stale"
    assert eth["reason"] == "2 candles behind the producer's newest (2026-11-01 10:10)"


def test_it_shows_a_disabled_producer_as_disabled_not_as_a_problem(demo):
    demo.enabled = False
    demo.save()
    snapshot = build_status_snapshot()
    assert producer_row(snapshot)["state"] == "disabled"
    assert snapshot["problems"] == []


def test_it_says_a_consumer_that_never_reported(bob):
    row = consumer_row(build_status_snapshot())
    assert row["state"] == "never"
    assert row["reason"] == "no status report yet: is its consumer worker running?"
    assert row["follows"][0]["state"] == "unknown"


def test_it_shows_a_reporting_consumer_online_and_its_follows(bob):
    counters.producer_connected("demo", "pub-1", "10.0.0.5")
    tick(last=T0)
    time.sleep(0.01)
    with time_machine.travel(time.time() + 2, tick=False):
        bob.record_status(report(T0))
    row = consumer_row(build_status_snapshot(time.time() + 3))
    assert (row["state"], row["reason"], row["problem"]) == ("online", "", False)
    follow = row["follows"][0]
    assert (follow["producer"], follow["connected"], follow["state"]) == (
        "demo",
        True,
        "ok",
    )
    assert follow["pairs"] == [
        {
            "pair": "BTC/USDT",
            "last_candle": "2026-11-01T10:00:00Z",
            "producer_candle": "2026-11-01T10:00:00Z",
            "lag": 0,
            "rows": 1500,
        }
    ]


def test_it_says_a_consumer_is_offline_after_thirty_seconds_without_a_report(bob):
    bob.record_status(report(T0))
    assert consumer_row(build_status_snapshot(time.time() + 25))["state"] == "online"
    row = consumer_row(build_status_snapshot(time.time() + 31))
    assert row["state"] == "offline"
    assert row["reason"] == "no status report for 31 s"
    assert row["problem"] is True
    follow = row["follows"][0]
    assert (follow["connected"], follow["state"], follow["reason"]) == (
        True,
        "unknown",
        "as of its last report",
    )


def test_it_says_a_consumer_is_offline_when_its_feed_sockets_closed(bob):
    token = bob.follows.get().feed_token
    counters.feed_connected(
        "demo", "feed-1", label=token.label, address="127.0.0.1", token_id=token.pk
    )
    bob.record_status(report(T0))
    assert consumer_row(build_status_snapshot())["state"] == "online"
    time.sleep(0.01)
    counters.feed_disconnected("demo", "feed-1")
    row = consumer_row(build_status_snapshot(time.time() + 2))
    assert row["state"] == "offline"
    assert row["reason"] == (
        "its feed connections closed 2 s ago; no status report since"
    )


def test_it_names_the_consumer_behind_a_feed_socket(bob):
    token = bob.follows.get().feed_token
    successor, _ = token.rotate()  # the worker may already use the rotated token
    other, _ = FeedToken.issue(bob.follows.get().producer, "a FreqTrade bot")
    counters.feed_connected(
        "demo",
        "feed-1",
        label=successor.label,
        address="10.0.0.7",
        token_id=successor.pk,
    )
    counters.feed_connected(
        "demo", "feed-2", label=other.label, address="10.0.0.8", token_id=other.pk
    )
    subscribers = producer_row(build_status_snapshot())["subscribers"]
    assert [(s["who"], s["consumer"], s["address"]) for s in subscribers] == [
        ("bob", "bob", "10.0.0.7"),
        ("a FreqTrade bot", None, "10.0.0.8"),
    ]


def test_it_measures_a_consumer_s_lag_against_the_producer_at_report_time(bob):
    counters.producer_connected("demo", "pub-1", "10.0.0.5")
    start = time.time()
    with time_machine.travel(start, tick=False):
        tick(last=T0)
    with time_machine.travel(start + 10, tick=False):
        tick(last=T0 + 2 * STEP)
    with time_machine.travel(start + 20, tick=False):
        bob.record_status(report(T0))  # two candles behind what the hub held
    with time_machine.travel(start + 25, tick=False):
        tick(last=T0 + 3 * STEP)  # after the report: not counted against bob
    row = consumer_row(build_status_snapshot(start + 26))
    follow = row["follows"][0]
    assert follow["pairs"][0]["lag"] == 2
    assert (follow["newest_candle"], follow["lag"]) == ("2026-11-01T10:00:00Z", 2)
    assert follow["pairs"][0]["producer_candle"] == "2026-11-01T10:10:00Z"
    assert (follow["state"], follow["reason"]) == (
        "lagging",
        "2 candles behind the producer on BTC/USDT",
    )
    assert (row["state"], row["problem"]) == ("online", True)
    assert row["reason"] == "default: 2 candles behind the producer on BTC/USDT"


def test_it_forgives_a_broadcast_in_flight_when_the_report_left(bob):
    counters.producer_connected("demo", "pub-1", "10.0.0.5")
    start = time.time()
    with time_machine.travel(start, tick=False):
        tick(last=T0)
    with time_machine.travel(start + 10, tick=False):
        tick(last=T0 + STEP)
    with time_machine.travel(start + 10.3, tick=False):
        bob.record_status(report(T0))  # sent before the new candle reached it
    follow = consumer_row(build_status_snapshot(start + 11))["follows"][0]
    assert follow["pairs"][0]["lag"] == 0
    assert follow["state"] == "ok"


def test_it_says_why_a_follow_is_disconnected(bob):
    bob.record_status(report(T0, connected=False, error="ConnectionRefusedError"))
    row = consumer_row(build_status_snapshot())
    follow = row["follows"][0]
    assert follow["state"] == "disconnected"
    assert follow["reason"] == "not connected (ConnectionRefusedError)"
    assert row["reason"] == "default: not connected (ConnectionRefusedError)"
    assert build_status_snapshot()["problems"][-1] == (
        "Consumer bob: default: not connected (ConnectionRefusedError)"
    )
