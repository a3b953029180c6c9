"""The hub <-> worker documents: what the hub builds from its models is what the
worker parses back, through the HTTP API, and a malformed document names its field."""

from __future__ import annotations

import json

import pytest

from consumers import worker as consumer_worker
from consumers.models import Consumer, Follow
from controlplane.lib import contracts
from controlplane.lib.contracts import (
    ConsumerConfig,
    ConsumerSettings,
    ContractError,
    ProducerDefinition,
    Upstream,
)
from producers.models import Producer

HOST = {"HTTP_HOST": "127.0.0.1:8443", "secure": True}


@pytest.fixture
def bob(db, producer) -> tuple[Consumer, str]:
    consumer = Consumer.objects.create(
        name="bob",
        wait_timeout=120,
        ping_timeout=7,
        sleep_time=3,
        remove_entry_exit_signals=True,
        initial_candle_limit=600,
        message_size_limit=16,
        max_signal_age=900,
    )
    Follow.objects.create(consumer=consumer, producer=producer, name="default")
    outside = Follow(consumer=consumer, name="outside", host="bot.example.org")
    outside.set_ws_token("their-ws-token_1")
    outside.save()
    return consumer, consumer.issue_key()


### Consumer config: model -> document -> worker settings


def test_the_worker_reads_the_settings_the_admin_saved(client, bob):
    consumer, key = bob
    response = client.get(
        contracts.CONSUMER_CONFIG, HTTP_AUTHORIZATION=f"Bearer {key}", **HOST
    )
    assert response.status_code == 200
    parsed = consumer_worker.parse_config(response.json(), "bob")
    assert parsed.settings == ConsumerSettings(
        wait_timeout=120,
        ping_timeout=7,
        sleep_time=3,
        remove_entry_exit_signals=True,
        initial_candle_limit=600,
        message_size_limit=16,
        max_signal_age=900,
    )
    assert list(parsed.follows) == ["default", "outside"]
    ours, theirs = parsed.follows.values()
    assert (ours.kind, ours.host, ours.port, ours.secure) == (
        "candlecast",
        "127.0.0.1",
        8443,
        True,
    )
    assert ours.ws_token.startswith("ccf_")
    assert (theirs.kind, theirs.host, theirs.ws_token) == (
        "freqtrade",
        "bot.example.org",
        "their-ws-token_1",
    )
    assert parsed.version == response.json()["version"]


def test_the_document_round_trips_through_the_contract(bob):
    consumer, _ = bob
    built = consumer.contract("hub.example.org", 443, True)
    document = built.document()
    parsed = ConsumerConfig.from_document(json.loads(json.dumps(document)))
    assert (parsed.name, parsed.settings, parsed.follows) == (
        built.name,
        built.settings,
        built.follows,
    )
    # Settings that are whole numbers stay whole numbers: the version is stable.
    assert parsed.document()["version"] == document["version"]


def test_a_settings_change_changes_the_version(bob):
    consumer, _ = bob
    before = consumer.config_document("hub.example.org", 443, True)["version"]
    consumer.sleep_time = 4
    after = consumer.config_document("hub.example.org", 443, True)["version"]
    assert before != after


def test_freqtrades_section_has_no_kind_and_no_setting_of_ours(bob):
    consumer, _ = bob
    section = consumer.freqtrade_config("hub.example.org", 443, True)
    emc = section["external_message_consumer"]
    assert "max_signal_age" not in emc
    assert all("kind" not in p for p in emc["producers"])
    assert emc["wait_timeout"] == 120 and emc["enabled"] is True


@pytest.mark.parametrize(
    "change, named",
    [
        ({"settings": None}, "settings must be a JSON object"),
        ({"settings": {"wait_timeout": "300"}}, "settings.wait_timeout"),
        ({"producers": {}}, "producers must be a list"),
        ({"producers": [{"kind": "grpc"}]}, "producers[0].kind is 'grpc'"),
        ({"name": 7}, "the config.name must be a string (7)"),
    ],
)
def test_a_malformed_config_names_its_field(bob, change, named):
    consumer, _ = bob
    document = {**consumer.config_document("127.0.0.1", 8000, False), **change}
    with pytest.raises(ContractError) as exc:
        ConsumerConfig.from_document(document)
    assert named in str(exc.value)


