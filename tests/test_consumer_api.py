"""The consumer API: config and freqtrade-config documents, the status report, and
who may read them (CONSUMER-API contract)."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.test import Client

from consumers.models import Consumer, Follow
from producers.models import FeedToken

CONFIG = "/api/v1/consumer/config"
FREQTRADE = "/api/v1/consumer/freqtrade-config"
STATUS = "/api/v1/consumer/status"
HOST = {"HTTP_HOST": "127.0.0.1:8000"}

REPORT = {
    "producers": {
        "default": {
            "connected": True,
            "reconnects": 2,
            "last_error": "timed out",
            "pairs": {
                "BTC/USDT": {"last_candle": "2026-01-01T00:05:00+00:00", "rows": 1500}
            },
        }
    },
    "started": "2026-01-01T00:00:00+00:00",
}


@pytest.fixture
def bob(producer) -> tuple[str, Consumer]:
    """A consumer following producer alpha; plaintext key and row."""
    consumer = Consumer.objects.create(name="bob")
    Follow.objects.create(consumer=consumer, producer=producer)
    return consumer.issue_key(), consumer


@pytest.fixture
def charlies_consumer(charlie) -> tuple[str, Consumer]:
    """An outsider with a valid consumer key of its own, following another producer."""
    consumer = Consumer.objects.create(name="charlie")
    Follow.objects.create(consumer=consumer, producer=charlie[1].producer)
    return consumer.issue_key(), consumer


def get(client: Client, url: str, key: str | None, **extra):
    if key is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client.get(url, **HOST, **extra)


def post_status(client: Client, key: str, body: bytes | str):
    return client.post(
        STATUS,
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
        **HOST,
    )


def feed_plaintext(consumer: Consumer) -> str:
    return consumer.follows.get(name="default").feed_token.plaintext_for_worker()


### config


def test_it_serves_the_config_document(client, bob):
    key, consumer = bob
    response = get(client, CONFIG, key)
    assert response.status_code == 200
    document = response.json()
    assert document == {
        "name": "bob",
        "settings": {
            "wait_timeout": 300,
            "ping_timeout": 10,
            "sleep_time": 10,
            "remove_entry_exit_signals": False,
            "initial_candle_limit": 1500,
            "message_size_limit": 8,
            "max_signal_age": None,
        },
        "producers": [
            {
                "name": "default",
                "kind": "candlecast",
                "host": "127.0.0.1",
                "port": 8000,
                "secure": False,
                "ws_token": feed_plaintext(consumer),
            }
        ],
        "version": document["version"],
    }
    assert (
        document["version"]
        == consumer.config_document("127.0.0.1", 8000, False)["version"]
    )


def test_it_gives_a_feed_token_the_feed_accepts(client, bob, producer):
    token = get(client, CONFIG, bob[0]).json()["producers"][0]["ws_token"]
    found, _ = FeedToken.objects.authenticate(token)
    assert found.producer == producer


def test_it_describes_the_hub_as_the_worker_reached_it(client, bob):
    response = client.get(
        CONFIG,
        HTTP_AUTHORIZATION=f"Bearer {bob[0]}",
        HTTP_HOST="localhost",
        secure=True,
    )
    entry = response.json()["producers"][0]
    assert (entry["host"], entry["port"], entry["secure"]) == ("localhost", 443, True)


def test_it_hands_out_an_external_bots_token_decrypted(client, bob):
    follow = Follow(consumer=bob[1], name="ft", host="10.0.0.5", port=8081)
    follow.set_ws_token("their-secret_token")
    follow.save()
    entry = get(client, CONFIG, bob[0]).json()["producers"][1]
    assert entry == {
        "name": "ft",
        "kind": "freqtrade",
        "host": "10.0.0.5",
        "port": 8081,
        "secure": False,
        "ws_token": "their-secret_token",
    }


def test_it_returns_the_successor_after_rotation(client, bob):
    key, consumer = bob
    before = get(client, CONFIG, key).json()
    _, successor = consumer.follows.get().feed_token.rotate()
    after = get(client, CONFIG, key).json()
    assert after["producers"][0]["ws_token"] == successor
    assert after["version"] != before["version"]


def test_it_says_what_to_do_when_the_feed_token_was_revoked(client, bob):
    bob[1].follows.get().feed_token.revoke()
    response = get(client, CONFIG, bob[0])
    assert response.status_code == 409
    assert "Rotate the feed tokens of followed producers" in response.json()["error"]


### who may read it


def test_it_asks_for_a_key(client, bob):
    response = get(client, CONFIG, None)
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["error"]


def test_it_refuses_a_wrong_key(client, bob):
    response = get(client, CONFIG, bob[0][:-4] + "abcd")
    assert response.status_code == 403
    assert response.json()["error"].startswith(f"unknown consumer key {bob[0][:12]}")


def test_it_says_a_key_cut_short_is_cut_short(client, bob):
    response = get(client, CONFIG, bob[0][:-1])
    assert response.status_code == 403
    assert response.json()["error"].startswith(
        "not a candlecast consumer key: it has 46 characters where ours have 47 "
        "(cut short or joined to something when copied?): the admin shows"
    )


def test_it_refuses_a_replaced_key(client, bob):
    old, consumer = bob
    consumer.issue_key()
    assert get(client, CONFIG, old).status_code == 403


def test_it_refuses_a_disabled_consumer(client, bob):
    Consumer.objects.filter(pk=bob[1].pk).update(enabled=False)
    response = get(client, FREQTRADE, bob[0])
    assert response.status_code == 403
    assert response.json() == {
        "error": "consumer bob is disabled: enable it in the admin"
    }


def test_it_refuses_a_producer_key(client, bob, producer_key):
    response = get(client, CONFIG, producer_key)
    assert response.status_code == 403
    assert "this is a producer key" in response.json()["error"]


def test_it_refuses_charlies_feed_token(client, bob, charlie):
    """The outsider's feed token opens its feed, never a consumer config."""
    response = get(client, CONFIG, charlie[0])
    assert response.status_code == 403
    assert "this is a feed token" in response.json()["error"]
    assert charlie[0] not in response.content.decode()


