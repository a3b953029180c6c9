"""The producer and feed-token admin, driven through Django's test client as a
logged-in superuser: pairs typed one per line, keys and tokens shown once, actions,
and outsiders sent to the login page."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.utils import timezone

from producers.models import FeedToken, Producer, ProducerKey

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


def history(obj):
    """The admin's history entries of one object, oldest first."""
    kind = ContentType.objects.get_for_model(obj)
    return LogEntry.objects.filter(content_type=kind, object_id=str(obj.pk)).order_by(
        "pk"
    )


def history_url(obj) -> str:
    meta = obj._meta
    return f"/admin/{meta.app_label}/{meta.model_name}/{obj.pk}/history/"


def rotate(client, url: str, name: str, rows, grace: str, **extra):
    """The rotate action's second step: the grace period submitted."""
    data = {
        "action": name,
        "_selected_action": [row.pk for row in rows],
        "apply": "Rotate",
        "grace": grace,
    }
    return client.post(url, data, **extra)


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
    response = action(
        admin_client, PRODUCERS, "issue_producer_key", producer, follow=True
    )
    assert response.status_code == 200
    assert "only time it is shown" in page(response)
    key = PRODUCER_KEY.search(page(response)).group()
    assert Producer.for_key(key) == producer
    producer.refresh_from_db()
    later = page(admin_client.get(change_url(PRODUCERS, producer.pk)))
    listing = page(admin_client.get(PRODUCERS))
    assert key not in later and key not in listing
    assert producer.key_prefix in later
    assert f"{producer.key_prefix}… (active)" in listing


def test_it_replaces_the_old_producer_key(admin_client, producer, producer_key):
    response = action(
        admin_client, PRODUCERS, "issue_producer_key", producer, follow=True
    )
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
    response = admin_client.post(ADD_TOKEN, token_form(producer), follow=True)
    assert response.status_code == 200
    assert "only time it is shown" in page(response)
    assert "Give it to the consumer of producer alpha." in page(response)
    assert "no-store" in response["Cache-Control"]  # never from a browser's cache
    assert f'href="{TOKENS}">Back to the list' in page(response)
    plaintext = FEED_TOKEN.search(page(response)).group()
    token = FeedToken.objects.get(label="bot two")
    assert FeedToken.objects.authenticate(plaintext) == (token, "")
    assert token.producer == producer
    assert token.ciphertext == ""


def test_a_reload_of_the_shown_once_page_issues_nothing_and_shows_nothing(
    admin_client, producer
):
    response = admin_client.post(ADD_TOKEN, token_form(producer))
    assert response.status_code == 302  # the POST is never the page a reload repeats
    first = admin_client.get(response.url)
    plaintext = FEED_TOKEN.search(page(first)).group()
    again = admin_client.get(response.url)
    assert again.status_code == 410 and "shown once already" in page(again)
    assert plaintext not in page(again)
    assert FeedToken.objects.filter(label="bot two").count() == 1
    # Nor does the session keep it once shown, even sealed.
    assert admin_client.session.get("candlecast.shown_once") == {}


def test_another_admin_cannot_open_the_page(admin_client, producer, client):
    response = admin_client.post(ADD_TOKEN, token_form(producer))
    other = client.get(response.url)
    assert other.status_code == 302 and "/admin/login/" in other.url


def test_it_gives_a_bot_the_ready_to_paste_freqtrade_entry(admin_client, producer):
    response = admin_client.post(
        ADD_TOKEN, token_form(producer), HTTP_HOST="localhost:8123", follow=True
    )
    plaintext = FEED_TOKEN.search(page(response)).group()
    [entry] = re.findall(
        r'<pre class="freqtrade-entry">(.*?)</pre>', page(response), re.S
    )
    assert json.loads(html.unescape(entry)) == {
        "name": "default",
        "host": "localhost",
        "port": 8123,
        "secure": False,
        "ws_token": plaintext,
    }
    assert 'class="copy"' in page(response)


def test_it_gives_no_freqtrade_entry_for_a_worker_token(admin_client, producer):
    response = admin_client.post(
        ADD_TOKEN, token_form(producer, for_worker="on"), follow=True
    )
    assert "freqtrade-entry" not in page(response)
    assert "the config API hands it to our consumer workers" in page(response)