def test_a_port_that_is_not_a_number_is_refused(bob):
    consumer, _ = bob
    document = consumer.config_document("127.0.0.1", 8000, False)
    document["producers"][0]["port"] = "8000"
    with pytest.raises(ContractError, match=r"producers\[0\]\.port must be a whole"):
        ConsumerConfig.from_document(document)


### Producer definition: model -> document -> worker


def test_the_worker_reads_the_definition_the_admin_saved(client, producer_key):
    response = client.get(
        contracts.PRODUCER_CONFIG.format(name="alpha"),
        HTTP_AUTHORIZATION=f"Bearer {producer_key}",
        HTTP_HOST="127.0.0.1:8000",
    )
    assert response.status_code == 200
    definition = ProducerDefinition.from_document(response.json())
    assert definition == Producer.objects.get(name="alpha").definition()
    assert not definition.relays and definition.upstream is None
    assert "upstream" not in response.json()


def test_a_relays_definition_carries_the_bots_token(db):
    producer = Producer(
        name="relayed",
        source=Producer.Source.FREQTRADE,
        upstream_host="bot.example.org",
        upstream_port=8080,
    )
    producer.set_upstream_token("bots-token_1")
    producer.save()
    document = json.loads(json.dumps(producer.definition().document()))
    definition = ProducerDefinition.from_document(document)
    assert definition.relays
    assert definition.upstream == Upstream(
        "bot.example.org", 8080, False, "bots-token_1"
    )
    follow = definition.upstream.follow("relayed")
    assert follow.url() == (
        "ws://bot.example.org:8080/api/v1/message/ws?token=bots-token_1"
    )
    assert "bots-token_1" not in repr(definition)


@pytest.mark.parametrize(
    "change, named",
    [
        ({"pairs": "BTC/USDT"}, "pairs must be a list"),
        ({"history": -1}, "history must be a whole number from 0 (-1)"),
        ({"source_options": []}, "source_options must be an object"),
        (
            {"upstream": {"host": "x", "port": 1, "secure": 0, "ws_token": "t"}},
            "upstream.secure must be true or false (0)",
        ),
    ],
)
def test_a_malformed_definition_names_its_field(producer, change, named):
    document = {**producer.definition().document(), **change}
    with pytest.raises(ContractError) as exc:
        ProducerDefinition.from_document(document)
    assert named in str(exc.value)


### Status reports


def test_a_consumer_status_keeps_the_signals_and_checks_the_rest():
    report = {
        "started": "2026-12-07T07:00:00+00:00",
        "producers": {
            "default": {
                "connected": True,
                "reconnects": 0,
                "last_error": None,
                "pairs": {"BTC/USDT": {"last_candle": None, "rows": 3}},
            }
        },
        "signals": {"BTC/USDT": {"fired": []}},
    }
    assert contracts.parse_consumer_status(json.dumps(report).encode()) == report
    report["producers"]["default"]["pairs"]["BTC/USDT"]["rows"] = -3
    with pytest.raises(ContractError, match=r"producers\.default\.pairs\.BTC/USDT"):
        contracts.parse_consumer_status(json.dumps(report).encode())


def test_an_upstream_status_keeps_only_the_contracts_fields():
    report = {
        "url": "ws://bot:8080/api/v1/message/ws",
        "connected": False,
        "since": None,
        "reconnects": 2,
        "last_error": "refused",
        "refused": True,
        "mismatch": None,
        "whitelist": ["BTC/USDT"],
        "pairs_held": 0,
        "newest_candle": None,
        "extra": "dropped",
    }
    parsed = contracts.parse_upstream_status(json.dumps(report).encode())
    assert "extra" not in parsed and parsed["reconnects"] == 2
    with pytest.raises(ContractError, match="'reconnects' must be a count"):
        contracts.parse_upstream_status(
            json.dumps({**report, "reconnects": -1}).encode()
        )


### Routes


def test_the_routes_are_the_ones_django_serves():
    from django.urls import resolve

    assert resolve(contracts.CONSUMER_CONFIG).url_name == "config"
    assert resolve(contracts.CONSUMER_STATUS).url_name == "status"
    assert resolve(contracts.PRODUCER_CONFIG.format(name="a-1")).kwargs == {
        "name": "a-1"
    }
    assert contracts.url("http://hub:8000/", contracts.PRODUCER_STATUS, name="a b") == (
        "http://hub:8000/api/v1/producers/a%20b/status"
    )
