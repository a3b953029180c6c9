"""ProducerClient against a fake producer on 127.0.0.1:0 speaking the feed protocol."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import numpy as np
import orjson
import pandas as pd
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from controlplane.lib import backoff as backoff_module
from controlplane.lib.backoff import Backoff
from controlplane.lib.contracts import ConsumerSettings, Follow
from controlplane.lib.feedclient import dispatch as dispatch_module
from controlplane.lib.feedclient.client import ProducerClient, link_backoff
from controlplane.lib.feedclient.framestore import FrameStore
from controlplane.lib.wire import freqtrade
from controlplane.lib.wire.columns import encode_row_json
from tests.feeds import json_rows

PAIRS = ("BTC/USDT", "ETH/USDT")
LA = datetime(2026, 11, 25, 10, 16, tzinfo=UTC)
START = pd.Timestamp("2026-11-01", tz="UTC")
STEP = pd.Timedelta("5min")
TIMEOUT = 2.0


def candles(rows: int, first: int = 0, seed: int = 1) -> pd.DataFrame:
    """An analysed frame: candle n opens at START + n * 5 minutes."""
    rng = np.random.default_rng(seed + first)
    close = 100 + rng.standard_normal(rows).cumsum()
    df = pd.DataFrame(
        {
            "date": pd.date_range(START + first * STEP, periods=rows, freq=STEP),
            "open": close + 0.1,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume": rng.uniform(1, 1000, rows),
            "rsi": rng.uniform(0, 100, rows),
        }
    )
    df["enter_long"] = np.where(df["rsi"] < 20, 1.0, np.nan)
    df["exit_long"] = np.nan
    df["enter_tag"] = np.where(df["rsi"] < 20, "rsi_low", "")
    return df


def frame_message(
    pair: str, df: pd.DataFrame, first_index: int = 0, timeframe: str = "5m"
) -> str:
    """An analyzed_df frame exactly as a producer sends it
    (controlplane.lib.wire.protocol)."""
    columns, rows = json_rows(df)
    rows_json = [encode_row_json(row) for row in rows]
    document = freqtrade.split_document(columns, rows_json, first_index)
    return freqtrade.analyzed_df_message((pair, timeframe, "spot"), document, LA)


@dataclass
class Link:
    """One accepted connection as the fake producer saw it."""

    path: str
    headers: Any
    at: float
    ws: ServerConnection
    requests: list[dict] = field(default_factory=list)


class FakeProducer:
    """A feed on 127.0.0.1:0 answering whitelist and analyzed_df like FreqTrade.

    Knobs: ``refuse`` (HTTP status for every handshake), ``answer_gaps`` (reply to
    per-pair requests), ``drop_after_opening`` (connections to close once the three
    opening requests arrived), ``oversize`` (replies to send as a too-big frame).
    """

    def __init__(self, rows: int = 200, pairs: tuple[str, ...] = PAIRS) -> None:
        self.frames = {pair: candles(rows, seed=i) for i, pair in enumerate(pairs)}
        self.whitelist = list(pairs)
        self.links: list[Link] = []
        self.refused: list[float] = []
        self.refuse: int | None = None
        self.answer_gaps = True
        self.drop_after_opening = 0
        self.oversize = 0
        self.close_codes: list[int | None] = []
        # Called between two pairs' opening replies, e.g. to broadcast a candle.
        self.between_replies: Any = None

    async def __aenter__(self) -> FakeProducer:
        self._server = await serve(
            self._serve,
            "127.0.0.1",
            0,
            process_request=self._check,
            compression=None,
            max_size=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    def _check(self, connection: ServerConnection, request: Any) -> Any:
        if self.refuse is not None:
            self.refused.append(time.monotonic())
            return connection.respond(HTTPStatus(self.refuse), "refused\n")
        return None

    async def _serve(self, ws: ServerConnection) -> None:
        link = Link(ws.request.path, ws.request.headers, time.monotonic(), ws)
        self.links.append(link)
        try:
            async for text in ws:
                request = orjson.loads(text)
                link.requests.append(request)
                await self._answer(ws, link, request)
        except ConnectionClosed:
            pass  # the client's close code is what the tests look at
        finally:
            self.close_codes.append(ws.close_code)

    async def _answer(self, ws: ServerConnection, link: Link, request: dict) -> None:
        if request["type"] == "whitelist":
            await ws.send(freqtrade.whitelist_message(self.whitelist))
        elif request["type"] == "analyzed_df":
            data = request.get("data") or {}
            if data.get("pair") is None:
                await self._initial(ws, link, data.get("limit"))
            elif self.answer_gaps:
                await self.send_tail(ws, data["pair"], data.get("limit"))

    async def _initial(self, ws: ServerConnection, link: Link, limit: Any) -> None:
        if self.drop_after_opening:
            self.drop_after_opening -= 1
            await ws.close(1000)
            return
        if self.oversize:
            self.oversize -= 1
            await ws.send('{"type":"analyzed_df","data":"' + "x" * (1 << 20) + '"}')
            return
        for index, pair in enumerate(self.whitelist):
            if index and self.between_replies is not None:
                await self.between_replies(ws)
            await self.send_tail(ws, pair, limit)

    async def send_tail(self, ws: ServerConnection, pair: str, limit: Any) -> None:
        df = self.frames[pair]
        rows = df if not limit else df.tail(int(limit))
        await ws.send(frame_message(pair, rows, len(df) - len(rows)))

    @property
    def link(self) -> Link:
        return self.links[-1]

    def follow(self, kind: str = "candlecast", token: str = "tok-1") -> Follow:
        return Follow("default", kind, "127.0.0.1", self.port, False, token)

    def append_candles(self, pair: str, count: int) -> pd.DataFrame:
        """Extend a pair's history by ``count`` candles; returns the new rows."""
        df = self.frames[pair]
        new = candles(count, first=len(df), seed=99)
        self.frames[pair] = pd.concat([df, new], ignore_index=True)
        return new


