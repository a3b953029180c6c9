"""The relay: a producer whose frames come from an existing FreqTrade bot.

The definition (model, admin, config API), the upstream status endpoint and its
display, and producers.relay against a fake FreqTrade bot and a fake hub, both
`websockets` servers on 127.0.0.1 port 0.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from pandas.testing import assert_frame_equal
from websockets.asyncio.server import serve

from controlplane.lib import counters
from controlplane.lib.contracts import ProducerDefinition
from controlplane.lib.wire import freqtrade, publish
from controlplane.lib.wire.columns import encode_row_json
from controlplane.overview import build_status_snapshot
from producers import relay
from producers.models import Producer
from producers.worker import WorkerConfig
from tests.statuskit import fresh_counters

HOST = {"HTTP_HOST": "127.0.0.1:8000"}
BOT_TOKEN = "bot-Token_1.x~"
PAIRS = ["BTC/USDT", "ETH/USDT"]
STEP = pd.Timedelta(minutes=5)
T0 = pd.Timestamp("2026-11-01T00:00:00", tz="UTC")


@pytest.fixture(autouse=True)
def _fresh_counters():
    fresh_counters()
    yield
    fresh_counters()


### The definition


@pytest.fixture
def relayed(db) -> Producer:
    producer = Producer(
        name="relayed",
        source=Producer.Source.FREQTRADE,
        pairs=[],
        upstream_host="127.0.0.1",
        upstream_port=8080,
    )
    producer.set_upstream_token(BOT_TOKEN)
    producer.full_clean()
    producer.save()
    return producer


def report(**changes) -> dict:
    document = {
        "url": "ws://127.0.0.1:8080/api/v1/message/ws",
        "connected": True,
        "since": "2026-11-01T10:00:00+00:00",
        "reconnects": 0,
        "last_error": None,
        "refused": False,
        "mismatch": None,
        "whitelist": PAIRS,
        "pairs_held": 2,
        "newest_candle": "2026-11-01T10:00:00+00:00",
    }
    return {**document, **changes}


def test_it_requires_the_bot_s_host_and_ws_token(db):
    producer = Producer(name="bare", source=Producer.Source.FREQTRADE)
    with pytest.raises(ValidationError) as refused:
        producer.full_clean()
    assert "needs that bot's host and ws_token" in str(refused.value)


def test_it_still_requires_pairs_for_a_producer_that_runs_a_strategy(db):
    with pytest.raises(ValidationError) as refused:
        Producer(name="empty", pairs=[]).full_clean()
    assert "Give at least one pair" in str(refused.value)


def test_it_refuses_a_ws_token_freqtrade_cannot_put_into_a_url(db):
    with pytest.raises(ValidationError, match="URL-safe"):
        Producer(name="x").set_upstream_token("a&b c")


def test_it_keeps_the_bot_s_ws_token_encrypted(relayed):
    stored = Producer.objects.get(pk=relayed.pk)
    assert BOT_TOKEN not in stored.upstream_token_encrypted
    assert stored.upstream_token() == BOT_TOKEN


def test_it_hands_the_upstream_to_the_producer_s_worker(client, relayed):
    key = relayed.issue_key()
    response = client.get(
        "/api/v1/producers/relayed/config", HTTP_AUTHORIZATION=f"Bearer {key}", **HOST
    )
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "freqtrade" and body["pairs"] == []
    assert body["upstream"] == {
        "host": "127.0.0.1",
        "port": 8080,
        "secure": False,
        "ws_token": BOT_TOKEN,
    }


def test_it_never_hands_the_upstream_to_another_producer_s_key(client, relayed):
    other = Producer.objects.create(name="charlie", pairs=["XRP/USDT"])
    response = client.get(
        "/api/v1/producers/relayed/config",
        HTTP_AUTHORIZATION=f"Bearer {other.issue_key()}",
        **HOST,
    )
    assert response.status_code == 403
    assert BOT_TOKEN not in response.content.decode()


def test_it_takes_the_bot_s_ws_token_write_only_in_the_admin(client, db):
    get_user_model().objects.create_superuser("admin", "a@example.org", "pw")
    client.login(username="admin", password="pw")
    form = {
        "name": "viaadmin",
        "enabled": "on",
        "timeframe": "5m",
        "candle_type": "spot",
        "pairs": "",
        "strategy": "producers.strategies.sample.SampleStrategy",
        "source": "freqtrade",
        "source_options": "{}",
        "history": "1500",
        "upstream_host": "bot.example.org",
        "upstream_port": "8080",
        "upstream_token": BOT_TOKEN,
    }
    response = client.post("/admin/producers/producer/add/", form, **HOST)
    assert response.status_code in (200, 302)
    producer = Producer.objects.get(name="viaadmin")
    assert producer.upstream_token() == BOT_TOKEN
    page = client.get(f"/admin/producers/producer/{producer.pk}/change/", **HOST)
    assert page.status_code == 200
    assert BOT_TOKEN not in page.content.decode()
    assert "stored (encrypted)" in page.content.decode()


def test_it_explains_a_freqtrade_source_without_a_token_in_the_admin(client, db):
    get_user_model().objects.create_superuser("admin", "a@example.org", "pw")
    client.login(username="admin", password="pw")
    form = {
        "name": "notoken",
        "timeframe": "5m",
        "candle_type": "spot",
        "strategy": "producers.strategies.sample.SampleStrategy",
        "source": "freqtrade",
        "source_options": "{}",
        "history": "1500",
        "upstream_host": "bot.example.org",
        "upstream_port": "8080",
    }
    response = client.post("/admin/producers/producer/add/", form, **HOST)
    assert response.status_code == 200
    assert "needs that bot&#x27;s ws_token" in response.content.decode()
    assert not Producer.objects.filter(name="notoken").exists()


### The upstream status endpoint and the status page


def post_status(client, producer: Producer, key: str, body) -> object:
    return client.post(
        f"/api/v1/producers/{producer.name}/status",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
        **HOST,
    )


def test_it_records_the_relay_s_report(client, relayed):
    response = post_status(client, relayed, relayed.issue_key(), report())
    assert response.status_code == 204
    assert relayed.last_upstream_status()["status"] == report()


def test_it_refuses_a_report_with_another_producer_s_key(client, relayed):
    other = Producer.objects.create(name="charlie", pairs=["XRP/USDT"])
    response = post_status(client, relayed, other.issue_key(), report())
    assert response.status_code == 403
    assert relayed.last_upstream_status() is None


def test_it_says_what_is_wrong_with_a_report(client, relayed):
    response = post_status(client, relayed, relayed.issue_key(), report(reconnects=-1))
    assert response.status_code == 400
    assert "'reconnects' must be a count" in response.json()["error"]


def row_of(name: str = "relayed") -> dict:
    return next(p for p in build_status_snapshot()["producers"] if p["name"] == name)


def test_it_shows_the_bot_connected_and_its_whitelisted_pairs(relayed):
    relayed.record_upstream_status(report())
    row = row_of()
    assert row["upstream"]["state"] == "connected"
    assert row["upstream"]["pairs_held"] == 2
    assert [p["pair"] for p in row["pairs"]] == PAIRS


@pytest.mark.parametrize(
    "changes, state, words",
    [
        (
            {"connected": False, "last_error": "cannot connect (refused)"},
            "down",
            "is unreachable for",
        ),
        (
            {"connected": False, "refused": True, "last_error": "HTTP 403"},
            "refused",
            "refused the ws_token: enter its api_server.ws_token again",
        ),
        (
            {"mismatch": "the bot sends 1h spot; the producer is defined as 5m spot"},
            "mismatch",
            "the bot sends 1h spot; the producer is defined as 5m spot",
        ),
    ],
)
def test_it_says_in_words_why_the_bot_serves_nothing(relayed, changes, state, words):
    relayed.record_upstream_status(report(**changes))
    row = row_of()
    assert row["upstream"]["state"] == state
    assert words in row["upstream"]["reason"]


def test_it_shows_a_connected_relay_offline_while_its_bot_is_down(relayed):
    """The relay holds its publish socket, but nothing new can come."""
    counters.producer_connected("relayed", "channel-1", "127.0.0.1")
    relayed.record_upstream_status(report())
    assert row_of()["state"] == "online"
    relayed.record_upstream_status(report(connected=False, last_error="gone"))
    row = row_of()
    assert row["state"] == "offline"
    assert row["reason"].startswith("the FreqTrade bot at ws://127.0.0.1:8080")
    assert "is unreachable" in row["reason"] and "(gone)" in row["reason"]
    problems = build_status_snapshot()["problems"]
    assert any("Producer relayed is offline" in line for line in problems)


def test_it_says_when_the_relay_has_not_reported_yet(relayed):
    assert row_of()["upstream"]["state"] == "unknown"
    assert "has not reported" in row_of()["upstream"]["reason"]


def test_it_shows_no_upstream_for_a_producer_that_runs_a_strategy(producer):
    assert row_of("alpha")["upstream"] is None


def test_it_renders_the_upstream_on_the_status_page(client, relayed):
    get_user_model().objects.create_superuser("admin", "a@example.org", "pw")
    client.login(username="admin", password="pw")
    relayed.record_upstream_status(report(connected=False, last_error="gone away"))
    page = client.get("/status/", **HOST).content.decode()
    assert "FreqTrade bot" in page and "gone away" in page


### The relay against a fake FreqTrade bot and a fake hub


def analysed(rows: int, start: pd.Timestamp = T0, seed: int = 1) -> pd.DataFrame:
    """A frame shaped like a FreqTrade strategy's, with its awkward dtypes."""
    rng = np.random.default_rng(seed)
    close = 100 + rng.standard_normal(rows).cumsum()
    frame = pd.DataFrame(
        {
            "date": pd.date_range(start, periods=rows, freq="5min", unit="us"),
            "open": close,
            "close": close * 1.001,
            "volume": rng.uniform(1, 2, rows),
            "rsi_zone": np.select([close < 100], [-1.0], 0.0),  # whole floats
            "vol_up": close > 100,
            "trend": np.sign(close - 100).astype("int64"),
            "enter_tag": np.where(close < 99, "dip", ""),
            "enter_long": np.where(close < 99, 1.0, np.nan),
        }
    )
    return frame


