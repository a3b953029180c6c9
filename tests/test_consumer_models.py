"""Consumer and Follow models: validation, the consumer key, feed tokens of follows,
and the two documents the config API serves."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db.models import ProtectedError
from django.utils import timezone

from consumers.models import ConfigError, Consumer, Follow
from producers.models import FeedToken, Producer

HUB = ("127.0.0.1", 8000, False)


@pytest.fixture
def consumer(db) -> Consumer:
    return Consumer.objects.create(name="bob")


@pytest.fixture
def follow(consumer, producer) -> Follow:
    return Follow.objects.create(consumer=consumer, producer=producer)


def make_external(consumer: Consumer, name: str = "outside", **fields) -> Follow:
    follow = Follow(consumer=consumer, name=name, host="bot.example.org", **fields)
    follow.set_ws_token("their-ws-token_1")
    follow.full_clean()
    follow.save()
    return follow


def messages_of(exc: pytest.ExceptionInfo) -> list[str]:
    return exc.value.messages


### Validation


def test_it_accepts_the_defaults(consumer):
    consumer.full_clean()
    assert consumer.settings().document() == {
        "wait_timeout": 300,
        "ping_timeout": 10,
        "sleep_time": 10,
        "remove_entry_exit_signals": False,
        "initial_candle_limit": 1500,
        "message_size_limit": 8,
        "max_signal_age": None,
    }


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "initial_candle_limit",
            1501,
            "initial_candle_limit must be from 0 to 1500 candles (FreqTrade's range)",
        ),
        (
            "message_size_limit",
            0,
            "message_size_limit must be from 1 to 20 MiB (FreqTrade's range)",
        ),
        (
            "message_size_limit",
            21,
            "message_size_limit must be from 1 to 20 MiB (FreqTrade's range)",
        ),
        (
            "max_signal_age",
            0,
            "max_signal_age must be more than 0 seconds; leave it empty to turn it off",
        ),
        ("wait_timeout", 0, "wait_timeout must be at least 1 second"),
        ("ping_timeout", 0, "ping_timeout must be at least 1 second"),
        ("sleep_time", 0, "sleep_time must be at least 1 second"),
    ],
)
def test_it_rejects_settings_out_of_range(consumer, field, value, message):
    setattr(consumer, field, value)
    with pytest.raises(ValidationError) as exc:
        consumer.full_clean()
    assert exc.value.message_dict == {field: [message]}


def test_it_accepts_the_ends_of_freqtrades_ranges(consumer):
    consumer.initial_candle_limit, consumer.message_size_limit = 0, 20
    consumer.max_signal_age = 1
    consumer.full_clean()


def test_it_requires_one_kind_of_follow(consumer, producer):
    neither = Follow(consumer=consumer)
    with pytest.raises(ValidationError) as exc:
        neither.full_clean()
    assert "Choose a producer to follow, or give the host and ws_token" in str(
        exc.value
    )
    both = Follow(consumer=consumer, producer=producer, host="bot.example.org")
    with pytest.raises(ValidationError) as exc:
        both.full_clean()
    assert "not both" in str(exc.value)


def test_it_requires_host_and_token_for_an_external_bot(consumer):
    no_token = Follow(consumer=consumer, host="bot.example.org")
    with pytest.raises(ValidationError) as exc:
        no_token.full_clean()
    assert "needs its ws_token" in str(exc.value)
    no_host = Follow(consumer=consumer)
    no_host.set_ws_token("abc")
    with pytest.raises(ValidationError) as exc:
        no_host.full_clean()
    assert exc.value.message_dict == {
        "host": ["An external FreqTrade bot needs its host."]
    }


@pytest.mark.parametrize("host", ["ws://bot:8080", "bot/api", "::1", "a b"])
def test_it_rejects_a_host_that_is_not_just_a_host(consumer, host):
    follow = Follow(consumer=consumer, host=host)
    follow.set_ws_token("abc")
    with pytest.raises(ValidationError) as exc:
        follow.full_clean()
    assert "host name or address only" in exc.value.message_dict["host"][0]


def test_it_accepts_a_bracketed_ipv6_host(consumer):
    make_external(consumer).full_clean()
    follow = Follow(consumer=consumer, name="six", host="[2001:db8::1]")
    follow.set_ws_token("abc")
    follow.full_clean()


def test_it_rejects_a_ws_token_freqtrade_cannot_put_in_a_url(consumer):
    follow = Follow(consumer=consumer, host="bot.example.org")
    with pytest.raises(ValidationError, match="URL-safe ws_token"):
        follow.set_ws_token("abc&x=1+/")


def test_it_rejects_two_follows_with_one_name(follow, consumer):
    twin = Follow(consumer=consumer, name="default", host="bot.example.org")
    twin.set_ws_token("abc")
    with pytest.raises(ValidationError) as exc:
        twin.full_clean()
    assert "already follows a producer by that name" in str(exc.value)


def test_it_protects_a_followed_producer_from_deletion(follow, producer):
    with pytest.raises(ProtectedError):
        producer.delete()


### Consumer key


def test_it_gives_the_key_out_once_and_keeps_only_a_digest(consumer):
    plaintext = consumer.issue_key()
    consumer.refresh_from_db()
    assert plaintext.startswith("ccc_")
    assert consumer.key_prefix == plaintext[:12]
    assert plaintext not in (consumer.key_digest, consumer.key_prefix)
    assert Consumer.for_key(plaintext) == consumer


def test_it_refuses_a_replaced_or_wrong_key(consumer, producer_key, feed_token):
    old = consumer.issue_key()
    new = consumer.issue_key()
    assert Consumer.for_key(old) is None
    assert Consumer.for_key(new) == consumer
    assert Consumer.for_key(new[:-2] + "xx") is None
    assert Consumer.for_key(producer_key) is None
    assert Consumer.for_key(feed_token[0]) is None
    assert Consumer.for_key("") is None


### Feed tokens of follows


def test_it_issues_a_worker_feed_token_for_a_follow_of_ours(follow, producer):
    token = follow.feed_token
    assert token.producer == producer
    assert token.label == "consumer bob (default)"
    plaintext = token.plaintext_for_worker()
    assert FeedToken.objects.authenticate(plaintext)[0] == token


def test_it_keeps_the_token_when_the_follow_is_saved_again(follow):
    token = follow.feed_token
    follow.position = 3
    follow.save()
    assert follow.feed_token == token
    assert FeedToken.objects.count() == 1


def test_it_reissues_the_token_when_the_producer_changes(follow, charlie):
    old = follow.feed_token
    follow.producer = charlie[1].producer
    follow.save()
    old.refresh_from_db()
    assert follow.feed_token.producer.name == "charlie"
    assert old.state() == FeedToken.State.REVOKED


def test_it_revokes_the_token_when_the_follow_becomes_external(follow):
    old = follow.feed_token
    follow.producer, follow.host = None, "bot.example.org"
    follow.set_ws_token("abc")
    follow.full_clean()
    follow.save()
    old.refresh_from_db()
    assert follow.feed_token is None
    assert old.revoked_at is not None


def test_it_revokes_the_tokens_when_the_consumer_is_deleted(follow, consumer):
    token = follow.feed_token
    successor, _ = token.rotate()
    consumer.delete()
    assert FeedToken.objects.get(pk=token.pk).revoked_at is not None
    assert FeedToken.objects.get(pk=successor.pk).revoked_at is not None


def test_it_stores_an_external_ws_token_encrypted(consumer):
    follow = make_external(consumer)
    follow.refresh_from_db()
    assert "their-ws-token_1" not in follow.ws_token_encrypted
    assert follow.ws_token() == "their-ws-token_1"


def test_it_says_what_to_do_when_a_ws_token_cannot_be_decrypted(consumer, settings):
    make_external(consumer)
    settings.CANDLECAST_ENCRYPTION_KEY = "A" * 43 + "="
    with pytest.raises(ConfigError, match="enter that bot's ws_token again"):
        consumer.config_document(*HUB)


### Documents


def test_it_builds_the_config_document(follow, consumer):
    make_external(consumer, position=1, port=8081, secure=True)
    document = consumer.config_document(*HUB)
    assert list(document) == ["name", "settings", "producers", "version"]
    assert document["name"] == "bob"
    assert document["producers"] == [
        {
            "name": "default",
            "kind": "candlecast",
            "host": "127.0.0.1",
            "port": 8000,
            "secure": False,
            "ws_token": follow.feed_token.plaintext_for_worker(),
        },
        {
            "name": "outside",
            "kind": "freqtrade",
            "host": "bot.example.org",
            "port": 8081,
            "secure": True,
            "ws_token": "their-ws-token_1",
        },
    ]
    assert len(document["version"]) == 64


def test_it_changes_the_version_only_when_the_config_changes(follow, consumer):
    first = consumer.config_document(*HUB)["version"]
    assert consumer.config_document(*HUB)["version"] == first
    consumer.wait_timeout = 60
    assert consumer.config_document(*HUB)["version"] != first


def test_it_hands_out_the_successor_after_rotation(follow, consumer):
    successor, plaintext = follow.feed_token.rotate()
    assert consumer.config_document(*HUB)["producers"][0]["ws_token"] == plaintext
    later = timezone.now() + timedelta(days=2)  # the predecessor's grace is over
    with time_machine.travel(later):
        document = consumer.config_document(*HUB)
    assert document["producers"][0]["ws_token"] == plaintext


def test_it_skips_a_revoked_successor(follow, consumer):
    original = follow.feed_token.plaintext_for_worker()
    successor, _ = follow.feed_token.rotate()
    successor.revoke()
    assert consumer.config_document(*HUB)["producers"][0]["ws_token"] == original


def test_it_says_what_to_do_when_no_token_is_valid(follow, consumer):
    follow.feed_token.revoke()
    with pytest.raises(ConfigError, match="Rotate the feed tokens of followed"):
        consumer.config_document(*HUB)
    assert consumer.renew_feed_tokens() == 1
    token = consumer.config_document(*HUB)["producers"][0]["ws_token"]
    assert FeedToken.objects.authenticate(token)[0] is not None


def test_it_leaves_out_follows_of_disabled_producers(follow, consumer, producer):
    Producer.objects.filter(pk=producer.pk).update(enabled=False)
    assert consumer.config_document(*HUB)["producers"] == []
    entries = consumer.freqtrade_config(*HUB)["external_message_consumer"]
    assert [p["name"] for p in entries["producers"]] == ["default"]


def test_it_builds_freqtrades_section(follow, consumer):
    consumer.max_signal_age = 600
    section = consumer.freqtrade_config("hub.example.org", 443, True)
    assert section == {
        "external_message_consumer": {
            "enabled": True,
            "producers": [
                {
                    "name": "default",
                    "host": "hub.example.org",
                    "port": 443,
                    "secure": True,
                    "ws_token": follow.feed_token.plaintext_for_worker(),
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


def test_it_orders_follows_by_position(consumer, producer):
    Follow.objects.create(
        consumer=consumer, name="second", producer=producer, position=2
    )
    make_external(consumer, name="first", position=1)
    names = [p["name"] for p in consumer.config_document(*HUB)["producers"]]
    assert names == ["first", "second"]


def test_it_keeps_the_last_status_report(consumer):
    assert consumer.last_status() is None
    consumer.record_status({"producers": {}, "started": "2026-01-01T00:00:00+00:00"})
    stored = consumer.last_status()
    assert stored["status"]["started"] == "2026-01-01T00:00:00+00:00"
    assert stored["received"].startswith(str(timezone.now().year))