async def eventually(predicate: Any, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:.1f} s")
        await asyncio.sleep(0.01)


def fast(**overrides: Any) -> ConsumerSettings:
    values = {"sleep_time": 0.05, "wait_timeout": 5.0, "ping_timeout": 1.0}
    return ConsumerSettings(**{**values, **overrides})


@contextlib.asynccontextmanager
async def following(follow: Follow, settings: ConsumerSettings, store=None):
    client = ProducerClient(follow, settings, store or FrameStore())
    task = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        await client.close()
        await asyncio.wait_for(task, TIMEOUT)


def loaded(client: ProducerClient, pairs=PAIRS) -> bool:
    return all(client.store.get((p, "5m", "spot")) is not None for p in pairs)


def stored(client: ProducerClient, pair: str = "BTC/USDT") -> pd.DataFrame:
    return client.store.get((pair, "5m", "spot"))[0]


### The handshake and the opening sequence


async def test_it_sends_the_opening_sequence_with_the_initial_candle_limit():
    async with (
        FakeProducer() as fake,
        following(fake.follow(), fast(initial_candle_limit=50)) as client,
    ):
        await eventually(lambda: loaded(client))
        assert fake.link.requests[:3] == [
            {"type": "subscribe", "data": ["whitelist", "analyzed_df"]},
            {"type": "whitelist"},
            {"type": "analyzed_df", "data": {"limit": 50, "pair": None}},
        ]
        assert len(stored(client)) == 50
        assert client.store.whitelist == list(PAIRS)


async def test_it_sends_a_candlecast_token_as_a_bearer_header_only():
    async with FakeProducer() as fake, following(fake.follow(), fast()):
        await eventually(lambda: fake.links)
        headers = fake.link.headers
        assert headers["Authorization"] == "Bearer tok-1"
        assert fake.link.path == "/api/v1/message/ws"
        assert "Origin" not in headers
        assert "Sec-WebSocket-Extensions" not in headers  # compression=None


