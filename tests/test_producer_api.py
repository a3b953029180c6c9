"""The producer config API: a producer worker reads its definition with its producer
key, and nobody else reads it."""

from __future__ import annotations

import logging
import time

import pytest
from django.test import Client

from controlplane.lib import contracts, counterdocs, counters
from producers.models import Producer

HOST = {"HTTP_HOST": "127.0.0.1:8000"}


def config_url(name: str = "alpha") -> str:
    return f"/api/v1/producers/{name}/config"


def get(client: Client, key: str | None, name: str = "alpha", **extra):
    if key is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client.get(config_url(name), **HOST, **extra)


def change_last_char(text: str) -> str:
    return text[:-1] + ("A" if text[-1] != "A" else "B")


@pytest.fixture
def charlies_key(charlie) -> str:
    """The outsider's own, valid producer key."""
    return charlie[1].producer.issue_key()


def test_it_returns_the_definition_for_the_producers_key(client, producer_key):
    response = get(client, producer_key)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "name": "alpha",
        "timeframe": "5m",
        "candle_type": "spot",
        "pairs": ["BTC/USDT", "ETH/USDT"],
        "strategy": "producers.strategies.sample.SampleStrategy",
        "source": "synthetic",
        "source_options": {"seed": 7},
        "history": 1500,
    }


def test_it_says_where_the_published_history_ends(client, producer_key):
    """A restarted worker continues its source clock from there (issue 15)."""
    updates = [
        counterdocs.PairUpdate("BTC/USDT", 1_800_000_000_000, 300, 1.0),
        counterdocs.PairUpdate("ETH/USDT", 1_799_999_700_000, 300, 1.0),
    ]
    stored = time.time()
    counters.published("alpha", updates, 100, 2)
    try:
        resume = get(client, producer_key).json()["resume"]
    finally:
        counters.reset()
    assert resume["candle"] == 1_800_000_000_000
    assert resume["at"] >= stored
    definition = contracts.ProducerDefinition.from_document(
        get(client, producer_key).json() | {"resume": resume}
    )
    assert definition.resume == contracts.Resume(**resume)


def test_it_returns_admin_edits_on_the_next_fetch(client, producer, producer_key):
    producer.pairs = ["SOL/USDT"]
    producer.timeframe = "1h"
    producer.save()
    body = get(client, producer_key).json()
    assert (body["pairs"], body["timeframe"]) == (["SOL/USDT"], "1h")


@pytest.mark.parametrize("authorization", [None, "", "Basic dXNlcjpwYXNz", "Bearer "])
def test_it_says_what_to_send_without_a_bearer_key(client, producer_key, authorization):
    extra = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    response = client.get(config_url(), **HOST, **extra)
    assert response.status_code == 401
    assert response.json() == {
        "error": "send the producer key as 'Authorization: Bearer <key>'"
    }


def test_it_accepts_the_bearer_scheme_in_any_case(client, producer_key):
    response = client.get(
        config_url(), HTTP_AUTHORIZATION=f"bearer {producer_key}", **HOST
    )
    assert response.status_code == 200


def test_it_refuses_a_wrong_key(client, producer_key):
    response = get(client, change_last_char(producer_key))
    assert response.status_code == 403
    assert response.json() == {"error": "this key is not producer alpha's key"}


def test_it_refuses_charlies_key_for_alphas_definition(
    client, producer_key, charlies_key
):
    response = get(client, charlies_key)
    assert response.status_code == 403
    assert response.json() == {"error": "this key is not producer alpha's key"}
    assert get(client, charlies_key, name="charlie").json()["name"] == "charlie"


def test_it_refuses_a_feed_token_presented_as_a_key(client, producer_key, feed_token):
    response = get(client, feed_token[0])
    assert response.status_code == 403
    assert response.json() == {"error": "this key is not producer alpha's key"}


def test_it_refuses_a_key_after_a_new_one_was_issued(client, producer, producer_key):
    producer.issue_key()
    assert get(client, producer_key).status_code == 403


def test_it_does_not_tell_whether_an_unknown_producer_exists(client, producer_key):
    response = get(client, producer_key, name="zeta")
    assert response.status_code == 403
    assert response.json() == {"error": "this key is not producer zeta's key"}


def test_it_refuses_a_disabled_producer_and_says_so(client, producer, producer_key):
    Producer.objects.filter(pk=producer.pk).update(enabled=False)
    response = get(client, producer_key)
    assert response.status_code == 403
    assert response.json() == {
        "error": "producer alpha is disabled: enable it in the admin"
    }


def test_it_logs_a_refusal_without_the_key(client, producer_key, caplog):
    wrong = change_last_char(producer_key)
    with caplog.at_level(logging.WARNING, logger="producers.views"):
        get(client, wrong, REMOTE_ADDR="203.0.113.9")
    [record] = [r for r in caplog.records if r.name == "producers.views"]
    assert record.getMessage() == (
        "producer config: refused a key for alpha from 203.0.113.9"
    )
    assert wrong not in caplog.text


def test_it_allows_only_get(client, producer_key):
    response = client.post(
        config_url(), {}, HTTP_AUTHORIZATION=f"Bearer {producer_key}", **HOST
    )
    assert response.status_code == 405
    assert response["Allow"] == "GET"
