"""The status page, status.json, the chart data and /metrics: who may read them and
what they say."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from consumers.models import Consumer, Follow
from controlplane import metrics
from controlplane.lib import counters
from controlplane.lib.wire import publish
from producers.snapshots import get_store
from tests.feeds import analysed_frame, frame
from tests.statuskit import REPORT, forget_reports, fresh_counters, make_user

PAGE, JSON, CHART, METRICS = (
    "/status/",
    "/status.json",
    "/status/chart.json",
    "/metrics",
)


@pytest.fixture(autouse=True)
def _fresh():
    fresh_counters()
    forget_reports("bob")
    yield
    fresh_counters()
    forget_reports("bob")


@pytest.fixture
def staff(db) -> Client:
    client = Client()
    client.force_login(make_user("ada", staff=True))
    return client


@pytest.fixture
def charlie_user(db) -> Client:
    """Logged in, but not staff."""
    client = Client()
    client.force_login(make_user("charlie", staff=False))
    return client


def store(producer, pair: str = "BTC/USDT", rows: int = 50) -> None:
    published = frame(pair, analysed_frame(rows=rows), full=True)
    data, dates = publish.frame_rows(published)
    key = (producer.name, pair, "5m", "spot")
    la = datetime(2026, 11, 1, tzinfo=UTC)
    packed = publish.packed_rows(published)
    async_to_sync(get_store().replace)(
        key, published["columns"], data, packed, dates, la
    )


### The page


def test_it_sends_an_anonymous_visitor_to_the_login(client, producer):
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/status/"


def test_it_refuses_the_page_to_a_user_who_is_not_staff(charlie_user, producer):
    response = charlie_user.get(PAGE)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_it_renders_the_first_paint_on_the_server(staff, producer):
    counters.producer_connected("alpha", "pub-1", "10.0.0.5")
    counters.published(
        "alpha",
        [counters.PairUpdate("BTC/USDT", 1_793_527_200_000, 1500, 1_793_527_201.0)],
        2048,
        1,
    )
    response = staff.get(PAGE)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-key="alpha"' in page
    assert "2026-11-01 10:00" in page, "the pair's last candle, rendered"
    assert 'data-socket-path="/ws/status"' in page
    assert 'id="status-snapshot"' in page
    assert "lightweight-charts.standalone.production.js" in page


### status.json


def test_it_refuses_status_json_to_anonymous_and_says_how_to_get_in(client, db):
    response = client.get(JSON)
    assert response.status_code == 401
    assert "CANDLECAST_STATUS_TOKEN" in response.json()["error"]


def test_it_refuses_status_json_to_a_user_who_is_not_staff(charlie_user):
    response = charlie_user.get(JSON)
    assert response.status_code == 403
    assert response.json() == {"error": "charlie is not a staff user"}


def test_it_serves_status_json_to_staff(staff, producer):
    snapshot = staff.get(JSON).json()
    assert [p["name"] for p in snapshot["producers"]] == ["alpha"]
    assert snapshot["producers"][0]["state"] == "offline"
    assert snapshot["rules"]["consumer_offline_seconds"] == 30


def test_it_serves_status_json_to_the_status_token(client, producer, settings):
    settings.CANDLECAST_STATUS_TOKEN = "s3cret-status-token"
    ok = client.get(JSON, HTTP_AUTHORIZATION="Bearer s3cret-status-token")
    wrong = client.get(JSON, HTTP_AUTHORIZATION="Bearer guess")
    assert ok.status_code == 200
    assert wrong.status_code == 403


def test_it_takes_no_token_when_none_is_set(client, producer, settings):
    settings.CANDLECAST_STATUS_TOKEN = ""
    assert client.get(JSON, HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert client.get(JSON, HTTP_AUTHORIZATION="Bearer x").status_code == 403


### /metrics


def test_it_refuses_metrics_to_anonymous(client, db):
    assert client.get(METRICS).status_code == 401


def test_it_exposes_prometheus_metrics(staff, producer):
    counters.producer_connected("alpha", "pub-1", "10.0.0.5")
    counters.published(
        "alpha", [counters.PairUpdate("BTC/USDT", 0, 1500, 0.0)], 2048, 1
    )
    counters.feed_connected("alpha", "feed-1", label="bot", address="10.0.0.6")
    counters.handshake_refused("throttled")
    response = staff.get(METRICS)
    assert response.status_code == 200
    assert response["Content-Type"] == metrics.CONTENT_TYPE
    text = response.content.decode()
    assert 'candlecast_producer_state{producer="alpha",state="online"} 1' in text
    assert 'candlecast_producer_bytes_in_total{producer="alpha"} 2048' in text
    assert 'candlecast_producer_candles_total{producer="alpha"} 1' in text
    assert 'candlecast_feed_subscribers{producer="alpha"} 1' in text
    assert (
        'candlecast_pair_candle_age_seconds{producer="alpha",pair="BTC/USDT"}' in text
    )
    assert 'candlecast_pair_stale{producer="alpha",pair="ETH/USDT"} 1' in text
    assert 'candlecast_handshakes_refused_total{reason="throttled"} 1' in text
    assert "# TYPE candlecast_producer_dropped_total counter" in text


def test_it_escapes_label_values():
    assert (
        metrics.sample("x", 1, pair='a"b\\c\nd')
        == 'candlecast_x{pair="a\\"b\\\\c\\nd"} 1'
    )


### The chart's data


def test_it_refuses_chart_data_to_a_user_who_is_not_staff(
    client, charlie_user, producer
):
    assert (
        client.get(CHART, {"producer": "alpha", "pair": "BTC/USDT"}).status_code == 403
    )
    response = charlie_user.get(CHART, {"producer": "alpha", "pair": "BTC/USDT"})
    assert response.status_code == 403


def test_it_serves_the_newest_rows_of_a_pair_for_the_chart(staff, producer):
    store(producer, rows=400)
    response = staff.get(CHART, {"producer": "alpha", "pair": "BTC/USDT"})
    assert response.status_code == 200
    data = response.json()
    assert len(data["candles"]) == 300
    assert data["timeframe"] == "5m"
    assert "rsi" in data["oscillators"]
    assert all(m["kind"] == "enter_long" for m in data["markers"])


def test_it_says_when_the_hub_holds_no_candles_of_the_pair(staff, producer):
    response = staff.get(CHART, {"producer": "alpha", "pair": "ETH/USDT"})
    assert response.status_code == 404
    assert response.json() == {
        "error": "the hub holds no candles of ETH/USDT from alpha yet"
    }
    assert staff.get(CHART, {"producer": "nope", "pair": "x"}).status_code == 404


### Consumer reports wake the status page


def test_a_consumer_s_status_report_marks_the_status_changed(client, producer):
    consumer = Consumer.objects.create(name="bob")
    Follow.objects.create(consumer=consumer, producer=producer)
    key = consumer.issue_key()
    counters.counters.dirty = False
    response = client.post(
        "/api/v1/consumer/status",
        json.dumps(REPORT),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 204
    assert counters.counters.dirty is True