async def test_it_url_encodes_a_freqtrade_token_in_the_query():
    token = "a&b=c+/ d"
    async with (
        FakeProducer() as fake,
        following(fake.follow("freqtrade", token), fast()),
    ):
        await eventually(lambda: fake.links)
        path = fake.link.path
        assert path == "/api/v1/message/ws?token=a%26b%3Dc%2B%2F%20d"
        assert unquote(path.split("token=", 1)[1]) == token
        assert "Authorization" not in fake.link.headers


async def test_it_asks_for_the_whole_frame_when_the_limit_is_zero():
    async with (
        FakeProducer(rows=300) as fake,
        following(fake.follow(), fast(initial_candle_limit=0)) as client,
    ):
        await eventually(lambda: loaded(client))
        assert fake.link.requests[2]["data"] == {"limit": 0, "pair": None}
        assert len(stored(client)) == 300


### Gap fills


async def test_it_requests_a_one_candle_hole_with_freqtrade_s_limit():
    async with FakeProducer() as fake, following(fake.follow(), fast()) as client:
        await eventually(lambda: loaded(client))
        fake.append_candles("BTC/USDT", 2)
        df = fake.frames["BTC/USDT"]
        await fake.link.ws.send(frame_message("BTC/USDT", df.tail(1), len(df) - 1))
        await eventually(lambda: len(stored(client)) == 202)
        gap = fake.link.requests[3]
        assert gap == {"type": "analyzed_df", "data": {"limit": 3, "pair": "BTC/USDT"}}
        dates = stored(client)["date"]
        assert (dates.diff().dropna() == STEP).all()


async def test_it_resends_an_unanswered_request_after_a_reconnect():
    async with FakeProducer() as fake, following(fake.follow(), fast()) as client:
        await eventually(lambda: loaded(client))
        fake.answer_gaps = False
        fake.append_candles("ETH/USDT", 3)
        df = fake.frames["ETH/USDT"]
        await fake.link.ws.send(frame_message("ETH/USDT", df.tail(1), len(df) - 1))
        await eventually(lambda: len(fake.link.requests) == 4)
        assert client.store.outstanding()
        fake.answer_gaps = True
        await fake.link.ws.close(1011)
        await eventually(lambda: len(fake.links) == 2 and len(fake.link.requests) >= 4)
        second = fake.link.requests
        assert second[3] == {
            "type": "analyzed_df",
            "data": {"limit": 4, "pair": "ETH/USDT"},
        }
        await eventually(lambda: not client.store.outstanding())


async def test_it_asks_for_the_history_of_pairs_listed_after_an_empty_whitelist():
    """A producer with no pairs yet answers the opening with ``[]``: the pairs it
    lists later were never asked for, so their first 1-row broadcast must not be
    taken for their whole history (the relay's consumers once kept 45 of 346 rows)."""
    async with FakeProducer() as fake:
        fake.whitelist = []
        async with following(fake.follow(), fast()) as client:
            await eventually(lambda: fake.links and len(fake.link.requests) == 3)
            fake.whitelist = list(PAIRS)
            await fake.link.ws.send(freqtrade.whitelist_message(PAIRS))
            for pair in PAIRS:
                df = fake.frames[pair]
                await fake.link.ws.send(frame_message(pair, df.tail(1), len(df) - 1))
            await eventually(lambda: loaded(client))
            for pair in PAIRS:
                assert len(stored(client, pair)) == 200
            asked = [r["data"] for r in fake.link.requests[3:]]
            assert asked == [{"limit": 1500, "pair": pair} for pair in PAIRS]


async def test_a_candle_that_overtakes_its_pair_s_reply_does_not_load_the_pair():
    """A candle closing while the hub answers the opening request reaches a pair
    whose reply is still to come: that one row must not count the pair as loaded
    (an end-to-end test saw "all pairs loaded" with 1 row). The reply, read after
    the candle, holds it and loads the pair."""
    released = asyncio.Event()
    async with FakeProducer() as fake:
        second = PAIRS[1]
        fake.append_candles(second, 1)

        async def candle_then_wait(ws: ServerConnection) -> None:
            df = fake.frames[second]
            await ws.send(frame_message(second, df.tail(1), len(df) - 1))
            await released.wait()

        fake.between_replies = candle_then_wait
        async with following(fake.follow(), fast()) as client:
            key = (second, "5m", "spot")
            try:
                await eventually(lambda: client.store.get(key) is not None)
                assert client.requests.asked(second)  # still waiting for its reply
                assert second not in client.dispatch.progress.rows
            finally:
                released.set()
            await eventually(lambda: not client.requests.asked(second))
            assert len(stored(client, second)) == 201
            assert client.dispatch.progress.done
            assert len(fake.link.requests) == 3  # nothing asked twice