def test_it_never_shows_a_feed_token_again(admin_client, producer):
    response = admin_client.post(
        ADD_TOKEN, token_form(producer, for_worker="on"), follow=True
    )
    plaintext = FEED_TOKEN.search(page(response)).group()
    token = FeedToken.objects.get(label="bot two")
    listing = page(admin_client.get(TOKENS))
    change = page(admin_client.get(change_url(TOKENS, token.pk)))
    for html_page in (listing, change):
        assert plaintext not in html_page
        assert token.prefix in html_page
    assert token.ciphertext not in change


def test_it_keeps_a_token_for_a_worker_encrypted(admin_client, producer):
    response = admin_client.post(
        ADD_TOKEN, token_form(producer, for_worker="on"), follow=True
    )
    plaintext = FEED_TOKEN.search(page(response)).group()
    assert FeedToken.objects.get(label="bot two").plaintext_for_worker() == plaintext


def test_it_names_an_added_token_by_its_prefix_in_the_admin_history(
    admin_client, producer, admin_user
):
    admin_client.post(ADD_TOKEN, token_form(producer))
    token = FeedToken.objects.get(label="bot two")
    entry = history(token).get()
    assert (entry.object_repr, entry.user, entry.action_flag) == (
        str(token),
        admin_user,
        ADDITION,
    )
    message = f"Issued feed token {token.prefix}… (bot two) for producer alpha"
    assert entry.get_change_message() == message
    assert history(producer).get().get_change_message() == message
    for obj in (token, producer):
        assert message in page(admin_client.get(history_url(obj)))


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


def test_it_shows_token_states_in_the_list(admin_client, feed_token, charlie, producer):
    feed_token[1].rotate()
    charlie[1].revoke()
    FeedToken.issue(producer, expires_at=timezone.now() - timedelta(seconds=1))
    listing = page(admin_client.get(TOKENS))
    for state in ("in grace", "revoked", "active", "expired"):
        assert f'<td class="field-state_display">{state}</td>' in listing


### rotation and revocation of feed tokens


def test_it_asks_for_the_grace_period_before_rotating(
    admin_client, feed_token, settings
):
    settings.CANDLECAST_TOKEN_GRACE_SECONDS = 5400
    _, token = feed_token
    response = action(admin_client, TOKENS, "rotate", token)
    form = page(response)
    assert 'name="grace"' in form and 'value="01:30:00"' in form
    assert 'name="csrfmiddlewaretoken"' in form
    assert f'name="_selected_action" value="{token.pk}"' in form
    token.refresh_from_db()
    assert token.successor is None  # nothing is rotated before the grace is given


def test_it_rotates_with_the_grace_given_and_shows_the_successor_once(
    admin_client, feed_token, admin_user
):
    old_plaintext, token = feed_token
    before = timezone.now()
    response = rotate(admin_client, TOKENS, "rotate", [token], "00:10:00", follow=True)
    assert "only time it is shown" in page(response)
    new_plaintext = FEED_TOKEN.search(page(response)).group()
    token.refresh_from_db()
    successor = token.successor
    assert FeedToken.objects.authenticate(new_plaintext) == (successor, "")
    assert FeedToken.objects.authenticate(old_plaintext) == (token, "")  # in grace
    grace = (token.expires_at - before).total_seconds()
    assert 600 <= grace < 605
    assert f"successor of {token.prefix}…" in page(response)
    assert "freqtrade-entry" in page(response)  # a bot's token: paste it again
    entry = history(token).last()
    assert entry.action_flag == CHANGE and entry.user == admin_user
    assert entry.get_change_message().startswith(
        f"Rotated feed token {token.prefix}…: successor {successor.prefix}…; "
        f"{token.prefix}… stays valid until "
    )
    assert (
        history(successor)
        .get()
        .get_change_message()
        .startswith(f"Issued feed token {successor.prefix}…")
    )
    listing = page(admin_client.get(TOKENS))
    assert new_plaintext not in listing and "in grace" in listing


def test_it_refuses_a_negative_grace_period(admin_client, feed_token):
    _, token = feed_token
    response = rotate(admin_client, TOKENS, "rotate", [token], "-00:00:05")
    assert "A grace period cannot be negative." in page(response)
    token.refresh_from_db()
    assert token.successor is None


def test_it_says_why_it_does_not_rotate_a_revoked_token(admin_client, feed_token):
    _, token = feed_token
    token.revoke()
    response = rotate(admin_client, TOKENS, "rotate", [token], "60", follow=True)
    assert f"Not rotated: feed token {token.prefix}… is revoked: issue a new" in (
        page(response)
    )
    assert FeedToken.objects.count() == 1


