"""The consumer admin, driven through Django's test client as a logged-in superuser:
creating consumers and follows, keys shown once, write-only ws_tokens, actions."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from consumers.models import Consumer, ConsumerKey, Follow
from producers.models import FeedToken

ADD = "/admin/consumers/consumer/add/"
CHANGELIST = "/admin/consumers/consumer/"
KEYS = "/admin/consumers/consumerkey/"
CONFIG = "/api/v1/consumer/config"
KEY = re.compile(r"ccc_[A-Za-z0-9_-]{40,}")


def form_data(name: str = "bob", follows: list[dict] | None = None, **fields) -> dict:
    """What the add/change page posts: the consumer's fields and the follow inline."""
    data = {
        "name": name,
        "enabled": "on",
        "wait_timeout": 300,
        "ping_timeout": 10,
        "sleep_time": 10,
        "initial_candle_limit": 1500,
        "message_size_limit": 8,
        "max_signal_age": "",
        **fields,
    }
    follows = follows or []
    data.update(
        {
            "follows-TOTAL_FORMS": len(follows),
            "follows-INITIAL_FORMS": 0,
            "follows-MIN_NUM_FORMS": 0,
            "follows-MAX_NUM_FORMS": 1000,
        }
    )
    for i, follow in enumerate(follows):
        row = {
            "name": "default",
            "position": 0,
            "port": 8080,
            "producer": "",
            "host": "",
            "ws_token": "",
            **follow,
        }
        data.update({f"follows-{i}-{k}": v for k, v in row.items()})
    return data


def change_url(consumer: Consumer) -> str:
    return f"/admin/consumers/consumer/{consumer.pk}/change/"


@pytest.fixture
def bob(producer) -> Consumer:
    consumer = Consumer.objects.create(name="bob")
    Follow.objects.create(consumer=consumer, producer=producer)
    return consumer