### Reconnects


async def test_it_waits_before_reconnecting_after_a_dropped_connection():
    """FreqTrade reconnects at once (thousands a second); we back off, and more each
    time a fresh link dies young."""
    async with FakeProducer() as fake:
        fake.drop_after_opening = 3
        async with following(fake.follow(), fast(sleep_time=0.15)) as client:
            await eventually(lambda: loaded(client), timeout=3)
        gaps = [b.at - a.at for a, b in zip(fake.links, fake.links[1:], strict=False)]
        assert len(fake.links) == 4
        assert gaps[0] >= 0.15 * 0.8
        assert gaps[1] >= 0.30 * 0.8  # doubled
        assert client.reconnects == 3
        assert "code 1000" in client.last_error


async def test_it_retries_a_refused_token_slowly_and_says_what_to_do(caplog):
    async with FakeProducer() as fake:
        fake.refuse = 403
        async with following(fake.follow(), fast(sleep_time=0.05)) as client:
            await eventually(lambda: len(fake.refused) >= 2)
            assert not client.connected
        # At the cap (10 x sleep_time) straight away, not sleep_time.
        assert fake.refused[1] - fake.refused[0] >= 0.5 * 0.8
        assert "refused our token: HTTP 403" in client.last_error
        assert "check the token in the admin" in caplog.text


async def test_it_tells_a_server_error_from_a_refusal_and_retries_it(caplog):
    """A hub whose Redis is down answers the handshake with 500: not our token."""
    async with FakeProducer() as fake:
        fake.refuse = 500
        async with following(fake.follow(), fast(sleep_time=0.05)) as client:
            await eventually(lambda: len(fake.refused) >= 2)
        assert fake.refused[1] - fake.refused[0] < 0.5 * 0.8  # not at the cap
        assert "failed to open the connection: HTTP 500 (refused)" in client.last_error
        assert "Redis or database is down" in caplog.text
        assert "refused the connection" not in caplog.text


async def test_it_does_not_loop_on_a_frame_over_the_size_limit(caplog):
    async with FakeProducer() as fake:
        fake.oversize = 1
        settings = fast(message_size_limit=1, sleep_time=0.05)
        async with following(fake.follow(), settings) as client:
            await eventually(lambda: loaded(client))
            await asyncio.sleep(0.3)
        assert len(fake.links) == 2
        assert fake.close_codes[0] == 1009
        assert fake.links[1].at - fake.links[0].at >= 0.5 * 0.8  # at the cap
        assert fake.links[1].requests[2]["data"] == {"limit": 750, "pair": None}
        assert "larger than message_size_limit (1 MiB)" in caplog.text
        assert "raise message_size_limit" in caplog.text


async def test_it_drops_a_link_that_does_not_answer_pings():
    async with FakeProducer() as fake:
        settings = fast(wait_timeout=0.2, ping_timeout=0.2)
        async with following(fake.follow(), settings) as client:
            await eventually(lambda: loaded(client))
            fake.link.ws.transport.pause_reading()  # no pong from now on
            await eventually(lambda: len(fake.links) == 2)
            assert "no pong within 0.2 s" in client.last_error
            assert loaded(client)  # the frames stayed
            fake.links[0].ws.transport.resume_reading()


async def test_it_keeps_a_quiet_link_that_answers_pings():
    async with FakeProducer() as fake:
        settings = fast(wait_timeout=0.1, ping_timeout=0.5)
        async with following(fake.follow(), settings) as client:
            await eventually(lambda: loaded(client))
            await asyncio.sleep(0.5)
            assert len(fake.links) == 1 and client.connected


