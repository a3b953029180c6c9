"""The lifecycle every credential shares (producers.credentials): keys replaced,
rotated with a grace period and revoked; each step recorded in the admin's history;
expiry judged at the handshake with frozen time; throttling, error pages and the
documented production settings."""

from __future__ import annotations

import logging
import os
import re
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import RequestFactory
from django.views.debug import technical_500_response

from consumers.models import Consumer, ConsumerKey
from producers import tokens
from producers.credentials import CredentialError, acting_as
from producers.models import FeedToken
from tests.feeds import feed

ROOT = Path(__file__).resolve().parent.parent
NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
# An external bot's token: not recognisable as ours, redacted by its parameter's name.
BOT_TOKEN = secrets.token_urlsafe(16)


@pytest.fixture
def consumer(db) -> Consumer:
    return Consumer.objects.create(name="bob")


@pytest.fixture(params=["producer", "consumer"])
def holder(request, producer, consumer):
    """Each kind of key holder: keys behave the same for both."""
    return {"producer": producer, "consumer": consumer}[request.param]


def messages(obj) -> list[str]:
    """The admin's history of ``obj``, as its messages, oldest first."""
    entries = LogEntry.objects.filter(object_id=str(obj.pk)).order_by("pk")
    kind = type(obj)._meta.model_name
    return [e.get_change_message() for e in entries if e.content_type.model == kind]


### keys


def test_it_keeps_only_a_prefix_and_a_digest_of_a_key(holder):
    plaintext = holder.issue_key()
    key = holder.current_key()
    stored = [str(getattr(key, f.attname)) for f in key._meta.concrete_fields]
    assert not [value for value in stored if plaintext[12:] in value]
    assert key.prefix == plaintext[: tokens.PREFIX_LENGTH]


def test_it_replaces_every_other_key_when_issuing_one(holder):
    first, second = holder.issue_key(), holder.issue_key()
    third = holder.issue_key()
    assert type(holder).for_key(third) == holder
    assert type(holder).for_key(first) is None
    assert type(holder).for_key(second) is None
    assert [k.state() for k in holder.keys.all()] == ["active", "revoked", "revoked"]


def test_it_keeps_the_old_key_valid_through_the_grace_period(holder):
    with time_machine.travel(NOON, tick=False) as traveller:
        old = holder.issue_key()
        key, new = holder.rotate_key(timedelta(minutes=10))
        assert type(holder).for_key(old) == holder
        assert holder.current_key() == key
        traveller.shift(10 * MINUTE)
        assert type(holder).for_key(old) is None
        assert type(holder).for_key(new) == holder


def test_it_says_why_a_rotated_key_is_refused_after_its_grace(consumer):
    old = consumer.issue_key()
    consumer.rotate_key(timedelta(0))
    assert ConsumerKey.objects.authenticate(old) == (
        None,
        f"consumer key {old[:12]} is expired",
    )


def test_it_issues_a_key_when_rotating_without_a_valid_one(holder):
    key, plaintext = holder.rotate_key()
    assert type(holder).for_key(plaintext) == holder
    assert key.state() == "active"


def test_it_records_when_and_from_where_a_key_was_used(consumer):
    plaintext = consumer.issue_key()
    with time_machine.travel(NOON, tick=False) as traveller:
        Consumer.for_key(plaintext, "203.0.113.7")
        traveller.shift(MINUTE / 2)  # the same address within a minute: no write
        Consumer.for_key(plaintext, "203.0.113.7")
        key = ConsumerKey.objects.get()
        assert (key.last_used_at, key.last_used_address) == (NOON, "203.0.113.7")
        Consumer.for_key(plaintext, "198.51.100.9")  # another address: written
        key.refresh_from_db()
        assert key.last_used_address == "198.51.100.9"


### rotation's rules


def test_it_refuses_to_rotate_a_token_twice(feed_token):
    _, token = feed_token
    successor, _ = token.rotate()
    with pytest.raises(CredentialError) as refused:
        token.rotate()
    assert str(refused.value) == (
        f"feed token {token.prefix}… was rotated already: rotate its successor "
        f"{successor.prefix}… instead"
    )


def test_it_rotates_again_when_the_successor_was_revoked(feed_token):
    _, token = feed_token
    first, _ = token.rotate()
    first.revoke()
    second, plaintext = token.rotate()
    token.refresh_from_db()
    assert token.successor == second
    assert FeedToken.objects.authenticate(plaintext) == (second, "")


@pytest.mark.parametrize("state", ["revoked", "expired"])
def test_it_refuses_to_rotate_a_token_that_is_no_longer_valid(feed_token, state):
    _, token = feed_token
    if state == "revoked":
        token.revoke()
    else:
        token.set_expiry(NOON)
    with pytest.raises(CredentialError, match=f"is {state}: issue a new one instead"):
        token.rotate()


def test_it_refuses_a_negative_grace_period(feed_token):
    with pytest.raises(CredentialError, match="cannot be negative"):
        feed_token[1].rotate(timedelta(seconds=-1))


