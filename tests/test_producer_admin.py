"""The producer and feed-token admin, driven through Django's test client as a
logged-in superuser: pairs typed one per line, keys and tokens shown once, actions,
and outsiders sent to the login page."""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User

from producers.models import FeedToken, Producer

PRODUCERS = "/admin/producers/producer/"
ADD_PRODUCER = "/admin/producers/producer/add/"
TOKENS = "/admin/producers/feedtoken/"
ADD_TOKEN = "/admin/producers/feedtoken/add/"
PRODUCER_KEY = re.compile(r"ccp_[A-Za-z0-9_-]{40,}")
FEED_TOKEN = re.compile(r"ccf_[A-Za-z0-9_-]{40,}")


def producer_form(name: str = "beta", pairs: str = "BTC/USDT", **fields) -> dict:
    """What the producer add/change page posts."""
    return {
        "name": name,
        "enabled": "on",
        "timeframe": "5m",
        "candle_type": "spot",
        "pairs": pairs,
        "strategy": "producers.strategies.sample.SampleStrategy",
        "source": "synthetic",
        "source_options": "{}",
        "history": 1500,
        **fields,
    }


def token_form(producer: Producer, label: str = "bot two", **fields) -> dict:
    """What the feed token add page posts (expires_at is a split date/time)."""
    return {
        "producer": producer.pk,
        "label": label,
        "expires_at_0": "",
        "expires_at_1": "",
        **fields,
    }


def change_url(base: str, pk: int) -> str:
    return f"{base}{pk}/change/"


def action(client, url: str, name: str, *rows, **extra):
    data = {"action": name, "_selected_action": [row.pk for row in rows]}
    return client.post(url, data, **extra)


def page(response) -> str:
    return response.content.decode()


### producers


def test_it_stores_pairs_typed_one_per_line_as_a_list(admin_client):
    response = admin_client.post(
        ADD_PRODUCER, producer_form(pairs="BTC/USDT\r\n ETH/USDT:USDT \r\n\r\n")
    )
    assert response.status_code == 302
    assert Producer.objects.get(name="beta").pairs == ["BTC/USDT", "ETH/USDT:USDT"]


def test_it_also_reads_comma_separated_pairs(admin_client):
    admin_client.post(ADD_PRODUCER, producer_form(pairs="BTC/USDT, ETH/USDT"))
    assert Producer.objects.get(name="beta").pairs == ["BTC/USDT", "ETH/USDT"]


def test_it_shows_the_pairs_one_per_line_on_the_change_page(admin_client, producer):
    html = page(admin_client.get(change_url(PRODUCERS, producer.pk)))
    assert re.search(r"<textarea[^>]*name=\"pairs\"[^>]*>\s*BTC/USDT\nETH/USDT<", html)


def test_it_explains_a_pair_it_cannot_read(admin_client):
    response = admin_client.post(ADD_PRODUCER, producer_form(pairs="BTC/USDT\nBTCUSDT"))
    assert response.status_code == 200
    assert "Not a pair: BTCUSDT. Write pairs as BASE/QUOTE (spot)" in page(response)
    assert not Producer.objects.filter(name="beta").exists()


def test_it_explains_a_bad_timeframe(admin_client):
    response = admin_client.post(ADD_PRODUCER, producer_form(timeframe="5min"))
    assert "is not a timeframe: use a number and a unit" in page(response)
    assert not Producer.objects.filter(name="beta").exists()


def test_it_shows_a_new_producer_key_once(admin_client, producer):
    response = action(admin_client, PRODUCERS, "issue_producer_key", producer)
    assert response.status_code == 200
    assert "only time it is shown" in page(response)
    key = PRODUCER_KEY.search(page(response)).group()
    assert Producer.for_key(key) == producer
    producer.refresh_from_db()
    later = page(admin_client.get(change_url(PRODUCERS, producer.pk)))
    listing = page(admin_client.get(PRODUCERS))
    assert key not in later and key not in listing
    assert producer.key_prefix in later
    assert f"{producer.key_prefix}…" in listing


def test_it_replaces_the_old_producer_key(admin_client, producer, producer_key):
    response = action(admin_client, PRODUCERS, "issue_producer_key", producer)
    new_key = PRODUCER_KEY.search(page(response)).group()
    assert Producer.for_key(producer_key) is None
    assert new_key != producer_key


def test_it_lists_a_producer_without_a_key(admin_client, producer):
    assert "none issued" in page(admin_client.get(PRODUCERS))


def test_it_disables_and_enables_producers(admin_client, producer):
    response = action(admin_client, PRODUCERS, "disable", producer, follow=True)
    assert "1 producer(s) disabled" in page(response)
    assert not Producer.objects.get().enabled
    response = action(admin_client, PRODUCERS, "enable", producer, follow=True)
    assert "1 producer(s) enabled" in page(response)
    assert Producer.objects.get().enabled