### Bad messages


async def test_it_drops_malformed_messages_without_losing_the_connection(caplog):
    bad = [
        "not json",
        '{"type":"nonsense","data":1}',
        '{"type":"whitelist","data":[]}',
        frame_message("BTC/USDT", candles(1, first=200), timeframe="5x"),
        '{"type":"analyzed_df","data":{"key":["BTC/USDT","5m","spot"],'
        '"df":{"__type__":"dataframe","__value__":{"columns":[]}},"la":null}}',
        frame_message("BTC/USDT", candles(1, first=200).drop(columns="date")),
    ]
    async with FakeProducer() as fake, following(fake.follow(), fast()) as client:
        await eventually(lambda: loaded(client))
        with caplog.at_level(
            logging.WARNING, logger="controlplane.lib.feedclient.client"
        ):
            for text in bad + bad:
                await fake.link.ws.send(text)
            await fake.link.ws.send(frame_message("BTC/USDT", candles(1, first=200)))
            await eventually(lambda: len(stored(client)) == 201)
        assert len(fake.links) == 1
        assert client.store.whitelist == list(PAIRS)
        assert set(client.dropped) == {
            "malformed",
            "invalid-type",
            "empty",
            "bad-key",
            "bad-frame",
        }
        assert client.dropped["malformed"] == 4  # bad JSON, a bad envelope
        assert client.dropped["bad-key"] == 2
        ours = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(ours) == 5  # once per kind of fault
        assert "5x" in caplog.text and "nonsense" in caplog.text


async def test_it_decodes_big_frames_off_the_event_loop(monkeypatch):
    threads: list[str] = []
    decode = freqtrade.decode_message

    def spy(text: str, **options) -> dict:
        threads.append(threading.current_thread().name)
        return decode(text, **options)

    monkeypatch.setattr(freqtrade, "decode_message", spy)
    monkeypatch.setattr(dispatch_module, "OFFLOAD_BYTES", 64 * 1024)
    async with (
        FakeProducer(rows=500) as fake,
        following(fake.follow(), fast()) as client,
    ):
        await eventually(lambda: loaded(client))
        assert len(frame_message("BTC/USDT", fake.frames["BTC/USDT"])) > (
            dispatch_module.OFFLOAD_BYTES
        )
    main = threading.main_thread().name
    assert threads[0] == main  # the small whitelist, on the loop
    assert any(name != main for name in threads[1:])


### Settings changes


async def test_it_keeps_the_link_on_a_new_token_and_uses_it_next_time():
    async with FakeProducer() as fake, following(fake.follow(), fast()) as client:
        await eventually(lambda: loaded(client))
        await client.update(fake.follow(token="tok-2"), client.settings)
        await asyncio.sleep(0.1)
        assert len(fake.links) == 1
        await fake.link.ws.close(4003, "token revoked")
        await eventually(lambda: len(fake.links) == 2)
        assert fake.link.headers["Authorization"] == "Bearer tok-2"
        assert loaded(client)


async def test_it_tries_a_new_token_at_once_after_a_refused_one():
    """A rotated token must not wait out the slow retry of the refused one."""
    async with FakeProducer() as fake:
        fake.refuse = 403
        async with following(fake.follow(), fast(sleep_time=1)) as client:
            await eventually(lambda: fake.refused)
            fake.refuse = None
            await client.update(fake.follow(token="tok-2"), client.settings)
            await eventually(lambda: loaded(client), timeout=1)
            assert fake.link.headers["Authorization"] == "Bearer tok-2"


async def test_it_keeps_the_link_made_after_a_settings_change():
    async with FakeProducer() as fake:
        fake.refuse = 403
        async with following(fake.follow(), fast(sleep_time=1)) as client:
            await eventually(lambda: fake.refused)
            fake.refuse = None
            await client.update(client.follow, fast(initial_candle_limit=30))
            await eventually(lambda: loaded(client), timeout=1)
            await asyncio.sleep(0.1)
            assert len(fake.links) == 1 and client.connected
            assert len(stored(client)) == 30