def test_it_refuses_an_overlong_credential_before_any_digest(feed_token, monkeypatch):
    plaintext, _ = feed_token
    digests = []
    monkeypatch.setattr(tokens, "matches", lambda *args: digests.append(args))
    assert FeedToken.objects.authenticate(plaintext + "x" * 200) == (
        None,
        f"not a candlecast feed token: it has {len(plaintext) + 200} characters "
        "where ours have 47 (cut short or joined to something when copied?)",
    )
    assert digests == []


def test_it_ends_the_grace_at_once_with_a_grace_of_zero(feed_token):
    plaintext, token = feed_token
    token.rotate(timedelta(0))
    assert (
        FeedToken.objects.authenticate(plaintext)[1]
        == f"token {token.prefix} is expired"
    )


### the admin's history


def test_it_records_each_step_under_the_user_acting(feed_token, admin_user):
    _, token = feed_token
    with acting_as(admin_user):
        successor, _ = token.rotate(timedelta(minutes=5))
        successor.revoke()
    rotated = messages(token)[-1]
    assert rotated.startswith(
        f"Rotated feed token {token.prefix}…: successor {successor.prefix}…; "
        f"{token.prefix}… stays valid until "
    )
    assert messages(successor) == [
        f"Issued feed token {successor.prefix}… (bot one) for producer alpha",
        f"Revoked feed token {successor.prefix}…",
    ]
    issued, revoked = messages(successor)
    assert messages(token.producer) == [issued, rotated, revoked]
    flags = LogEntry.objects.filter(object_id=str(successor.pk)).values_list(
        "action_flag", "user"
    )
    assert sorted(set(flags)) == [(ADDITION, admin_user.pk), (CHANGE, admin_user.pk)]


def test_it_records_only_a_log_line_without_a_user(producer, caplog):
    caplog.set_level(logging.INFO, logger="producers.credentials")
    token, plaintext = FeedToken.issue(producer, "script")
    assert not LogEntry.objects.exists()
    [line] = [r.getMessage() for r in caplog.records]
    assert line == (
        f"Issued feed token {token.prefix}… (script) for producer alpha "
        "(by no admin user via code)"
    )
    assert plaintext not in caplog.text


def test_it_records_a_key_step_on_the_key_and_its_holder(consumer, admin_user):
    with acting_as(admin_user):
        consumer.issue_key()
    key = consumer.current_key()
    message = f"Issued consumer key {key.prefix}… (no label) for consumer bob"
    assert messages(key) == messages(consumer) == [message]


def test_it_records_issuetoken_under_the_user_given_by(producer, admin_user):
    err = StringIO()
    call_command("issuetoken", "alpha", "--by", "admin", stdout=StringIO(), stderr=err)
    token = FeedToken.objects.get()
    entry = LogEntry.objects.get(object_id=str(token.pk), action_flag=ADDITION)
    assert entry.user == admin_user
    assert entry.get_change_message().startswith(f"Issued feed token {token.prefix}…")
    assert f"issued feed token {token.prefix}…" in err.getvalue()


def test_it_refuses_a_by_that_is_not_a_staff_user(producer, django_user_model):
    django_user_model.objects.create_user("charlie", password="not-staff-1234")
    for name in ("charlie", "nobody"):
        with pytest.raises(CommandError, match=f"--by {name}: no active staff user"):
            call_command("issuetoken", "alpha", "--by", name, stdout=StringIO())
    assert not FeedToken.objects.exists()


### expiry with frozen time, at the handshake


@pytest.mark.django_db(transaction=True)
async def test_it_refuses_a_handshake_from_the_moment_of_expiry(producer):
    token, plaintext = await sync_to_async(FeedToken.issue)(
        producer, "bot", expires_at=NOON
    )
    with time_machine.travel(NOON - timedelta(seconds=1), tick=False):
        socket, connected = await feed(plaintext)
        assert connected
        await socket.disconnect()
    with time_machine.travel(NOON, tick=False):
        assert not (await feed(plaintext))[1]
    with time_machine.travel(NOON + timedelta(days=1), tick=False):
        assert not (await feed(plaintext))[1]


@pytest.mark.django_db(transaction=True)
async def test_it_refuses_the_predecessor_once_the_grace_ends(producer):
    with time_machine.travel(NOON, tick=False):
        token, old = await sync_to_async(FeedToken.issue)(producer, "bot")
        _, new = await sync_to_async(token.rotate)(timedelta(hours=1))
    with time_machine.travel(NOON + timedelta(minutes=59), tick=False):
        for plaintext in (old, new):
            socket, connected = await feed(plaintext)
            assert connected
            await socket.disconnect()
    with time_machine.travel(NOON + timedelta(hours=1), tick=False):
        assert not (await feed(old))[1]
        socket, connected = await feed(new)
        assert connected
        await socket.disconnect()


### throttling of the config API


