"""The feed socket through the real ASGI stack: FreqTrade's protocol, our limits."""

from __future__ import annotations

import asyncio
import copy
import logging
from datetime import timedelta

import pandas as pd
import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone
from pandas.testing import assert_frame_equal

from controlplane.lib import counters as hub_counters
from controlplane.lib.wire import freqtrade
from controlplane.lib.wire.columns import EPOCH
from producers import tokens
from producers.models import FeedToken
from tests.feeds import (
    analysed_frame,
    feed,
    frame,
    publish,
    publisher,
    receive,
    request,
)

pytestmark = [pytest.mark.django_db(transaction=True)]


def count_encodes(monkeypatch) -> list:
    """Record every FreqTrade frame encoding, wherever it is called from."""
    calls: list = []
    original = freqtrade.analyzed_df_message

    def counted(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(freqtrade, "analyzed_df_message", counted)
    return calls


SUBSCRIBE = {"type": "subscribe", "data": ["whitelist", "analyzed_df"]}


@pytest.fixture
async def history(producer, producer_key):
    """The producer worker has published 1500 rows for both pairs."""
    frames = {pair: analysed_frame(seed=n) for n, pair in enumerate(producer.pairs)}
    socket, connected = await publisher(producer_key)
    assert connected
    for seq, (pair, df) in enumerate(frames.items(), start=1):
        reply = await publish(
            socket, [frame(pair, df, full=True)], whitelist=producer.pairs, seq=seq
        )
        assert reply == {"type": "ack", "seq": seq}
    yield frames, socket
    await socket.disconnect()


async def test_it_refuses_a_missing_token(producer):
    socket, connected = await feed(None)
    assert not connected


async def test_it_refuses_a_wrong_token(producer, feed_token):
    plaintext, _ = feed_token
    socket, connected = await feed(plaintext[:-2] + "xx")
    assert not connected


async def test_it_refuses_a_revoked_token(feed_token):
    plaintext, token = feed_token
    await sync_to_async(token.revoke)()
    socket, connected = await feed(plaintext)
    assert not connected


async def test_it_refuses_an_expired_token(feed_token):
    plaintext, token = feed_token
    token.expires_at = timezone.now() - timedelta(seconds=1)
    await token.asave()
    socket, connected = await feed(plaintext)
    assert not connected


async def test_it_refuses_a_producer_key_as_feed_token(producer, producer_key):
    socket, connected = await feed(producer_key)
    assert not connected


@pytest.mark.parametrize("bearer", [False, True])
async def test_it_accepts_a_token_in_the_query_or_the_header(feed_token, bearer):
    plaintext, token = feed_token
    socket, connected = await feed(plaintext, bearer=bearer)
    assert connected
    await socket.disconnect()
    await token.arefresh_from_db()
    assert token.last_used_at is not None


async def test_it_accepts_an_allowed_origin_and_refuses_a_foreign_one(feed_token):
    plaintext, _ = feed_token
    socket, connected = await feed(plaintext, origin="http://127.0.0.1:8000")
    assert connected
    await socket.disconnect()
    socket, connected = await feed(plaintext, origin="https://evil.example")
    assert not connected


async def test_it_never_refuses_a_valid_token_from_a_throttled_address(
    feed_token, settings
):
    """Behind a load balancer every client shares one address: one bad client must
    not lock the others out."""
    settings.CANDLECAST_AUTH_FAILURES_PER_WINDOW = 3
    plaintext, _ = feed_token
    for _ in range(10):
        assert not (await feed("ccf_wrongwrongwrongwrongwrong"))[1]
    socket, connected = await feed(plaintext)
    assert connected
    await socket.disconnect()


async def test_a_repeated_wrong_token_costs_no_lookup_or_digest(
    feed_token, monkeypatch
):
    checks = []
    real = tokens.matches
    monkeypatch.setattr(tokens, "matches", lambda *a: checks.append(1) or real(*a))
    wrong = feed_token[0][:12] + "x" * 35  # the real prefix: a lookup and an HMAC
    for _ in range(5):
        assert not (await feed(wrong))[1]
    assert len(checks) == 1


async def test_it_answers_whitelist_from_the_definition_before_any_publish(
    producer, feed_token
):
    socket, _ = await feed(feed_token[0])
    await request(socket, {"type": "whitelist"})
    assert await receive(socket) == {"type": "whitelist", "data": producer.pairs}
    await socket.disconnect()


async def test_it_answers_analyzed_df_for_every_pair_with_1500_rows(
    history, feed_token
):
    frames, _ = history
    socket, _ = await feed(feed_token[0])
    await request(
        socket, {"type": "analyzed_df", "data": {"limit": 1500, "pair": None}}
    )
    for pair, expected in frames.items():
        message = await receive(socket)
        assert message["type"] == "analyzed_df"
        assert message["data"]["key"] == [pair, "5m", "spot"]
        received = message["data"]["df"]
        assert len(received) == 1500
        assert_frame_equal(
            received.reset_index(drop=True),
            expected,
            check_exact=True,
            check_dtype=False,
        )
    assert await socket.receive_nothing(timeout=0.2)
    await socket.disconnect()


@pytest.mark.parametrize(
    "data, rows",
    [
        ({"limit": 3, "pair": "BTC/USDT"}, 3),
        ({"pair": "BTC/USDT"}, 1500),
        ({"limit": 0, "pair": "BTC/USDT"}, 1500),
        ({"limit": 10**9, "pair": "BTC/USDT"}, 1500),
    ],
)
async def test_it_applies_freqtrade_limit_semantics(history, feed_token, data, rows):
    socket, _ = await feed(feed_token[0])
    await request(socket, {"type": "analyzed_df", "data": data})
    message = await receive(socket)
    assert len(message["data"]["df"]) == rows
    assert list(message["data"]["df"].index) == list(range(1500 - rows, 1500))
    await socket.disconnect()


async def test_it_answers_an_unknown_pair_with_an_empty_frame(history, feed_token):
    socket, _ = await feed(feed_token[0])
    await request(
        socket, {"type": "analyzed_df", "data": {"limit": 5, "pair": "NOPE/USDT"}}
    )
    message = await receive(socket)
    assert message["data"]["key"] == ["NOPE/USDT", "5m", "spot"]
    assert message["data"]["df"].empty
    assert message["data"]["la"] == EPOCH
    await socket.disconnect()


@pytest.mark.parametrize(
    "text, reply",
    [
        ('{"type": "nonsense"}', "Invalid request type: nonsense"),
        ("{not json", "JSON"),
        ('{"type": "analyzed_df", "data": {"limit": -5}}', "limit"),
        ('{"type": "analyzed_df", "data": {"limit": "many"}}', "limit"),
        ('{"type": "analyzed_df", "data": [1, 2]}', "analyzed_df"),
        ('["whitelist"]', "object"),
    ],
)
async def test_it_answers_bad_requests_with_an_exception_and_keeps_serving(
    feed_token, producer, text, reply
):
    socket, _ = await feed(feed_token[0])
    await socket.send_to(text_data=text)
    message = await receive(socket)
    assert message["type"] == "exception"
    assert reply in message["data"]
    await request(socket, {"type": "whitelist"})  # still open and serving
    assert (await receive(socket))["data"] == producer.pairs
    await socket.disconnect()


async def test_it_answers_a_binary_frame_with_an_exception(feed_token):
    socket, _ = await feed(feed_token[0])
    await socket.send_to(bytes_data=b'{"type": "whitelist"}')
    message = await receive(socket)
    assert message["type"] == "exception" and "binary" in message["data"]
    await socket.disconnect()


async def test_it_says_which_subscription_topics_are_unknown(feed_token):
    socket, _ = await feed(feed_token[0])
    await request(socket, {"type": "subscribe", "data": ["analyzed_df", "bogus"]})
    message = await receive(socket)
    assert message["type"] == "exception" and "bogus" in message["data"]
    await socket.disconnect()


async def test_it_broadcasts_new_rows_and_new_candle_to_subscribers_only(
    history, feed_token, producer
):
    _, worker = history
    subscriber, _ = await feed(feed_token[0])
    await request(
        subscriber, {"type": "subscribe", "data": ["analyzed_df", "new_candle"]}
    )
    bystander, _ = await feed(feed_token[0])
    late = analysed_frame(rows=1, start="2026-11-06 05:00", seed=9)
    await subscriber.receive_nothing(timeout=0.1)
    reply = await publish(
        worker, [frame("BTC/USDT", late, full=False, new_candle=True)], seq=10
    )
    assert reply["type"] == "ack"
    message = await receive(subscriber)
    assert message["data"]["key"] == ["BTC/USDT", "5m", "spot"]
    assert_frame_equal(
        message["data"]["df"].reset_index(drop=True),
        late,
        check_exact=True,
        check_dtype=False,
    )
    assert list(message["data"]["df"].index) == [1499]
    assert await receive(subscriber) == {
        "type": "new_candle",
        "data": ["BTC/USDT", "5m", "spot"],
    }
    assert await bystander.receive_nothing(timeout=0.2)
    await subscriber.disconnect()
    await bystander.disconnect()


async def test_it_serves_the_appended_candle_in_later_replies(history, feed_token):
    _, worker = history
    late = analysed_frame(rows=1, start="2026-11-06 05:00", seed=9)
    await publish(
        worker, [frame("BTC/USDT", late, full=False, new_candle=True)], seq=10
    )
    socket, _ = await feed(feed_token[0])
    await request(
        socket, {"type": "analyzed_df", "data": {"limit": 2, "pair": "BTC/USDT"}}
    )
    received = (await receive(socket))["data"]["df"]
    assert received["date"].iloc[-1] == pd.Timestamp("2026-11-06 05:00", tz="UTC")
    await socket.disconnect()


async def test_it_broadcasts_the_whitelist_when_it_changes(
    history, feed_token, producer
):
    _, worker = history
    socket, _ = await feed(feed_token[0])
    await request(socket, SUBSCRIBE)
    await publish(worker, [], whitelist=producer.pairs, seq=11)  # unchanged
    assert await socket.receive_nothing(timeout=0.2)
    await publish(worker, [], whitelist=["BTC/USDT"], seq=12)
    assert await receive(socket) == {"type": "whitelist", "data": ["BTC/USDT"]}
    await socket.disconnect()


async def test_it_encodes_each_broadcast_once_for_all_subscribers(
    history, feed_token, monkeypatch
):
    _, worker = history
    sockets = [(await feed(feed_token[0]))[0] for _ in range(3)]
    for socket in sockets:
        await request(socket, SUBSCRIBE)
    calls = count_encodes(monkeypatch)
    late = analysed_frame(rows=1, start="2026-11-06 05:00", seed=9)
    await publish(
        worker, [frame("ETH/USDT", late, full=False, new_candle=True)], seq=13
    )
    for socket in sockets:
        assert (await receive(socket))["type"] == "analyzed_df"
        await socket.disconnect()
    assert len(calls) == 1


async def test_it_caches_initial_replies_until_the_key_changes(
    history, feed_token, monkeypatch
):
    _, worker = history
    calls = count_encodes(monkeypatch)
    ask = {"type": "analyzed_df", "data": {"limit": 1500, "pair": "BTC/USDT"}}
    for _ in range(3):
        socket, _ = await feed(feed_token[0])
        await request(socket, ask)
        await receive(socket)
        await socket.disconnect()
    assert len(calls) == 1
    late = analysed_frame(rows=1, start="2026-11-06 05:00", seed=9)
    await publish(worker, [frame("BTC/USDT", late, full=False)], seq=14)
    socket, _ = await feed(feed_token[0])
    await request(socket, ask)
    await receive(socket)
    await socket.disconnect()
    assert len(calls) == 3  # one broadcast, one new reply


async def test_it_serves_only_the_token_s_own_producer(history, charlie):
    socket, _ = await feed(charlie[0])
    await request(socket, {"type": "whitelist"})
    assert (await receive(socket))["data"] == ["XRP/USDT"]
    await request(socket, {"type": "analyzed_df", "data": {"pair": "BTC/USDT"}})
    assert (await receive(socket))["data"]["df"].empty
    await socket.disconnect()


async def test_it_refuses_a_reply_over_the_message_size_limit(
    history, feed_token, settings
):
    settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB = 0  # every frame is too large
    socket, _ = await feed(feed_token[0])
    await request(socket, {"type": "analyzed_df", "data": {"pair": "BTC/USDT"}})
    message = await receive(socket)
    assert message["type"] == "exception" and "limit" in message["data"]
    await socket.disconnect()


async def test_it_closes_a_revoked_token_s_live_connections(feed_token, producer):
    from channels.layers import get_channel_layer

    from producers.groups import FEED_REVOKE, token_group

    plaintext, token = feed_token
    socket, _ = await feed(plaintext)  # subscribed to nothing: hears it all the same
    await get_channel_layer().group_send(
        token_group(token.pk),
        {"type": FEED_REVOKE, "token_ids": [token.pk], "reason": "revoked"},
    )
    output = await socket.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": 4001, "reason": "revoked"}


async def test_only_subscribed_sockets_are_in_the_producer_s_feed_group(
    producer, producer_key, feed_token, monkeypatch
):
    """A tick costs nothing for a socket that subscribed to nothing: the layer
    does not hand it the tick at all, until its first subscription."""
    from producers.feed import FeedSocket

    handled: list[str] = []
    original = FeedSocket.feed_tick

    async def counted(self, event):
        handled.append(self.channel_name)
        await original(self, event)

    monkeypatch.setattr(FeedSocket, "feed_tick", counted)
    worker, _ = await publisher(producer_key)
    idle, _ = await feed(feed_token[0])
    socket, _ = await feed(feed_token[0])
    await request(socket, SUBSCRIBE)

    async def tick(start: str) -> None:
        row = analysed_frame(rows=1, start=start)
        await publish(worker, [frame("BTC/USDT", row, full=False, new_candle=True)])
        assert (await receive(socket))["data"]["key"][0] == "BTC/USDT"

    await tick("2026-11-06 05:00")
    assert len(handled) == 1
    assert await idle.receive_nothing(timeout=0.2)
    await request(idle, SUBSCRIBE)
    await request(idle, {"type": "subscribe", "data": ["analyzed_df"]})
    await tick("2026-11-06 05:05")
    assert (await receive(idle))["data"]["key"][0] == "BTC/USDT"
    assert len(handled) == 3 and len(set(handled)) == 2
    await socket.disconnect()
    await idle.disconnect()
    await worker.disconnect()


async def test_it_delivers_a_candle_close_over_200_pairs_without_loss(
    producer, producer_key, feed_token
):
    """One publish carries every pair's new row: one layer message per socket."""
    pairs = [f"P{n}/USDT" for n in range(200)]
    worker, _ = await publisher(producer_key)
    socket, _ = await feed(feed_token[0])
    topics = ["whitelist", "analyzed_df", "new_candle"]
    await request(socket, {"type": "subscribe", "data": topics})
    row = analysed_frame(rows=1, start="2026-11-06 05:00")
    frames = [frame(pair, row, full=False, new_candle=True) for pair in pairs]
    assert (await publish(worker, frames, whitelist=pairs))["type"] == "ack"
    received = [await receive(socket) for _ in range(2 * len(pairs) + 1)]
    assert received[0] == {"type": "whitelist", "data": pairs}
    candles = [m["data"] for m in received if m["type"] == "new_candle"]
    assert [key[0] for key in candles] == pairs
    assert await socket.receive_nothing(timeout=0.2)
    await socket.disconnect()
    await worker.disconnect()


async def test_it_keeps_a_subscriber_past_the_layer_s_group_expiry(
    producer, producer_key, feed_token, settings
):
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["group_expiry"] = 2
    settings.CHANNEL_LAYERS, settings.CHANNEL_GROUP_EXPIRY = layers, 2
    worker, _ = await publisher(producer_key)
    socket, _ = await feed(feed_token[0])
    await request(socket, SUBSCRIBE)
    await asyncio.sleep(3)  # past the expiry; the socket re-joined meanwhile
    row = analysed_frame(rows=1, start="2026-11-06 05:00")
    await publish(worker, [frame("BTC/USDT", row, full=False, new_candle=True)])
    assert (await receive(socket))["data"]["key"][0] == "BTC/USDT"
    await socket.disconnect()
    await worker.disconnect()


### A socket lives only as long as its token


async def closed(socket, timeout: float = 3) -> dict:
    """The close the socket received (fails if it stays open ``timeout`` s)."""
    return await socket.receive_output(timeout=timeout)


async def test_it_closes_the_sockets_of_a_token_revoked_by_the_model(
    feed_token, charlie, producer
):
    plaintext, token = feed_token
    header, _ = await feed(plaintext, bearer=True)
    query, _ = await feed(plaintext)
    bystander, _ = await feed(charlie[0])
    await sync_to_async(token.revoke)()
    reason = f"token {token.prefix}… was revoked"
    for socket in (header, query):
        assert await closed(socket) == {
            "type": "websocket.close",
            "code": 4001,
            "reason": reason,
        }
    assert await bystander.receive_nothing(timeout=0.2)
    assert not (await feed(plaintext))[1]  # and the next handshake is refused
    await bystander.disconnect()


async def test_it_closes_the_sockets_of_a_token_revoked_in_the_admin(
    feed_token, admin_user
):
    from django.test import Client

    plaintext, token = feed_token
    socket, _ = await feed(plaintext)

    def revoke_in_the_admin():
        client = Client()
        client.force_login(admin_user)
        action = {"action": "revoke", "_selected_action": [token.pk]}
        return client.post("/admin/producers/feedtoken/", action, follow=True)

    response = await sync_to_async(revoke_in_the_admin)()
    assert "1 token(s) revoked" in response.content.decode()
    assert (await closed(socket))["code"] == 4001


async def test_it_closes_a_socket_at_the_moment_its_token_expires(producer):
    expires_at = timezone.now() + timedelta(seconds=1.5)
    token, plaintext = await sync_to_async(FeedToken.issue)(
        producer, "short-lived", expires_at=expires_at
    )
    socket, connected = await feed(plaintext)
    assert connected
    output = await closed(socket)
    late = (timezone.now() - expires_at).total_seconds()
    assert output == {
        "type": "websocket.close",
        "code": 4002,
        "reason": f"token {token.prefix}… expired",
    }
    assert 0 <= late < 0.5


async def test_it_closes_a_rotated_token_s_sockets_when_the_grace_ends(feed_token):
    plaintext, token = feed_token
    socket, _ = await feed(plaintext)
    successor, new_plaintext = await sync_to_async(token.rotate)(timedelta(seconds=1))
    assert await socket.receive_nothing(timeout=0.5)  # still within the grace
    assert (await closed(socket))["code"] == 4002
    fresh, connected = await feed(new_plaintext)
    assert connected
    await fresh.disconnect()


async def test_it_closes_at_once_when_the_expiry_is_moved_into_the_past(feed_token):
    plaintext, token = feed_token
    socket, _ = await feed(plaintext)
    await sync_to_async(token.set_expiry)(timezone.now() - timedelta(seconds=1))
    assert (await closed(socket, timeout=1))["code"] == 4002


async def test_it_keeps_the_socket_when_the_expiry_moves_later(feed_token):
    plaintext, token = feed_token
    await sync_to_async(token.set_expiry)(timezone.now() + timedelta(seconds=0.8))
    socket, _ = await feed(plaintext)
    await sync_to_async(token.set_expiry)(timezone.now() + timedelta(hours=1))
    assert await socket.receive_nothing(timeout=1.5)
    await socket.disconnect()


async def test_it_closes_the_sockets_of_a_deleted_token(feed_token):
    plaintext, token = feed_token
    socket, _ = await feed(plaintext)
    await sync_to_async(token.delete)()
    output = await closed(socket)
    assert (output["code"], output["reason"]) == (
        4001,
        f"token {token.prefix}… was deleted",
    )


async def test_it_finds_a_revocation_whose_message_was_lost(feed_token, settings):
    """A revocation written without a layer message (another process, Redis down)
    is found by the socket's periodic re-check."""
    settings.CANDLECAST_TOKEN_RECHECK_SECONDS = 0.5
    plaintext, token = feed_token
    socket, _ = await feed(plaintext)
    await FeedToken.objects.filter(pk=token.pk).aupdate(revoked_at=timezone.now())
    assert (await closed(socket))["code"] == 4001


async def test_it_refuses_a_token_revoked_while_its_handshake_ran(
    feed_token, monkeypatch
):
    """Revoked after the token check, before the socket joined its group: the
    layer message went to nobody, so the socket looks once more before accepting."""
    plaintext, token = feed_token

    def revoked_meanwhile(self, address=None):
        FeedToken.objects.filter(pk=self.pk).update(revoked_at=timezone.now())

    monkeypatch.setattr(FeedToken, "record_use", revoked_meanwhile)
    socket, connected = await feed(plaintext)
    assert not connected


async def test_it_throttles_the_feed_and_says_so_once_per_window(
    feed_token, settings, caplog
):
    settings.CANDLECAST_AUTH_FAILURES_PER_WINDOW = 2
    before = hub_counters.counters.refused["throttled"]
    for _ in range(5):
        assert not (await feed("ccf_wrongwrongwrongwrongwrong"))[1]
    refused = [r for r in caplog.records if "feed: refused" in r.getMessage()]
    throttled = [r for r in caplog.records if "throttling" in r.getMessage()]
    assert len(refused) == 2 and len(throttled) == 1
    assert "2 failed attempts within 60 s" in throttled[0].getMessage()
    assert hub_counters.counters.refused["throttled"] == before + 3
    assert (await feed(feed_token[0]))[1], "a valid token is still accepted"


async def test_it_logs_a_client_s_bad_requests_once(feed_token, caplog):
    socket, _ = await feed(feed_token[0])
    with caplog.at_level(logging.INFO, logger="producers.feed"):
        for _ in range(3):
            await socket.send_to(text_data="{not json")
            assert (await receive(socket))["type"] == "exception"
    assert caplog.text.count("bad request") == 1
    await socket.disconnect()


async def test_it_answers_a_deeply_nested_request_and_keeps_the_socket(feed_token):
    """A value deeper than orjson encodes once killed the socket with 1006."""
    socket, _ = await feed(feed_token[0])
    nested = "[" * 1000 + "]" * 1000
    await socket.send_to(text_data='{"type":"subscribe","data":[' + nested + "]}")
    reply = await receive(socket)
    assert reply["type"] == "exception"
    assert "a list too deep or too odd to quote" in reply["data"]
    await request(socket, {"type": "whitelist"})
    assert (await receive(socket))["type"] == "whitelist"
    await socket.disconnect()


async def test_it_names_a_few_unknown_topics_escaped(feed_token):
    socket, _ = await feed(feed_token[0])
    topics = ["<script>\n"] + [f"t{i}" for i in range(10)]
    await request(socket, {"type": "subscribe", "data": topics})
    reply = (await receive(socket))["data"]
    assert reply.startswith("Unknown topic(s) <script>\\n, t0, t1 and 8 more:")
    await socket.disconnect()
