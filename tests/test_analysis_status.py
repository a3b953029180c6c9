"""A producer worker's report on its analysis processes: the status route takes
it, the producer's status row and /metrics show each process, its pairs and time."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.test import Client

from controlplane import metrics
from controlplane.overview import build_status_snapshot
from producers.models import Producer
from tests.statuskit import fresh_counters, make_user

HOST = {"HTTP_HOST": "127.0.0.1:8000"}


def report(**changes) -> dict:
    body = {
        "workers": 2,
        "candle_seconds": 0.84,
        "processes": [
            {
                "index": 0,
                "pid": 4101,
                "pairs": ["BTC/USDT"],
                "seconds": 0.8,
                "restarts": 0,
                "state": "running",
            },
            {
                "index": 1,
                "pid": None,
                "pairs": ["ETH/USDT"],
                "seconds": 0.75,
                "restarts": 1,
                "state": "dead",
            },
        ],
    }
    return body | changes


@pytest.fixture(autouse=True)
def _fresh(producer):
    fresh_counters()
    cache.delete(producer.analysis_status_key)
    yield
    cache.delete(producer.analysis_status_key)
    fresh_counters()


def post(client, producer: Producer, key: str, body: dict):
    return client.post(
        f"/api/v1/producers/{producer.name}/status",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
        **HOST,
    )


def row_of(name: str = "alpha") -> dict:
    return next(p for p in build_status_snapshot()["producers"] if p["name"] == name)


def test_it_records_the_worker_s_report(client, producer):
    response = post(client, producer, producer.issue_key(), report())
    assert response.status_code == 204
    assert producer.last_analysis_status()["status"] == report()


def test_it_refuses_a_report_with_another_producer_s_key(client, producer):
    charlie = Producer.objects.create(name="charlie", pairs=["XRP/USDT"])
    response = post(client, producer, charlie.issue_key(), report())
    assert response.status_code == 403
    assert producer.last_analysis_status() is None


def test_it_says_what_is_wrong_with_a_report(client, producer):
    bad = report()
    bad["processes"][0]["seconds"] = -1
    response = post(client, producer, producer.issue_key(), bad)
    assert response.status_code == 400
    assert (
        "processes[0].seconds must be seconds (>= 0) or null"
        in (response.json()["error"])
    )
    assert producer.last_analysis_status() is None


def test_it_shows_each_process_its_pairs_and_time_on_the_producer_s_row(producer):
    producer.record_analysis_status(report())
    analysis = row_of()["analysis"]
    assert analysis["workers"] == 2
    assert [p["pairs"] for p in analysis["processes"]] == [["BTC/USDT"], ["ETH/USDT"]]
    assert analysis["words"] == (
        "analysed on 2 processes, the last candle in 0.84 s: "
        "#0 (pid 4101, 1 pair) 0.80 s; "
        "#1 (DEAD, replaced next candle, 1 pair, restarted 1x) 0.75 s"
    )


def test_it_says_a_worker_analyses_in_its_own_process(producer):
    one = report(workers=1, processes=report()["processes"][:1])
    producer.record_analysis_status(one)
    assert row_of()["analysis"]["words"] == (
        "analysed in the worker's process, the last candle in 0.84 s"
    )


def test_it_shows_no_analysis_before_the_worker_reported(producer):
    assert row_of()["analysis"] is None


def test_it_exposes_each_process_in_metrics(producer):
    producer.record_analysis_status(report())
    text = metrics.render(build_status_snapshot())
    assert 'candlecast_producer_analysis_processes{producer="alpha"} 2' in text
    assert 'candlecast_producer_candle_analysis_seconds{producer="alpha"} 0.840' in (
        text
    )
    assert (
        'candlecast_producer_analysis_process_seconds{producer="alpha",process="1"} '
        "0.750" in text
    )
    assert (
        'candlecast_producer_analysis_process_pairs{producer="alpha",process="0"} 1'
        in text
    )
    assert (
        "candlecast_producer_analysis_process_restarts_total"
        '{producer="alpha",process="1"} 1' in text
    )


def test_it_shows_the_processes_on_the_status_page_s_first_paint(producer):
    staff = Client()
    staff.force_login(make_user("ada", staff=True))
    producer.record_analysis_status(report())
    page = staff.get("/status/").content.decode()
    assert 'data-field="analysis.words">analysed on 2 processes' in page