def test_it_throttles_the_config_api_and_says_so_once_per_window(
    client, consumer, settings, caplog
):
    settings.CANDLECAST_AUTH_FAILURES_PER_WINDOW = 2
    key = consumer.issue_key()
    wrong = {"HTTP_AUTHORIZATION": "Bearer ccc_wrongwrongwrongwrongwrong"}
    for _ in range(2):
        assert client.get("/api/v1/consumer/config", **wrong).status_code == 403
    for _ in range(3):  # over the limit: refused quietly
        assert client.get("/api/v1/consumer/config", **wrong).status_code == 429
    throttled = [r for r in caplog.records if "throttling" in r.getMessage()]
    assert len(throttled) == 1
    right = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    assert client.get("/api/v1/consumer/config", **right).status_code == 200


def test_it_throttles_the_producer_config_api_too(client, producer, settings):
    settings.CANDLECAST_AUTH_FAILURES_PER_WINDOW = 2
    url = f"/api/v1/producers/{producer.name}/config"
    wrong = {"HTTP_AUTHORIZATION": "Bearer ccp_wrongwrongwrongwrongwrong"}
    codes = [client.get(url, **wrong).status_code for _ in range(4)]
    assert codes == [403, 403, 429, 429]
    right = {"HTTP_AUTHORIZATION": f"Bearer {producer.issue_key()}"}
    assert client.get(url, **right).status_code == 200


def test_x_forwarded_for_cannot_evade_the_throttle_without_proxy_headers(
    client, consumer, settings
):
    settings.CANDLECAST_AUTH_FAILURES_PER_WINDOW = 2
    codes = [
        client.get(
            "/api/v1/consumer/config",
            HTTP_AUTHORIZATION="Bearer ccc_wrongwrongwrongwrongwrong",
            HTTP_X_FORWARDED_FOR=f"203.0.113.{n}",
        ).status_code
        for n in range(4)
    ]
    assert codes == [403, 403, 429, 429]


### error pages


def test_it_keeps_tokens_off_the_debug_error_page(feed_token, settings):
    settings.DEBUG = True
    plaintext, _ = feed_token
    key = tokens.mint(tokens.CONSUMER_KEY).plaintext
    request = RequestFactory().get(
        f"/api/v1/message/ws?token={plaintext}&ws_token={BOT_TOKEN}",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    try:
        presented = plaintext  # a frame variable the page would show  # noqa: F841
        raise ValueError(f"cannot use {plaintext}")
    except ValueError:
        response = technical_500_response(request, *sys.exc_info())
    page = response.content.decode()
    assert "ValueError" in page and "[redacted]" in page
    for secret in (plaintext, plaintext[12:], key[12:], BOT_TOKEN):
        assert secret not in page


### the documented production settings


def documented_production_env(tmp_path: Path) -> dict[str, str]:
    """The README's production block; SECRET_KEY_FILE points at a real file."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### Production settings", 1)[1].split("```sh", 1)[1]
    block = block.split("```", 1)[0]
    env = dict(re.findall(r"^export (\w+)=(\S+)", block, re.M))
    secret = tmp_path / "secret_key"
    secret.write_text(secrets.token_urlsafe(50))
    env["SECRET_KEY_FILE"] = str(secret)
    return env


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**keep, **env, "DJANGO_SETTINGS_MODULE": "controlplane.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_passes_check_deploy_with_the_documented_settings(tmp_path):
    env = documented_production_env(tmp_path)
    assert {"DEBUG", "ALLOWED_HOSTS", "SECURE_SSL_REDIRECT"} <= set(env)
    done = check_deploy(env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_it_fails_check_deploy_when_a_documented_setting_is_missing(tmp_path):
    env = documented_production_env(tmp_path)
    del env["SESSION_COOKIE_SECURE"]
    done = check_deploy(env)
    assert done.returncode != 0
    assert "security.W012" in done.stdout + done.stderr


def test_it_trusts_proxy_headers_only_when_told(settings):
    from controlplane.management.commands.runhub import proxy_headers

    assert proxy_headers() == {}
    settings.CANDLECAST_PROXY_HEADERS = True
    assert proxy_headers()["proxy_forwarded_address_header"] == "X-Forwarded-For"
    assert proxy_headers()["proxy_forwarded_proto_header"] == "X-Forwarded-Proto"


@pytest.mark.parametrize(
    ("name", "value", "check"),
    [
        ("CANDLECAST_TOKEN_GRACE_SECONDS", -1, "candlecast.E003"),
        ("CANDLECAST_TOKEN_GRACE_SECONDS", 31 * 86400, "candlecast.E003"),
        ("CANDLECAST_TOKEN_RECHECK_SECONDS", 0, "candlecast.E004"),
    ],
)
def test_it_refuses_token_settings_that_cannot_work(settings, name, value, check):
    from controlplane.checks import check_candlecast_settings

    assert check_candlecast_settings(None) == []
    setattr(settings, name, value)
    assert [problem.id for problem in check_candlecast_settings(None)] == [check]
