"""A relay with a standby bot: the definition, the failover, and how it is shown.

The relay follows both FreqTrade bots at once and publishes the frames of one; it
follows the standby when the primary has been unreachable, or behind the standby's
newest candle, for the failover time, and goes back once the primary has caught up.
The fake bots and hub are tests/test_relay.py's.
"""

from __future__ import annotations

import asyncio

import pytest
from django.core.exceptions import ValidationError
from pandas.testing import assert_frame_equal
from websockets.asyncio.server import serve

from controlplane import metrics
from controlplane.lib.contracts import ProducerDefinition, parse_upstream_status
from controlplane.overview import build_status_snapshot
from producers import relay
from producers.models import Producer
from tests.test_relay import (  # noqa: F401 (fixtures)
    BOT_TOKEN,
    HOST,
    PAIRS,
    FakeBot,
    _fresh_counters,
    analysed,
    decoded,
    definition,
    relayed,
    report,
    row_of,
    running,
    servers,
    until,
)

STANDBY_TOKEN = "standby-Token_2"


### The definition


def test_it_hands_the_standby_to_the_producer_s_worker(client, relayed):  # noqa: F811
    relayed.standby_host, relayed.standby_port = "10.0.0.2", 8081
    relayed.set_standby_token(STANDBY_TOKEN)
    relayed.failover_seconds = 45
    relayed.full_clean()
    relayed.save()
    assert STANDBY_TOKEN not in relayed.standby_token_encrypted
    response = client.get(
        "/api/v1/producers/relayed/config",
        HTTP_AUTHORIZATION=f"Bearer {relayed.issue_key()}",
        **HOST,
    )
    body = response.json()
    assert body["standby"] == {
        "host": "10.0.0.2",
        "port": 8081,
        "secure": False,
        "ws_token": STANDBY_TOKEN,
        "failover_seconds": 45,
    }
    assert "failover_seconds" not in body["upstream"]
    parsed = ProducerDefinition.from_document(body)
    assert parsed.standby is not None and parsed.standby.failover_seconds == 45
    assert parsed.document() == body


def test_a_relay_without_a_standby_keeps_its_document(relayed):  # noqa: F811
    """An existing relay's definition (and its version) is unchanged."""
    document = relayed.definition().document()
    assert "standby" not in document
    assert set(document["upstream"]) == {"host", "port", "secure", "ws_token"}


def test_a_standby_needs_its_ws_token(relayed):  # noqa: F811
    relayed.standby_host = "10.0.0.2"
    with pytest.raises(ValidationError, match="standby bot needs its ws_token"):
        relayed.full_clean()


def test_the_standby_cannot_be_the_primary_itself(relayed):  # noqa: F811
    relayed.standby_host, relayed.standby_port = "127.0.0.1", 8080
    relayed.set_standby_token(STANDBY_TOKEN)
    with pytest.raises(ValidationError, match="standby is the primary bot itself"):
        relayed.full_clean()


def test_the_admin_takes_the_standby_s_ws_token_write_only(client, relayed):  # noqa: F811
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("admin", "a@example.org", "pw")
    client.login(username="admin", password="pw")
    url = f"/admin/producers/producer/{relayed.pk}/change/"
    form = client.get(url, **HOST).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    data.update(
        pairs="",
        source_options="{}",
        standby_host="10.0.0.2",
        standby_port="8081",
        standby_token=STANDBY_TOKEN,
        failover_seconds="30",
    )
    data.pop("standby_secure", None)
    data.pop("upstream_secure", None)
    response = client.post(url, data, **HOST)
    assert response.status_code == 302, response.context["adminform"].form.errors
    stored = Producer.objects.get(pk=relayed.pk)
    assert stored.definition().standby.ws_token == STANDBY_TOKEN
    page = client.get(url, **HOST).content.decode()
    assert STANDBY_TOKEN not in page and "stored (encrypted)" in page


def test_a_report_with_a_standby_is_checked(relayed):  # noqa: F811
    import json

    body = report(
        following="sideways",
        switches=1,
        switched_at=None,
        other=None,
    )
    with pytest.raises(ValueError, match="'following' must be"):
        parse_upstream_status(json.dumps(body).encode())
    body["following"] = "standby"
    body["other"] = {"url": "ws://x", "connected": "yes"}
    with pytest.raises(ValueError, match="other.connected"):
        parse_upstream_status(json.dumps(body).encode())


### How it is shown


def standby_report(**changes) -> dict:
    document = dict(
        url="ws://127.0.0.1:8081/api/v1/message/ws",
        following="standby",
        switches=1,
        switched_at="2026-11-01T10:00:00+00:00",
        other={
            "url": "ws://127.0.0.1:8080/api/v1/message/ws",
            "connected": False,
            "last_error": "cannot connect (connection refused)",
            "newest_candle": "2026-11-01T09:55:00+00:00",
        },
    )
    return report(**{**document, **changes})


def test_it_says_the_relay_follows_the_standby_and_why(relayed):  # noqa: F811
    relayed.record_upstream_status(standby_report())
    upstream = row_of()["upstream"]
    assert upstream["state"] == "connected"
    words = upstream["standby"]
    assert words.startswith("following the STANDBY bot since")
    assert "the primary at ws://127.0.0.1:8080" in words
    assert "unreachable (cannot connect (connection refused))" in words
    assert "back to it once it has caught up; 1 switch" in words