def freqtrade_json(df: pd.DataFrame) -> str:
    """The frame as FreqTrade's producer writes it (misc.dataframe_to_json)."""
    out = df.copy()
    out["date"] = out["date"].astype("datetime64[ms, UTC]").astype("int64")
    return out.to_json(orient="split")


class FakeBot:
    """A FreqTrade bot's message websocket: whitelist, analyzed_df, broadcasts."""

    def __init__(self, frames: dict[str, pd.DataFrame], key=("5m", "spot")) -> None:
        self.frames, self.key = frames, key
        self.sockets: set = set()
        self.connections = 0

    def message(self, pair: str, df: pd.DataFrame) -> str:
        data = {
            "key": [pair, *self.key],
            "df": {"__type__": "dataframe", "__value__": freqtrade_json(df)},
            "la": datetime.now(UTC).isoformat(),
        }
        return json.dumps({"type": "analyzed_df", "data": data})

    async def handler(self, ws) -> None:
        self.connections += 1
        self.sockets.add(ws)
        try:
            async for text in ws:
                request = json.loads(text)
                if request["type"] == "whitelist":
                    await ws.send(json.dumps({"type": "whitelist", "data": self.pairs}))
                elif request["type"] == "analyzed_df":
                    limit = request["data"]["limit"]
                    for pair in [request["data"]["pair"] or p for p in self.pairs]:
                        await ws.send(self.message(pair, self.frames[pair][-limit:]))
        finally:
            self.sockets.discard(ws)

    @property
    def pairs(self) -> list[str]:
        return list(self.frames)

    async def new_candle(self) -> None:
        """Every pair gets one new analysed row, broadcast pair after pair."""
        for pair, frame in self.frames.items():
            row = analysed(1, frame["date"].iloc[-1] + STEP, seed=len(frame))
            self.frames[pair] = pd.concat([frame, row], ignore_index=True)
            for ws in list(self.sockets):
                await ws.send(self.message(pair, row))