### feed tokens


def test_it_shows_a_new_feed_token_once(admin_client, producer):
    response = admin_client.post(ADD_TOKEN, token_form(producer))
    assert response.status_code == 200
    assert "only time it is shown" in page(response)
    assert "Give it to the consumer of producer alpha." in page(response)
    plaintext = FEED_TOKEN.search(page(response)).group()
    token = FeedToken.objects.get(label="bot two")
    assert FeedToken.objects.authenticate(plaintext) == (token, "")
    assert token.producer == producer
    assert token.ciphertext == ""


def test_it_never_shows_a_feed_token_again(admin_client, producer):
    response = admin_client.post(ADD_TOKEN, token_form(producer, for_worker="on"))
    plaintext = FEED_TOKEN.search(page(response)).group()
    token = FeedToken.objects.get(label="bot two")
    listing = page(admin_client.get(TOKENS))
    change = page(admin_client.get(change_url(TOKENS, token.pk)))
    for html in (listing, change):
        assert plaintext not in html
        assert token.prefix in html
    assert token.ciphertext not in change


def test_it_keeps_a_token_for_a_worker_encrypted(admin_client, producer):
    response = admin_client.post(ADD_TOKEN, token_form(producer, for_worker="on"))
    plaintext = FEED_TOKEN.search(page(response)).group()
    assert FeedToken.objects.get(label="bot two").plaintext_for_worker() == plaintext


def test_it_names_an_added_token_by_its_prefix_in_the_admin_log(admin_client, producer):
    admin_client.post(ADD_TOKEN, token_form(producer))
    token = FeedToken.objects.get(label="bot two")
    assert LogEntry.objects.get().object_repr == str(token)


def test_it_stores_the_expiry_given_on_the_add_page(admin_client, producer):
    admin_client.post(
        ADD_TOKEN,
        token_form(producer, expires_at_0="2030-01-02", expires_at_1="03:04:05"),
    )
    expires_at = FeedToken.objects.get(label="bot two").expires_at
    assert expires_at.isoformat() == "2030-01-02T03:04:05+00:00"


def test_it_edits_only_label_and_expiry_of_an_issued_token(
    admin_client, feed_token, charlie
):
    plaintext, token = feed_token
    form = token_form(charlie[1].producer, label="renamed")
    response = admin_client.post(change_url(TOKENS, token.pk), form)
    assert response.status_code == 302
    token.refresh_from_db()
    assert (token.label, token.producer.name) == ("renamed", "alpha")
    assert FeedToken.objects.authenticate(plaintext) == (token, "")


def test_it_revokes_tokens_with_the_action(admin_client, feed_token, charlie):
    plaintext, token = feed_token
    response = action(admin_client, TOKENS, "revoke", token, follow=True)
    assert "1 token(s) revoked" in page(response)
    token.refresh_from_db()
    assert token.state() == FeedToken.State.REVOKED
    assert FeedToken.objects.authenticate(plaintext)[1].endswith("is revoked")
    assert FeedToken.objects.authenticate(charlie[0])[0] == charlie[1]


def test_it_keeps_the_first_revocation_time(admin_client, feed_token):
    _, token = feed_token
    token.revoke()
    first = FeedToken.objects.get().revoked_at
    response = action(admin_client, TOKENS, "revoke", token, follow=True)
    assert "0 token(s) revoked" in page(response)
    assert FeedToken.objects.get().revoked_at == first


def test_it_shows_token_states_in_the_list(admin_client, feed_token, charlie):
    feed_token[1].rotate()
    charlie[1].revoke()
    html = page(admin_client.get(TOKENS))
    assert "in grace" in html and "revoked" in html and "active" in html


### outsiders


@pytest.fixture
def charlie_user(db) -> User:
    """A logged-in user who is not staff."""
    return User.objects.create_user("charlie", password="not-staff-1234")


@pytest.mark.parametrize("url", [PRODUCERS, ADD_PRODUCER, TOKENS, ADD_TOKEN])
def test_it_sends_anonymous_visitors_to_the_login_page(client, db, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


@pytest.mark.parametrize("url", [PRODUCERS, TOKENS])
def test_it_sends_a_user_who_is_not_staff_to_the_login_page(client, charlie_user, url):
    client.force_login(charlie_user)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


def test_it_issues_nothing_for_an_outsider(
    client, charlie_user, producer, producer_key
):
    client.force_login(charlie_user)
    response = action(client, PRODUCERS, "issue_producer_key", producer)
    assert response.status_code == 302
    assert not PRODUCER_KEY.search(page(response))
    assert Producer.for_key(producer_key) == producer
    response = client.post(ADD_TOKEN, token_form(producer))
    assert response.status_code == 302
    assert not FeedToken.objects.exists()