def test_it_records_a_revocation_in_the_history(admin_client, feed_token, admin_user):
    _, token = feed_token
    action(admin_client, TOKENS, "revoke", token)
    entry = history(token).get()
    assert (entry.user, entry.get_change_message()) == (
        admin_user,
        f"Revoked feed token {token.prefix}…",
    )
    assert f"Revoked feed token {token.prefix}…" in page(
        admin_client.get(history_url(token.producer))
    )


def test_it_records_an_expiry_edited_on_the_change_page(admin_client, feed_token):
    _, token = feed_token
    form = token_form(
        token.producer, expires_at_0="2030-01-02", expires_at_1="03:04:05"
    )
    admin_client.post(change_url(TOKENS, token.pk), form)
    token.refresh_from_db()
    assert token.expires_at.isoformat() == "2030-01-02T03:04:05+00:00"
    messages = [e.get_change_message() for e in history(token)]
    assert (
        f"Set the expiry of feed token {token.prefix}… to 2030-01-02 03:04:05 UTC"
        in (messages)
    )


def test_it_shows_when_and_from_where_a_token_was_last_used(admin_client, feed_token):
    _, token = feed_token
    token.record_use("203.0.113.7")
    assert "from 203.0.113.7" in page(admin_client.get(TOKENS))


def test_it_keeps_every_plaintext_off_later_pages(admin_client, producer):
    """After the page that shows it, no page of the admin shows a secret again."""
    first = admin_client.post(
        ADD_TOKEN, token_form(producer, for_worker="on"), follow=True
    )
    token = FeedToken.objects.get()
    rotated = rotate(admin_client, TOKENS, "rotate", [token], "60", follow=True)
    keyed = action(admin_client, PRODUCERS, "issue_producer_key", producer, follow=True)
    secrets = [
        *FEED_TOKEN.findall(page(first) + page(rotated)),
        PRODUCER_KEY.search(page(keyed)).group(),
    ]
    token.refresh_from_db()
    key = ProducerKey.objects.get()
    urls = [TOKENS, PRODUCERS, "/admin/producers/producerkey/", "/admin/"]
    urls += [change_url(TOKENS, t.pk) for t in FeedToken.objects.all()]
    urls += [change_url(PRODUCERS, producer.pk), history_url(token), history_url(key)]
    for url in urls:
        html_page = page(admin_client.get(url))
        assert not [s for s in secrets if s in html_page], url
        assert token.ciphertext not in html_page


### producer keys


def test_it_rotates_a_producer_key_with_a_grace_period(
    admin_client, producer, producer_key
):
    response = rotate(
        admin_client, PRODUCERS, "rotate_producer_key", [producer], "300", follow=True
    )
    new_key = PRODUCER_KEY.search(page(response)).group()
    assert Producer.for_key(new_key) == producer
    assert Producer.for_key(producer_key) == producer  # until the grace ends
    old = ProducerKey.objects.get(prefix=producer_key[:12])
    assert old.state() == ProducerKey.State.GRACE
    later = page(admin_client.get(change_url(PRODUCERS, producer.pk)))
    assert old.prefix in later and new_key[:12] in later and "in grace" in later
    assert new_key not in later


def test_it_revokes_a_producer_key_in_its_list(admin_client, producer, producer_key):
    key = ProducerKey.objects.get()
    response = action(
        admin_client, "/admin/producers/producerkey/", "revoke", key, follow=True
    )
    assert "1 producer key(s) revoked" in page(response)
    assert "the publish connection using it is closed at once" in page(response)
    assert Producer.for_key(producer_key) is None
    assert "none issued" in page(admin_client.get(PRODUCERS))


def test_it_issues_a_producer_key_on_its_add_page(admin_client, producer):
    response = admin_client.post(
        "/admin/producers/producerkey/add/",
        {
            "producer": producer.pk,
            "label": "vps",
            "expires_at_0": "",
            "expires_at_1": "",
        },
        follow=True,
    )
    key = PRODUCER_KEY.search(page(response)).group()
    assert Producer.for_key(key) == producer
    assert ProducerKey.objects.get().label == "vps"


### CSRF


def test_it_refuses_an_action_without_the_csrf_token(admin_user, feed_token):
    plaintext, token = feed_token
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = action(client, TOKENS, "revoke", token)
    assert response.status_code == 403
    response = rotate(client, TOKENS, "rotate", [token], "60")
    assert response.status_code == 403
    assert FeedToken.objects.authenticate(plaintext) == (token, "")
    assert token.successor is None and FeedToken.objects.count() == 1


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