class FakeHub:
    """The hub's publish socket: acknowledges and keeps every publish message."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.received: list[float] = []

    async def handler(self, ws) -> None:
        async for text in ws:
            message = publish.parse_publish(text)
            self.received.append(time.monotonic())
            self.messages.append(message)
            await ws.send(publish.ack_message(message["seq"]))

    def frames(self) -> list[publish.PublishFrame]:
        return [f for m in self.messages for f in m["data"]["frames"]]

    def whitelists(self) -> list[list[str]]:
        return [
            m["data"]["whitelist"]
            for m in self.messages
            if m["data"]["whitelist"] is not None
        ]


async def until(what: str, predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.01)


@pytest.fixture
async def servers(monkeypatch):
    """A fake bot and a fake hub; reports go to a list instead of the hub."""
    reports: list[dict] = []
    monkeypatch.setattr(
        relay, "call_api", lambda url, key, body, **_: reports.append(json.loads(body))
    )
    bot = FakeBot({pair: analysed(150, seed=i) for i, pair in enumerate(PAIRS)})
    hub = FakeHub()
    async with (
        serve(bot.handler, "127.0.0.1", 0) as bot_server,
        serve(hub.handler, "127.0.0.1", 0) as hub_server,
    ):
        bot.port = bot_server.sockets[0].getsockname()[1]
        hub.port = hub_server.sockets[0].getsockname()[1]
        yield bot, hub, reports


def definition(bot: FakeBot, **changes) -> dict:
    document = {
        "name": "relayed",
        "timeframe": "5m",
        "candle_type": "spot",
        "pairs": [],
        "strategy": "producers.strategies.sample.SampleStrategy",
        "source": "freqtrade",
        "source_options": {},
        "history": 1500,
        "upstream": {
            "host": "127.0.0.1",
            "port": bot.port,
            "secure": False,
            "ws_token": BOT_TOKEN,
        },
    }
    return {**document, **changes}


async def running(hub: FakeHub, document: dict):
    config = WorkerConfig(
        name="relayed",
        hub_url=f"http://127.0.0.1:{hub.port}",
        key="ccp_test",
        backoff_initial=0.05,
    )
    stop = asyncio.Event()
    definition = ProducerDefinition.from_document(document)
    task = asyncio.create_task(relay.run(config, definition, stop))
    return stop, task


def decoded(frame: publish.PublishFrame) -> pd.DataFrame:
    """A publish frame as the hub serves it to a candlecast consumer."""
    rows = [encode_row_json(row) for row in frame["rows"]]
    split = freqtrade.split_document(frame["columns"], rows, 0)
    return freqtrade.decode_rows(split).frame()


async def test_it_publishes_the_history_then_one_message_per_candle(servers):
    bot, hub, _ = servers
    stop, task = await running(hub, definition(bot))
    try:
        await until("history", lambda: len(hub.frames()) == 2)
        assert hub.whitelists() == [PAIRS]
        assert all(f["full"] and len(f["rows"]) == 150 for f in hub.frames())
        before = len(hub.messages)
        await bot.new_candle()
        await until("the tick", lambda: len(hub.frames()) == 4)
        tick = hub.messages[before:]
        assert len(tick) == 1, "the pairs' rows went out as one message"
        frames = tick[0]["data"]["frames"]
        assert [f["key"][0] for f in frames] == PAIRS
        assert all(len(f["rows"]) == 1 and f["new_candle"] for f in frames)
        assert all(not f["full"] for f in frames)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 5) == 0


async def test_it_passes_columns_values_and_dtypes_through(servers):
    """Our decoder keeps what the bot had; FreqTrade's read_json sees what it would
    have seen from the bot itself."""
    bot, hub, _ = servers
    stop, task = await running(hub, definition(bot))
    try:
        await until("history", lambda: len(hub.frames()) == 2)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    frame = hub.frames()[0]
    original = bot.frames[frame["key"][0]]
    ours = decoded(frame)
    assert list(ours.columns) == list(original.columns)
    assert_frame_equal(ours, original, check_exact=False, rtol=0, atol=1e-10)
    rows = [encode_row_json(row) for row in frame["rows"]]
    via_hub = freqtrade.split_document(frame["columns"], rows, 0).decode()
    freqtrade_view = pd.read_json(io.StringIO(via_hub), orient="split")
    direct = pd.read_json(io.StringIO(freqtrade_json(original)), orient="split")
    assert dict(freqtrade_view.dtypes) == dict(direct.dtypes)
    assert_frame_equal(freqtrade_view, direct, check_exact=False, atol=1e-10)


async def test_it_relays_only_the_producer_s_pairs(servers):
    bot, hub, _ = servers
    stop, task = await running(hub, definition(bot, pairs=["ETH/USDT"]))
    try:
        await until("history", lambda: len(hub.frames()) == 1)
        await bot.new_candle()
        await until("the tick", lambda: len(hub.frames()) == 2)
        await asyncio.sleep(0.2)  # nothing more comes: the other pair is not relayed
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert {tuple(f["key"]) for f in hub.frames()} == {("ETH/USDT", "5m", "spot")}
    assert hub.whitelists() == [["ETH/USDT"]]


async def test_it_reports_a_timeframe_mismatch_and_publishes_none_of_it(
    servers, caplog
):
    bot, hub, reports = servers
    bot.key = ("1h", "spot")
    stop, task = await running(hub, definition(bot))
    try:
        await until(
            "a report of the mismatch", lambda: reports and reports[-1]["mismatch"]
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    expected = (
        "the bot sends 1h spot; the producer is defined as 5m spot: edit the producer"
    )
    assert reports[-1]["mismatch"] == expected
    assert expected in caplog.text
    assert hub.frames() == []


async def test_it_fills_the_candles_missed_while_the_bot_was_away(servers):
    bot, hub, reports = servers
    stop, task = await running(hub, definition(bot))
    try:
        await until("history", lambda: len(hub.frames()) == 2)
        for ws in list(bot.sockets):
            await ws.close()
        await until(
            "the relay saw it", lambda: reports and not reports[-1]["connected"]
        )
        await bot.new_candle()  # broadcast to nobody: missed
        await bot.new_candle()
        await until("reconnected", lambda: bot.connections == 2 and bot.sockets)
        await until("the bot's history again", lambda: len(hub.frames()) == 4)
        await bot.new_candle()
        await until("the tick", lambda: len(hub.frames()) == 6)
        await until("connected", lambda: reports[-1]["connected"])
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert reports[-1]["reconnects"] == 1
    for pair in PAIRS:
        hub_rows = [f for f in hub.frames() if f["key"][0] == pair]
        assert [len(f["rows"]) for f in hub_rows] == [150, 152, 1]
        assert (
            decoded(hub_rows[1])["date"].iloc[-1] == bot.frames[pair]["date"].iloc[-2]
        )


async def test_it_reports_a_refused_token(servers):
    bot, hub, reports = servers

    async def refuse(connection, request):
        return connection.respond(403, "bad token\n")

    async with serve(bot.handler, "127.0.0.1", 0, process_request=refuse) as server:
        bot.port = server.sockets[0].getsockname()[1]
        stop, task = await running(hub, definition(bot))
        try:
            await until("refused", lambda: reports and reports[-1]["refused"])
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
    assert "refused our token: HTTP 403" in reports[-1]["last_error"]
    assert hub.frames() == []


async def test_it_measures_what_gathering_a_tick_costs(servers, caplog):
    """Prints the latency from the bot's first broadcast to the hub's publish, and
    how long the tick's first row waited for the others (figures only: no timing
    assertion on a shared machine)."""
    caplog.set_level(logging.DEBUG, logger="producers.relay")
    bot, hub, _ = servers
    stop, task = await running(hub, definition(bot))
    latencies = []
    try:
        await until("history", lambda: len(hub.frames()) == 2)
        for count in range(10):
            started, expected = time.monotonic(), 4 + 2 * count
            await bot.new_candle()
            await until("the tick", lambda n=expected: len(hub.frames()) == n)
            latencies.append(hub.received[-1] - started)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert [len(m["data"]["frames"]) for m in hub.messages[-10:]] == [2] * 10
    waited = [int(ms) for ms in re.findall(r"2 updates .*waited (\d+) ms", caplog.text)]
    print(
        f"\nrelay, 2 pairs: bot's first broadcast -> hub publish median "
        f"{np.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
        f"first row waited for the tick median {np.median(waited):.0f} ms, "
        f"max {max(waited)} ms"
    )
