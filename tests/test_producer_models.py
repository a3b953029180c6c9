"""Producers and feed tokens: what is stored for a secret, how a presented token is
resolved (and why it is refused), states, rotation with a grace period, validators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from producers import tokens
from producers.models import (
    FeedToken,
    Producer,
    validate_pairs,
    validate_strategy_path,
    validate_timeframe,
)

pytestmark = pytest.mark.django_db

NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def change_last_char(text: str) -> str:
    return text[:-1] + ("A" if text[-1] != "A" else "B")


def stored_values(row) -> list[str]:
    """Every column of the row as stored, read back from the database."""
    fresh = type(row).objects.get(pk=row.pk)
    return [str(getattr(fresh, f.attname)) for f in fresh._meta.concrete_fields]


def messages(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return " ".join(exc.value.messages)


### issuing


def test_it_stores_no_plaintext_of_a_feed_token(feed_token):
    plaintext, token = feed_token
    secret_part = plaintext[tokens.PREFIX_LENGTH :]
    values = stored_values(token)
    assert not [v for v in values if plaintext in v or secret_part in v]
    assert token.prefix == plaintext[: tokens.PREFIX_LENGTH]
    assert token.ciphertext == ""


def test_it_keeps_a_token_for_a_worker_encrypted(producer):
    token, plaintext = FeedToken.issue(producer, "worker", for_worker=True)
    values = stored_values(token)
    assert not [v for v in values if plaintext[tokens.PREFIX_LENGTH :] in v]
    token.refresh_from_db()
    assert tokens.decrypt(token.ciphertext, tokens.fernet_key()) == plaintext
    assert token.plaintext_for_worker() == plaintext


def test_it_cannot_give_back_a_token_not_issued_for_a_worker(feed_token):
    _, token = feed_token
    with pytest.raises(ValueError, match=f"feed token {token.prefix} was not issued"):
        token.plaintext_for_worker()


def test_it_names_a_token_by_prefix_and_label(feed_token):
    _, token = feed_token
    assert str(token) == f"{token.prefix}… (bot one)"


### authenticate


def test_it_authenticates_a_valid_token_with_its_producer(feed_token, producer):
    plaintext, token = feed_token
    found, reason = FeedToken.objects.authenticate(plaintext)
    assert (found, reason) == (token, "")
    assert found.producer == producer


def test_it_refuses_a_wrong_secret_with_the_right_prefix(feed_token):
    plaintext, token = feed_token
    found, reason = FeedToken.objects.authenticate(change_last_char(plaintext))
    assert found is None
    assert reason == f"unknown token {token.prefix}"


def test_it_refuses_a_well_formed_token_that_was_never_issued(db):
    minted = tokens.mint(tokens.FEED_TOKEN)
    assert FeedToken.objects.authenticate(minted.plaintext) == (
        None,
        f"unknown token {minted.prefix}",
    )


def test_it_refuses_a_revoked_token(feed_token):
    plaintext, token = feed_token
    token.revoke()
    assert FeedToken.objects.authenticate(plaintext) == (
        None,
        f"token {token.prefix} is revoked",
    )


def test_it_refuses_an_expired_token(producer):
    token, plaintext = FeedToken.issue(
        producer, expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert FeedToken.objects.authenticate(plaintext) == (
        None,
        f"token {token.prefix} is expired",
    )


def test_it_judges_expiry_at_the_time_given(producer):
    token, plaintext = FeedToken.issue(producer, expires_at=NOON)
    before, after = NOON - timedelta(seconds=1), NOON
    assert FeedToken.objects.authenticate(plaintext, now=before) == (token, "")
    assert FeedToken.objects.authenticate(plaintext, now=after)[0] is None


def test_it_refuses_a_token_of_a_disabled_producer(feed_token, producer):
    plaintext, _ = feed_token
    producer.enabled = False
    producer.save()
    assert FeedToken.objects.authenticate(plaintext) == (
        None,
        "producer alpha is disabled",
    )


def test_it_refuses_a_producer_key_as_a_feed_token(producer_key):
    assert FeedToken.objects.authenticate(producer_key) == (
        None,
        "not a candlecast feed token: it does not start with ccf_",
    )


@pytest.mark.parametrize(
    "presented, problem",
    [
        ("", "it does not start with ccf_"),
        (tokens.mint(tokens.CONSUMER_KEY).plaintext, "it does not start with ccf_"),
        (
            "ccf_short",
            "it has 9 characters where ours have 47 (cut short or joined to "
            "something when copied?)",
        ),
        (
            "ccf_" + "a" * 42 + "=",
            "it holds characters other than A-Z, a-z, 0-9, - and _",
        ),
    ],
)
def test_it_refuses_strings_that_are_not_feed_tokens(db, presented, problem):
    assert FeedToken.objects.authenticate(presented) == (
        None,
        f"not a candlecast feed token: {problem}",
    )


def test_it_resolves_charlies_token_to_charlies_producer(feed_token, charlie):
    plaintext, token = charlie
    found, _ = FeedToken.objects.authenticate(plaintext)
    assert found == token
    assert found.producer.name == "charlie"


### state and rotation


def test_it_reports_a_new_token_as_active(feed_token):
    _, token = feed_token
    assert token.state() == FeedToken.State.ACTIVE
    assert token.is_valid()


def test_it_reports_a_rotated_token_in_grace(feed_token):
    _, token = feed_token
    token.rotate()
    assert token.state() == FeedToken.State.GRACE
    assert token.is_valid()


def test_it_reports_a_rotated_token_expired_after_the_grace_period(producer, settings):
    settings.CANDLECAST_TOKEN_GRACE_SECONDS = 3600
    with time_machine.travel(NOON, tick=False) as traveller:
        token, _ = FeedToken.issue(producer)
        token.rotate()
        traveller.shift(HOUR + timedelta(seconds=1))
        assert token.state() == FeedToken.State.EXPIRED
        assert not token.is_valid()


def test_it_reports_a_revoked_token_as_revoked_even_when_expired(producer):
    token, _ = FeedToken.issue(producer, expires_at=timezone.now() - HOUR)
    token.revoke()
    assert token.state() == FeedToken.State.REVOKED


def test_it_keeps_the_first_revocation_time(feed_token):
    _, token = feed_token
    with time_machine.travel(NOON, tick=False) as traveller:
        token.revoke()
        traveller.shift(HOUR)
        token.revoke()
    token.refresh_from_db()
    assert token.revoked_at == NOON


def test_it_links_a_successor_and_sets_the_grace_period(feed_token, settings):
    settings.CANDLECAST_TOKEN_GRACE_SECONDS = 600
    _, token = feed_token
    with time_machine.travel(NOON, tick=False):
        successor, plaintext = token.rotate()
    token.refresh_from_db()
    assert token.successor == successor
    assert token.expires_at == NOON + timedelta(seconds=600)
    assert (successor.producer, successor.label) == (token.producer, "bot one")
    assert successor.expires_at is None
    assert FeedToken.objects.authenticate(plaintext) == (successor, "")


def test_it_keeps_the_predecessor_valid_within_the_grace_period(feed_token):
    old_plaintext, token = feed_token
    with time_machine.travel(NOON, tick=False) as traveller:
        successor, new_plaintext = token.rotate(grace=HOUR)
        traveller.shift(HOUR - timedelta(seconds=1))
        assert FeedToken.objects.authenticate(old_plaintext) == (token, "")
        traveller.shift(timedelta(seconds=1))
        assert FeedToken.objects.authenticate(old_plaintext) == (
            None,
            f"token {token.prefix} is expired",
        )
        assert FeedToken.objects.authenticate(new_plaintext) == (successor, "")


def test_it_does_not_extend_an_earlier_expiry_when_rotating(producer):
    with time_machine.travel(NOON, tick=False):
        token, _ = FeedToken.issue(producer, expires_at=NOON + timedelta(minutes=10))
        token.rotate(grace=HOUR)
    token.refresh_from_db()
    assert token.expires_at == NOON + timedelta(minutes=10)


def test_it_keeps_a_workers_successor_encrypted(producer):
    token, _ = FeedToken.issue(producer, "worker", for_worker=True)
    successor, plaintext = token.rotate()
    successor.refresh_from_db()
    assert successor.ciphertext
    assert successor.plaintext_for_worker() == plaintext


def test_it_keeps_a_bots_successor_digest_only(feed_token):
    _, token = feed_token
    successor, _ = token.rotate()
    successor.refresh_from_db()
    assert successor.ciphertext == ""


def test_it_records_the_last_use(feed_token):
    _, token = feed_token
    with time_machine.travel(NOON, tick=False):
        token.record_use("203.0.113.7" + "x" * 100)
    token.refresh_from_db()
    assert token.last_used_at == NOON
    assert token.last_used_address == ("203.0.113.7" + "x" * 100)[:64]


### producer keys


def test_it_stores_only_the_prefix_and_digest_of_a_producer_key(producer):
    key = producer.issue_key()
    assert key.startswith("ccp_")
    values = stored_values(producer)
    assert not [v for v in values if key[tokens.PREFIX_LENGTH :] in v]
    producer.refresh_from_db()
    assert producer.key_prefix == key[: tokens.PREFIX_LENGTH]
    assert len(producer.key_digest) == 64


def test_it_finds_the_producer_of_a_key(producer, producer_key):
    assert Producer.for_key(producer_key) == producer


def test_it_finds_no_producer_for_a_changed_or_foreign_key(
    producer_key, feed_token, charlie
):
    charlies_key = charlie[1].producer.issue_key()
    assert Producer.for_key(change_last_char(producer_key)) is None
    assert Producer.for_key(feed_token[0]) is None
    assert Producer.for_key("") is None
    assert Producer.for_key(charlies_key).name == "charlie"


def test_it_replaces_the_old_key_when_issuing_a_new_one(producer, producer_key):
    new_key = producer.issue_key()
    assert Producer.for_key(producer_key) is None
    assert Producer.for_key(new_key) == producer


def test_it_lists_the_stream_keys_of_a_producer(producer):
    assert producer.stream_keys() == [
        ("BTC/USDT", "5m", "spot"),
        ("ETH/USDT", "5m", "spot"),
    ]


### validators


@pytest.mark.parametrize("pairs", [["BTC/USDT"], ["BTC/USDT:USDT", "ETH/BTC"], []])
def test_it_accepts_spot_and_futures_pairs(pairs):
    validate_pairs(pairs)


def test_it_names_the_pairs_it_cannot_read():
    with pytest.raises(ValidationError) as raised:
        validate_pairs(["BTC/USDT", "BTCUSDT", "ETH USDT"])
    assert messages(raised).startswith("Not a pair: BTCUSDT, ETH USDT. Write pairs as")
    assert "BASE/QUOTE:SETTLE (futures)" in messages(raised)


@pytest.mark.parametrize("value", ["BTC/USDT", [1, 2], {"BTC/USDT": 1}])
def test_it_wants_pairs_as_a_list_of_names(value):
    with pytest.raises(ValidationError) as raised:
        validate_pairs(value)
    assert messages(raised) == "Pairs must be a list of pair names like BTC/USDT."


def test_it_refuses_duplicate_pairs():
    with pytest.raises(ValidationError) as raised:
        validate_pairs(["BTC/USDT", "ETH/USDT", "BTC/USDT"])
    assert messages(raised) == "Each pair may appear only once."


@pytest.mark.parametrize("value", ["1m", "5m", "4h", "1d", "1w", "1M"])
def test_it_accepts_freqtrade_timeframes(value):
    validate_timeframe(value)


@pytest.mark.parametrize("value", ["5", "5min", "0m", "m5", ""])
def test_it_explains_a_bad_timeframe(value):
    with pytest.raises(ValidationError) as raised:
        validate_timeframe(value)
    assert messages(raised) == (
        f"{value!r} is not a timeframe: use a number and a unit, "
        "like 1m, 5m, 1h, 4h, 1d, 1w or 1M"
    )


def test_it_accepts_a_dotted_strategy_path():
    validate_strategy_path("producers.strategies.sample.SampleStrategy")


@pytest.mark.parametrize(
    "value", ["SampleStrategy", "producers/strategies/sample.py", "1x.Y", "a.b."]
)
def test_it_explains_a_bad_strategy_path(value):
    with pytest.raises(ValidationError) as raised:
        validate_strategy_path(value)
    assert "Give the strategy as a dotted path to its class" in messages(raised)


@pytest.mark.parametrize(
    "value",
    ["producers..sample.SampleStrategy", "producers.1sample.SampleStrategy"],
)
def test_it_refuses_a_strategy_path_python_cannot_import(value):
    with pytest.raises(ValidationError):
        validate_strategy_path(value)


def test_it_reports_each_bad_field_of_a_producer(db):
    producer = Producer(name="beta", pairs=["BTC-USDT"], timeframe="5x", strategy="X")
    with pytest.raises(ValidationError) as raised:
        producer.full_clean()
    assert set(raised.value.message_dict) == {"pairs", "timeframe", "strategy"}