def test_metrics_count_the_switches(relayed):  # noqa: F811
    relayed.record_upstream_status(standby_report(switches=3))
    text = metrics.render(build_status_snapshot())
    assert 'candlecast_relay_switches_total{producer="relayed"} 3' in text
    assert 'candlecast_relay_following_standby{producer="relayed"} 1' in text


def test_a_relay_without_a_standby_says_nothing_of_one(relayed):  # noqa: F811
    relayed.record_upstream_status(report())
    assert row_of()["upstream"]["standby"] == ""
    assert "relay_switches_total{" not in metrics.render(build_status_snapshot())


### The failover, against two fake bots


@pytest.fixture
async def standby_bot():
    """The standby: the same pairs, its own values (to tell whose frames went out)."""
    bot = FakeBot({pair: analysed(150, seed=10 + i) for i, pair in enumerate(PAIRS)})
    async with serve(bot.handler, "127.0.0.1", 0) as server:
        bot.port = server.sockets[0].getsockname()[1]
        yield bot


def with_standby(primary: FakeBot, standby: FakeBot, failover: int = 1) -> dict:
    return definition(
        primary,
        standby={
            "host": "127.0.0.1",
            "port": standby.port,
            "secure": False,
            "ws_token": BOT_TOKEN,
            "failover_seconds": failover,
        },
    )


def published(hub, bot: FakeBot, since: int) -> bool:
    """The hub's frames from ``since`` on include every pair's whole frame of
    ``bot``, as it holds it now."""
    whole = {f["key"][0]: f for f in hub.frames()[since:] if f["full"]}
    if set(whole) != set(PAIRS):
        return False
    return all(len(whole[p]["rows"]) == len(bot.frames[p]) for p in PAIRS)


def assert_from(hub, bot: FakeBot, since: int) -> None:
    whole = {f["key"][0]: f for f in hub.frames()[since:] if f["full"]}
    for pair in PAIRS:
        assert_frame_equal(
            decoded(whole[pair]), bot.frames[pair], check_exact=False, atol=1e-10
        )


async def test_it_follows_the_standby_while_the_primary_is_behind_and_comes_back(
    servers,  # noqa: F811
    standby_bot,
    monkeypatch,
    caplog,
):
    monkeypatch.setattr(relay, "WATCH_SECONDS", 0.05)
    primary, hub, reports = servers
    stop, task = await running(hub, with_standby(primary, standby_bot))
    try:
        await until("history", lambda: published(hub, primary, 0))
        assert_from(hub, primary, 0)
        await until(
            "both followed",
            lambda: reports and reports[-1]["other"]["newest_candle"] is not None,
        )
        assert reports[-1]["following"] == "primary"
        mark = len(hub.frames())
        await standby_bot.new_candle()  # the primary stays silent: it is behind
        await until("the switch", lambda: published(hub, standby_bot, mark), 5)
        assert_from(hub, standby_bot, mark)
        await until("reported", lambda: reports[-1]["following"] == "standby")
        assert reports[-1]["switches"] == 1
        assert "behind the standby for 1 s" in caplog.text
        mark = len(hub.frames())
        await standby_bot.new_candle()  # followed: relayed as a tick
        await until("the standby's tick", lambda: len(hub.frames()) == mark + 2)
        assert not any(f["full"] for f in hub.frames()[mark:])
        mark = len(hub.frames())
        await primary.new_candle()
        await primary.new_candle()  # caught up: back to the primary
        await until("back", lambda: published(hub, primary, mark), 5)
        assert_from(hub, primary, mark)
        await until("reported back", lambda: reports[-1]["following"] == "primary")
        assert reports[-1]["switches"] == 2
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 5) == 0


async def test_it_follows_the_standby_when_the_primary_is_unreachable(
    servers,  # noqa: F811
    standby_bot,
    monkeypatch,
    caplog,
):
    monkeypatch.setattr(relay, "WATCH_SECONDS", 0.05)
    primary, hub, reports = servers

    async def refuse(connection, request):
        return connection.respond(503, "down\n")

    async with serve(primary.handler, "127.0.0.1", 0, process_request=refuse) as down:
        primary.port = down.sockets[0].getsockname()[1]
        stop, task = await running(hub, with_standby(primary, standby_bot))
        try:
            await until("the standby's history", lambda: published(hub, standby_bot, 0))
            assert_from(hub, standby_bot, 0)
            await until("reported", lambda: reports[-1]["following"] == "standby")
            assert not reports[-1]["other"]["connected"]
            assert "unreachable for 1 s" in caplog.text
            row_report = reports[-1]
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 5) == 0
    assert row_report["url"].endswith(f":{standby_bot.port}/api/v1/message/ws")


async def test_the_failover_is_checked_while_the_standby_keeps_sending(
    servers,  # noqa: F811
    standby_bot,
    monkeypatch,
):
    """The bot not followed wakes the relay with every frame; that must not keep it
    from checking the failover (it did, while frames came faster than the check)."""
    monkeypatch.setattr(relay, "WATCH_SECONDS", 0.2)
    primary, hub, reports = servers
    stop, task = await running(hub, with_standby(primary, standby_bot))

    async def stream() -> None:
        while True:
            await standby_bot.new_candle()
            await asyncio.sleep(0.05)

    streaming = None
    try:
        await until("history", lambda: published(hub, primary, 0))
        streaming = asyncio.create_task(stream())
        await until(
            "the switch",
            lambda: reports and reports[-1].get("following") == "standby",
            6,
        )
    finally:
        if streaming is not None:
            streaming.cancel()
        stop.set()
        assert await asyncio.wait_for(task, 5) == 0