def test_it_shows_the_new_consumer_key_once(admin_client, producer):
    response = admin_client.post(
        ADD, form_data(follows=[{"producer": producer.pk}]), follow=True
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "only time it is shown" in page
    key = KEY.search(page).group()
    consumer = Consumer.objects.get(name="bob")
    assert Consumer.for_key(key) == consumer
    later = admin_client.get(change_url(consumer)).content.decode()
    assert key not in later
    assert consumer.key_prefix in later


def test_it_issues_a_feed_token_for_a_follow_created_in_the_admin(
    admin_client, producer
):
    admin_client.post(ADD, form_data(follows=[{"producer": producer.pk}]))
    follow = Follow.objects.get(consumer__name="bob")
    assert follow.feed_token.producer == producer
    assert FeedToken.objects.authenticate(follow.feed_token.plaintext_for_worker())[0]


def test_it_never_renders_an_external_bots_ws_token(admin_client):
    bot = {"host": "bot.example.org", "ws_token": "their-secret_token"}
    response = admin_client.post(ADD, form_data(follows=[bot]))
    assert "their-secret_token" not in response.content.decode()
    follow = Follow.objects.get(consumer__name="bob")
    assert follow.ws_token() == "their-secret_token"
    page = admin_client.get(change_url(follow.consumer)).content.decode()
    assert "their-secret_token" not in page
    assert 'type="password"' in page


def test_it_does_not_echo_a_ws_token_back_when_the_form_has_errors(admin_client):
    bot = {"host": "bot.example.org", "ws_token": "their-secret_token"}
    response = admin_client.post(ADD, form_data(follows=[bot], sleep_time=0))
    page = response.content.decode()
    assert "sleep_time must be at least 1 second" in page
    assert "their-secret_token" not in page


def test_it_keeps_the_stored_ws_token_when_the_field_is_left_empty(admin_client):
    admin_client.post(
        ADD, form_data(follows=[{"host": "bot.example.org", "ws_token": "first"}])
    )
    follow = Follow.objects.get()
    data = form_data(
        follows=[
            {
                "id": follow.pk,
                "consumer": follow.consumer_id,
                "host": "bot.example.org",
                "port": 8081,
            }
        ]
    )
    data["follows-INITIAL_FORMS"] = 1
    response = admin_client.post(change_url(follow.consumer), data)
    assert response.status_code == 302
    follow.refresh_from_db()
    assert (follow.port, follow.ws_token()) == (8081, "first")


def test_it_switches_a_follow_from_a_bot_to_a_producer(admin_client, producer):
    admin_client.post(
        ADD, form_data(follows=[{"host": "bot.example.org", "ws_token": "first"}])
    )
    follow = Follow.objects.get()
    data = form_data(
        follows=[
            {"id": follow.pk, "consumer": follow.consumer_id, "producer": producer.pk}
        ]
    )
    data["follows-INITIAL_FORMS"] = 1
    assert admin_client.post(change_url(follow.consumer), data).status_code == 302
    follow.refresh_from_db()
    assert (follow.host, follow.ws_token_encrypted) == ("", "")
    assert follow.feed_token.producer == producer


def test_it_shows_the_add_page_with_one_empty_follow(admin_client, producer):
    page = admin_client.get(ADD).content.decode()
    assert 'name="follows-0-ws_token"' in page
    assert 'name="follows-1-ws_token"' not in page


def test_it_explains_a_follow_without_a_token(admin_client):
    response = admin_client.post(ADD, form_data(follows=[{"host": "bot.example.org"}]))
    assert "An external FreqTrade bot needs its ws_token" in response.content.decode()
    assert not Consumer.objects.exists()


def test_it_explains_a_setting_out_of_range(admin_client):
    response = admin_client.post(ADD, form_data(initial_candle_limit=2000))
    assert "initial_candle_limit must be from 0 to 1500 candles" in (
        response.content.decode()
    )
    assert not Consumer.objects.exists()


def test_it_lists_followed_producers_and_key_state(admin_client, bob):
    page = admin_client.get(CHANGELIST).content.decode()
    assert "default: producer alpha" in page
    assert "none issued" in page


def test_it_issues_a_new_key_with_the_action(admin_client, bob):
    old = bob.issue_key()
    response = admin_client.post(
        CHANGELIST,
        {"action": "issue_consumer_key", "_selected_action": [bob.pk]},
        follow=True,
    )
    key = KEY.search(response.content.decode()).group()
    assert Consumer.for_key(key) == bob
    assert Consumer.for_key(old) is None


def test_it_exports_the_freqtrade_config_with_a_warning(admin_client, bob):
    response = admin_client.post(
        CHANGELIST,
        {"action": "export_freqtrade_config", "_selected_action": [bob.pk]},
        HTTP_HOST="localhost:8000",
    )
    page = response.content.decode()
    assert "These blocks contain feed tokens" in page
    assert "&quot;external_message_consumer&quot;" in page
    assert "&quot;port&quot;: 8000" in page
    assert bob.follows.get().feed_token.plaintext_for_worker() in page
    assert "no-store" in response["Cache-Control"]


def test_an_export_goes_into_the_tokens_history(admin_client, bob, admin_user):
    from django.contrib.admin.models import LogEntry

    token = bob.follows.get().feed_token
    admin_client.post(
        CHANGELIST,
        {"action": "export_freqtrade_config", "_selected_action": [bob.pk]},
    )
    entry = LogEntry.objects.filter(
        content_type__model="feedtoken", object_id=str(token.pk)
    ).latest("action_time")
    assert entry.user == admin_user
    assert entry.change_message == (
        f"Showed feed token {token.prefix}… in a FreqTrade config export of "
        "consumer bob"
    )


def test_it_reports_an_export_it_cannot_make(admin_client, bob):
    bob.follows.get().feed_token.revoke()
    response = admin_client.post(
        CHANGELIST,
        {"action": "export_freqtrade_config", "_selected_action": [bob.pk]},
        follow=True,
    )
    assert "was revoked or expired" in response.content.decode()


def test_it_rotates_feed_tokens_with_the_action(admin_client, bob):
    old = bob.follows.get().feed_token
    action = {"action": "renew_feed_tokens", "_selected_action": [bob.pk]}
    asked = admin_client.post(CHANGELIST, action).content.decode()
    assert 'name="grace"' in asked and 'value="01:00:00"' in asked
    old.refresh_from_db()
    assert old.successor is None  # nothing happens before the grace is given
    response = admin_client.post(
        CHANGELIST, {**action, "apply": "Rotate", "grace": "120"}, follow=True
    )
    assert "1 feed token(s) rotated" in response.content.decode()
    old.refresh_from_db()
    assert old.successor is not None
    assert old.state() == FeedToken.State.GRACE
    assert abs((old.expires_at - old.successor.created).total_seconds() - 120) < 5


def test_it_disables_and_enables_consumers(admin_client, bob):
    admin_client.post(CHANGELIST, {"action": "disable", "_selected_action": [bob.pk]})
    assert not Consumer.objects.get().enabled
    response = admin_client.post(
        CHANGELIST, {"action": "enable", "_selected_action": [bob.pk]}, follow=True
    )
    assert Consumer.objects.get().enabled
    assert "1 consumer(s) enabled" in response.content.decode()


### consumer keys: rotation, revocation, history


def config_status(client, key: str) -> tuple[int, str]:
    response = client.get(CONFIG, HTTP_AUTHORIZATION=f"Bearer {key}")
    return response.status_code, response.json().get("error", "")


def test_it_rotates_a_consumer_key_with_a_grace_period(admin_client, bob, client):
    old = bob.issue_key()
    action = {"action": "rotate_consumer_key", "_selected_action": [bob.pk]}
    assert 'name="grace"' in admin_client.post(CHANGELIST, action).content.decode()
    response = admin_client.post(
        CHANGELIST, {**action, "apply": "1", "grace": "90"}, follow=True
    )
    page = response.content.decode()
    new = KEY.search(page).group()
    assert "only time it is shown" in page and "stay valid until" in page
    assert config_status(client, new)[0] == 200
    assert config_status(client, old)[0] == 200  # within the grace period
    with time_machine.travel(timezone.now() + timedelta(seconds=91)):
        status, error = config_status(client, old)
        assert status == 403
        assert f"consumer key {old[:12]}… expired" in error
        assert config_status(client, new)[0] == 200


def test_it_revokes_a_consumer_key_and_the_api_refuses_it(admin_client, bob, client):
    key = bob.issue_key()
    row = ConsumerKey.objects.get(revoked_at=None)
    response = admin_client.post(
        KEYS, {"action": "revoke", "_selected_action": [row.pk]}, follow=True
    )
    assert "1 consumer key(s) revoked" in response.content.decode()
    assert "consumer worker using it stops within 10 s" in response.content.decode()
    status, error = config_status(client, key)
    assert status == 403
    assert error.startswith(f"consumer key {key[:12]}… was revoked")


def test_it_shows_the_key_history_on_the_consumer_page(admin_client, bob):
    first = bob.issue_key()
    bob.rotate_key()
    page = admin_client.get(change_url(bob)).content.decode()
    newest = bob.current_key()
    assert first[:12] in page and newest.prefix in page
    assert "in grace" in page and "active" in page
    assert first not in page


def test_it_records_key_steps_in_the_consumer_s_history(admin_client, bob, admin_user):
    action = {"action": "rotate_consumer_key", "_selected_action": [bob.pk]}
    admin_client.post(CHANGELIST, {**action, "apply": "1", "grace": "60"})
    key = bob.current_key()
    history = admin_client.get(f"{change_url(bob)[:-7]}history/").content.decode()
    assert f"Issued consumer key {key.prefix}…" in history
    assert admin_user.username in history


def test_it_records_the_feed_token_a_new_follow_gets(admin_client, producer):
    admin_client.post(ADD, form_data(follows=[{"producer": producer.pk}]))
    token = Follow.objects.get().feed_token
    history = admin_client.get(
        f"/admin/producers/feedtoken/{token.pk}/history/"
    ).content.decode()
    assert f"Issued feed token {token.prefix}… (consumer bob (default))" in history


def test_it_loads_the_script_that_shows_only_a_follow_s_own_fields(admin_client, bob):
    """An empty host and port 8080 on a follow of our producer read as a
    misconfiguration: follows.js hides them (test_e2e_admin checks it in a browser).
    Every field is still in the page, so a follow can change kind."""
    page = admin_client.get(change_url(bob)).content.decode()
    assert "/static/consumers/follows.js" in page
    for row in (0, 1):  # bob's follow of alpha, and the blank row
        assert f'name="follows-{row}-host"' in page
        assert f'name="follows-{row}-producer"' in page
    assert 'class="form-row field-host field-port field-secure"' in page