def test_it_gives_charlie_only_his_own_config(client, bob, charlies_consumer):
    document = get(client, CONFIG, charlies_consumer[0]).json()
    assert document["name"] == "charlie"
    assert feed_plaintext(bob[1]) not in json.dumps(document)


def test_it_throttles_an_address_that_keeps_failing(client, bob, settings):
    settings.CANDLECAST_AUTH_FAILURES_PER_WINDOW = 3
    for _ in range(3):
        assert get(client, CONFIG, "ccc_wrong-key-wrong-key-wrong").status_code == 403
    response = get(client, CONFIG, "ccc_wrong-key-wrong-key-wrong")
    assert response.status_code == 429
    assert "too many failed attempts" in response.json()["error"]
    assert get(client, CONFIG, bob[0]).status_code == 200, "a valid key still works"


def test_it_answers_only_get_on_config(client, bob):
    response = client.post(CONFIG, HTTP_AUTHORIZATION=f"Bearer {bob[0]}", **HOST)
    assert response.status_code == 405


### freqtrade-config


def test_it_serves_freqtrades_section(client, bob):
    key, consumer = bob
    response = get(client, FREQTRADE, key)
    assert response.status_code == 200
    assert response.json() == {
        "external_message_consumer": {
            "enabled": True,
            "producers": [
                {
                    "name": "default",
                    "host": "127.0.0.1",
                    "port": 8000,
                    "secure": False,
                    "ws_token": feed_plaintext(consumer),
                }
            ],
            "wait_timeout": 300,
            "ping_timeout": 10,
            "sleep_time": 10,
            "remove_entry_exit_signals": False,
            "initial_candle_limit": 1500,
            "message_size_limit": 8,
        }
    }


### status


def test_it_stores_the_status_report(client, bob):
    response = post_status(client, bob[0], json.dumps(REPORT))
    assert response.status_code == 204
    stored = cache.get("consumer-status:bob")
    assert stored["status"] == REPORT
    assert stored["received"]


def test_it_takes_status_posts_without_a_csrf_token(bob):
    client = Client(enforce_csrf_checks=True)
    assert post_status(client, bob[0], json.dumps(REPORT)).status_code == 204


def test_it_refuses_a_status_report_without_a_key(client, bob):
    response = client.post(STATUS, json.dumps(REPORT), content_type="application/json")
    assert response.status_code == 401
    assert cache.get("consumer-status:bob") is None


def test_it_refuses_a_status_report_from_charlie(client, bob, charlie):
    assert post_status(client, charlie[0], json.dumps(REPORT)).status_code == 403


def test_it_says_what_is_wrong_with_a_report_that_is_not_json(client, bob):
    response = post_status(client, bob[0], "{producers: ")
    assert response.status_code == 400
    assert response.json()["error"].startswith("the body is not JSON")
    assert cache.get("consumer-status:bob") is None


@pytest.mark.parametrize(
    "report, message",
    [
        ([], "the body must be a JSON object"),
        ({"producers": {}}, "'started' must be the worker's start time"),
        ({"producers": [], "started": "x"}, "'producers' must be an object"),
        (
            {"producers": {"default": {"connected": "yes"}}, "started": "x"},
            "producers.default.connected must be true or false",
        ),
        (
            {
                "producers": {"default": {"connected": True, "reconnects": -1}},
                "started": "x",
            },
            "producers.default.reconnects must be a whole number",
        ),
        (
            {
                "producers": {
                    "default": {
                        "connected": True,
                        "pairs": {"BTC/USDT": {"rows": "many"}},
                    }
                },
                "started": "x",
            },
            "producers.default.pairs.BTC/USDT must be an object",
        ),
    ],
)
def test_it_validates_the_status_report(client, bob, report, message):
    response = post_status(client, bob[0], json.dumps(report))
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


def test_it_refuses_a_status_report_over_256_kib(client, bob):
    report = dict(REPORT, padding="x" * (256 * 1024))
    response = post_status(client, bob[0], json.dumps(report))
    assert response.status_code == 413
    assert "over 262144 bytes" in response.json()["error"]
    assert cache.get("consumer-status:bob") is None


def test_it_takes_a_status_report_of_exactly_256_kib(client, bob):
    body = json.dumps(REPORT)
    body = body[:-1] + ', "padding": "' + "x" * (256 * 1024 - len(body) - 15) + '"}'
    assert len(body.encode()) == 256 * 1024
    assert post_status(client, bob[0], body).status_code == 204


def test_it_answers_only_post_on_status(client, bob):
    assert get(client, STATUS, bob[0]).status_code == 405