async def test_it_survives_an_unexpected_error_with_a_backoff(monkeypatch, caplog):
    store = FrameStore()
    calls: list[float] = []

    def broken_once(pairs: list[str]) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("boom")
        FrameStore.set_whitelist(store, pairs)

    monkeypatch.setattr(store, "set_whitelist", broken_once)
    async with FakeProducer() as fake, following(fake.follow(), fast(), store) as c:
        await eventually(lambda: loaded(c))
        assert len(fake.links) == 2
        assert fake.links[1].at - fake.links[0].at >= 0.05 * 0.8
    assert "unexpected error" in caplog.text and "boom" in caplog.text


async def test_it_reconnects_at_once_when_the_link_settings_change():
    async with FakeProducer() as fake:
        async with following(fake.follow(), fast(sleep_time=5)) as client:
            await eventually(lambda: loaded(client))
            await client.update(client.follow, fast(initial_candle_limit=20))
            await eventually(lambda: len(fake.links) == 2, timeout=1)
            await eventually(lambda: len(fake.link.requests) >= 3)
            assert fake.link.requests[2]["data"]["limit"] == 20
        assert fake.close_codes[0] == 1000


async def test_it_closes_with_going_away_when_stopped():
    async with FakeProducer() as fake:
        async with following(fake.follow(), fast()) as client:
            await eventually(lambda: loaded(client))
        await eventually(lambda: fake.close_codes)
        assert fake.close_codes == [1001]


### Status and pieces


async def test_it_reports_its_state_per_pair(caplog):
    caplog.set_level(logging.INFO, logger="controlplane.lib.feedclient.client")
    async with FakeProducer() as fake, following(fake.follow(), fast()) as client:
        await eventually(lambda: loaded(client))
        status = client.status()
    assert status["connected"] is True and status["reconnects"] == 0
    assert status["pairs"]["BTC/USDT"] == {
        "last_candle": "2026-11-01T16:35:00+00:00",
        "rows": 200,
    }
    assert "default: all 2 pairs loaded in" in caplog.text
    assert "(200 rows each)" in caplog.text


def test_it_backs_off_exponentially_up_to_ten_times_sleep_time(monkeypatch):
    monkeypatch.setattr(backoff_module.random, "uniform", lambda low, high: 1.0)
    backoff = link_backoff(10)
    assert [backoff.next() for _ in range(6)] == [10, 20, 40, 80, 100, 100]
    backoff.reset()
    assert backoff.next() == 10
    assert link_backoff(60).at_cap() == 300  # never more than 5 minutes
    assert link_backoff(0).next() > 0  # never an instant reconnect


def test_it_jitters_every_delay_within_a_fifth(monkeypatch):
    delays = [Backoff(1, 8).next() for _ in range(200)]
    assert all(0.8 <= delay <= 1.2 for delay in delays)
    assert len(set(delays)) > 100  # spread, not one value


def test_it_keeps_the_next_delay_within_new_bounds():
    backoff = Backoff(1, 100)
    for _ in range(5):
        backoff.next()
    backoff.configure(1, 4)
    assert backoff.next() <= 4 * 1.2


def test_it_brackets_an_ipv6_host_and_keeps_tokens_out_of_log_urls():
    follow = Follow("x", "freqtrade", "::1", 8080, True, "secret")
    assert follow.display_url == "wss://[::1]:8080/api/v1/message/ws"
    assert follow.url().endswith("?token=secret")
    assert "secret" not in repr(follow)


@pytest.mark.parametrize("limit", [1500, 0])
def test_it_halves_its_requests_after_each_too_big_frame(limit):
    client = ProducerClient(
        Follow("x", "candlecast", "h", 1, False, "t"),
        ConsumerSettings(initial_candle_limit=limit),
        FrameStore(),
    )
    client._too_big()
    client._too_big()
    assert client.row_cap == 375
    assert '"limit":375' in client.opening_requests()[2]
