"""End to end: revoking and rotating feed tokens while they are in use.

Two hub processes joined by Redis serve FreqTrade-style (?token=) and candlecast
(Authorization header) connections; a revocation in the admin of one hub, or by the
model method in another process, closes them all, on both hubs, within 2 s (measured
and printed), and a rotation's grace period ends them the same way. A consumer
worker keeps complete frames while its feed token is rotated under it, and no log
line of the run shows a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import logging
import re
import secrets
import statistics
import time
import urllib.parse
import urllib.request

import orjson
import pandas as pd
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from consumers.strategy import ConsumerStrategy
from controlplane.lib.wire import freqtrade
from tests.processes import Stack, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

FEED_PATH = "/api/v1/message/ws"
TOKENS = "/admin/producers/feedtoken/"
CONSUMERS = "/admin/consumers/consumer/"
FEED_TOKEN = re.compile(r"ccf_[A-Za-z0-9_-]{40,}")
STYLES = ("freqtrade", "candlecast")  # ?token= in the URL, or a bearer header
PASSWORD = secrets.token_urlsafe(12)
RUNS = 3
STEP = pd.Timedelta(minutes=5)


### A staff user's session in the admin, over plain HTTP


class AdminSession:
    """Logs in to one hub's admin like a browser, then posts admin actions."""

    def __init__(self, port: int, username: str = "staff") -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.jar = http.cookiejar.CookieJar()
        handler = urllib.request.HTTPCookieProcessor(self.jar)
        self.opener = urllib.request.build_opener(handler)
        self.get("/admin/login/")
        page = self.post(
            "/admin/login/?next=/admin/",
            {"username": username, "password": PASSWORD, "next": "/admin/"},
        )
        assert "Log out" in page, "the staff user could not log in"

    def cookie(self, name: str) -> str:
        return next(c.value for c in self.jar if c.name == name)

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=10) as response:
            return response.read().decode()

    def post(self, path: str, data: dict) -> str:
        data = {**data, "csrfmiddlewaretoken": self.cookie("csrftoken")}
        body = urllib.parse.urlencode(data, doseq=True).encode()
        with self.opener.open(self.base + path, body, timeout=10) as response:
            return response.read().decode()

    def action(self, path: str, name: str, pks: list[int], **extra: str) -> str:
        return self.post(path, {"action": name, "_selected_action": pks, **extra})


### Feed connections


async def open_feed(port: int, token: str, style: str) -> ClientConnection:
    url = f"ws://127.0.0.1:{port}{FEED_PATH}"
    if style == "freqtrade":
        return await connect(f"{url}?token={token}", open_timeout=5)
    headers = {"Authorization": f"Bearer {token}"}
    return await connect(url, additional_headers=headers, open_timeout=5)


async def whitelist(ws: ClientConnection) -> list[str]:
    await ws.send('{"type":"whitelist"}')
    return orjson.loads(await asyncio.wait_for(ws.recv(), 5))["data"]


async def until_closed(ws: ClientConnection) -> tuple[float, int | None, str]:
    """When the hub closed this connection, with its close code and reason."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.recv()
    return time.monotonic(), ws.close_code, ws.close_reason


async def handshake_status(port: int, token: str) -> int:
    try:
        async with connect(f"ws://127.0.0.1:{port}{FEED_PATH}?token={token}"):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


### Two hub processes joined by Redis

SETUP = """
import json
from django.contrib.auth import get_user_model
from producers.models import FeedToken, Producer
get_user_model().objects.create_superuser("staff", "", {password!r})
producer = Producer.objects.create(name="e2e", pairs=["BTC/USDT"])
tokens = {{}}
for label in {labels!r}:
    token, plaintext = FeedToken.issue(producer, label)
    tokens[label] = {{"id": token.pk, "prefix": token.prefix, "plaintext": plaintext}}
print(json.dumps(tokens))
"""
LABELS = [*(f"run {n}" for n in range(RUNS)), "bystander", "rotated", "shell"]
REVOKE = """
import json, time
from producers.models import FeedToken
FeedToken.objects.get(pk={pk}).revoke()
print(json.dumps({{"revoked": time.time()}}))
"""


@pytest.fixture
def hubs(stack):
    """Hub 1 and hub 2 on one database and one Redis; issued tokens by label."""
    stack.redis()
    stack.tokens = stack.setup(SETUP.format(password=PASSWORD, labels=LABELS))
    stack.hub()
    second = free_port()
    stack.hub("hub2", second)
    stack.ports = [stack.port, second]
    return stack


def by_hub(stack: Stack, delays: list[float]) -> dict[str, list[float]]:
    """Delays of connections opened two per hub, hub by hub (see open_feed's order)."""
    per = len(delays) // len(stack.ports)
    return {
        f"hub {n + 1}": delays[n * per : (n + 1) * per] for n in range(len(stack.ports))
    }


def summary(delays: dict[str, list[float]]) -> str:
    return "; ".join(
        f"{hub}: max {max(d):.3f} s, median {statistics.median(d):.3f} s ({len(d)})"
        for hub, d in delays.items()
    )


async def revoke_and_measure(stack: Stack, run: int) -> list[float]:
    """Four connections of one token, two per hub; revoke it in one hub's admin."""
    token, other = stack.tokens[f"run {run}"], stack.tokens["bystander"]
    live = [
        await open_feed(port, token["plaintext"], style)
        for port in stack.ports
        for style in STYLES
    ]
    bystanders = [
        await open_feed(port, other["plaintext"], "freqtrade") for port in stack.ports
    ]
    for ws in live + bystanders:
        assert await whitelist(ws) == ["BTC/USDT"]
    watchers = [asyncio.create_task(until_closed(ws)) for ws in live]
    admin = AdminSession(stack.ports[run % 2])  # each hub's admin in turn
    started = time.monotonic()
    page = await asyncio.to_thread(admin.action, TOKENS, "revoke", [token["id"]])
    assert "1 token(s) revoked" in page
    closes = await asyncio.wait_for(asyncio.gather(*watchers), 5)
    reason = f"token {token['prefix']}… was revoked"
    assert [(code, text) for _, code, text in closes] == [(4001, reason)] * 4
    for ws in bystanders:  # another token of the same producer: still served
        assert await whitelist(ws) == ["BTC/USDT"]
        await ws.close()
    for port in stack.ports:
        assert await handshake_status(port, token["plaintext"]) == 403
    return [at - started for at, _, _ in closes]


def test_it_closes_a_revoked_token_s_connections_on_every_hub_within_2_s(hubs):
    delays: dict[str, list[float]] = {}
    for run in range(RUNS):
        found = asyncio.run(revoke_and_measure(hubs, run))
        for hub, closes in by_hub(hubs, found).items():
            delays.setdefault(hub, []).extend(closes)
    print(
        f"\nrevocation (admin action) to close, 2 hub processes + Redis, "
        f"{RUNS} revocations: {summary(delays)}"
    )
    assert max(max(d) for d in delays.values()) < 2.0
    assert "feed: closing 127.0.0.1 (code 4001)" in hubs.log("hub2")


async def revoke_from_another_process(stack: Stack) -> list[float]:
    """The model method, in a process of its own (a shell, a script): Redis carries
    the news to both hubs."""
    token = stack.tokens["shell"]
    live = [
        await open_feed(port, token["plaintext"], style)
        for port in stack.ports
        for style in STYLES
    ]
    watchers = [asyncio.create_task(until_closed(ws)) for ws in live]
    done = await asyncio.to_thread(stack.python, REVOKE.format(pk=token["id"]))
    closes = await asyncio.wait_for(asyncio.gather(*watchers), 5)
    assert {code for _, code, _ in closes} == {4001}
    # Wall clocks of one machine: from the commit (the script's clock) to the close.
    offset = time.time() - time.monotonic()
    return [at + offset - done["revoked"] for at, _, _ in closes]


def test_it_closes_connections_of_a_token_revoked_in_another_process(hubs):
    delays = by_hub(hubs, asyncio.run(revoke_from_another_process(hubs)))
    print(f"\nrevocation (model method, another process) to close: {summary(delays)}")
    assert max(max(d) for d in delays.values()) < 2.0


async def rotate_with_short_grace(stack: Stack, grace: float) -> None:
    token = stack.tokens["rotated"]
    live = [
        await open_feed(port, token["plaintext"], style)
        for port in stack.ports
        for style in STYLES
    ]
    for ws in live:
        assert await whitelist(ws) == ["BTC/USDT"]
    watchers = [asyncio.create_task(until_closed(ws)) for ws in live]
    admin = AdminSession(stack.port)
    started = time.monotonic()
    page = await asyncio.to_thread(
        admin.action,
        TOKENS,
        "rotate",
        [token["id"]],
        apply="Rotate",
        grace=f"{grace:g}",
    )
    answered = time.monotonic()
    successor = FEED_TOKEN.search(page).group()
    assert successor != token["plaintext"]
    await asyncio.sleep(grace / 2)
    assert not [w for w in watchers if w.done()], "closed within the grace period"
    closes = await asyncio.wait_for(asyncio.gather(*watchers), grace + 5)
    reason = f"token {token['prefix']}… expired"
    assert [(code, text) for _, code, text in closes] == [(4002, reason)] * 4
    for at, _, _ in closes:  # at the grace's end, as the hub's clock measured it
        assert started + grace - 0.1 <= at <= answered + grace + 0.5
    for port in stack.ports:
        fresh = await open_feed(port, successor, "freqtrade")
        assert await whitelist(fresh) == ["BTC/USDT"]
        await fresh.close()
        assert await handshake_status(port, token["plaintext"]) == 403


def test_it_closes_a_rotated_token_s_connections_on_every_hub_when_its_grace_ends(
    hubs,
):
    asyncio.run(rotate_with_short_grace(hubs, grace=2.0))


### A consumer worker whose feed token is rotated under it


class FrameCheck(ConsumerStrategy):
    """This test's consumer strategy: logs what the producer frame it runs on holds.

    Imported by the consumer worker (runconsumer --strategy), so the test reads the
    worker's frames from its log without changing the worker.
    """

    timeframe = "5m"

    def populate_indicators(self, dataframe, metadata):
        df, _ = self.dp.get_producer_df(metadata["pair"])
        steps = df["date"].diff().dropna()
        logging.getLogger("frame-check").info(
            "frame-check %s rows=%d first=%s last=%s holes=%d",
            metadata["pair"],
            len(df),
            df["date"].iloc[0].isoformat(),
            df["date"].iloc[-1].isoformat(),
            int((steps != STEP).sum()),
        )
        return dataframe

    def populate_entry_trend(self, dataframe, metadata):
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        return dataframe


PAIRS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
CONSUMER_SETUP = """
import json
from django.contrib.auth import get_user_model
from consumers.models import Consumer, Follow
from producers.models import FeedToken, Producer
get_user_model().objects.create_superuser("staff", "", {password!r})
producer = Producer.objects.create(
    name="e2e", pairs={pairs!r}, timeframe="5m", history=300,
    source_options={{"seed": 3, "seconds_per_candle": 1.5}},
)
consumer = Consumer.objects.create(name="follower", sleep_time=1)
follow = Follow.objects.create(consumer=consumer, name="default", producer=producer)
print(json.dumps({{
    "consumer_id": consumer.pk,
    "producer_key": producer.issue_key(),
    "consumer_key": consumer.issue_key(),
    "bot_token": FeedToken.issue(producer, "a FreqTrade bot")[1],
    "worker_token": follow.feed_token.plaintext_for_worker(),
    "worker_prefix": follow.feed_token.prefix,
}}))
"""
CURRENT_TOKEN = """
import json
from consumers.models import Follow
token = Follow.objects.get().current_feed_token()
print(json.dumps({"prefix": token.prefix, "plaintext": token.plaintext_for_worker()}))
"""
FRAME_CHECK = re.compile(
    r"frame-check (\S+) rows=(\d+) first=(\S+) last=(\S+) holes=(\d+)"
)
GRACE = 16  # the worker reads its config every 10 s: it must see the successor


def frame_checks(stack: Stack) -> list[tuple[str, int, str, str, int]]:
    return [
        (pair, int(rows), first, last, int(holes))
        for pair, rows, first, last, holes in FRAME_CHECK.findall(stack.log("consumer"))
    ]


def newest_candles(stack: Stack) -> dict[str, str]:
    return {pair: last for pair, _, _, last, _ in frame_checks(stack)}


def ran_past(stack: Stack, candles: dict[str, str]) -> bool:
    newest = newest_candles(stack)
    return all(newest.get(pair, "") > candles.get(pair, "") for pair in PAIRS)


async def bot_session(stack: Stack) -> tuple[list[str], pd.Timestamp]:
    """A FreqTrade-style client (?token=), plus a refused one: the hub logs both."""
    token = stack.secrets["bot_token"]
    with contextlib.suppress(InvalidStatus):
        async with connect(f"{stack.feed_url}?token={token[:-3]}xyz"):
            pass
    async with connect(f"{stack.feed_url}?token={token}", max_size=8 << 20) as ws:
        pairs = await whitelist(ws)
        await ws.send('{"type":"analyzed_df","data":{"limit":1500,"pair":"BTC/USDT"}}')
        frame = freqtrade.decode_message(await asyncio.wait_for(ws.recv(), 10))
    return pairs, frame["data"]["df"]["date"].iloc[0]


def test_it_keeps_a_consumer_s_frames_complete_while_its_token_rotates(stack):
    stack.env["LOG_LEVEL"] = "DEBUG"  # the most log lines to scan for secrets
    stack.secrets = stack.setup(CONSUMER_SETUP.format(password=PASSWORD, pairs=PAIRS))
    stack.hub()
    stack.producer("e2e", stack.secrets["producer_key"])
    stack.consumer(
        "follower", stack.secrets["consumer_key"], strategy=f"{__name__}.FrameCheck"
    )
    stack.wait_until(
        "the consumer ran on a new candle",
        lambda: (
            "all 3 pairs loaded" in stack.log("consumer")
            and len(frame_checks(stack)) > len(PAIRS)
        ),
    )
    pairs, first = asyncio.run(bot_session(stack))
    assert pairs == PAIRS
    before = newest_candles(stack)

    admin = AdminSession(stack.port)
    page = admin.action(
        CONSUMERS,
        "renew_feed_tokens",
        [stack.secrets["consumer_id"]],
        apply="Rotate",
        grace=str(GRACE),
    )
    assert "1 feed token(s) rotated" in page
    successor = stack.python(CURRENT_TOKEN)
    old_prefix = stack.secrets["worker_prefix"]
    stack.wait_until(
        "the worker read the successor from the config API",
        lambda: "default: feed token changed" in stack.log("consumer"),
        timeout=15,
    )
    stack.wait_until(
        "the hub closed the old token's connection when the grace ended",
        lambda: f"token {old_prefix}… expired" in stack.log("consumer"),
        timeout=GRACE + 10,
    )
    stack.wait_until(
        "the worker reconnected with the successor",
        lambda: f"with token {successor['prefix']}" in stack.log("hub"),
        timeout=15,
    )
    switched = newest_candles(stack)
    stack.wait_until("candles after the switch", lambda: ran_past(stack, switched))
    for name in ("consumer", "producer", "hub"):
        assert stack.stop(name) == 0

    checks = frame_checks(stack)
    assert [c for c in checks if c[4] != 0] == [], "a frame had a hole"
    assert {c[2] for c in checks} == {first.isoformat()}, "a frame lost its start"
    for pair in PAIRS:  # each frame holds every candle from the first to its last
        lasts = [pd.Timestamp(c[3]) for c in checks if c[0] == pair]
        rows = [c[1] for c in checks if c[0] == pair]
        assert rows == [(last - first) // STEP + 1 for last in lasts]
        assert lasts == sorted(lasts) and lasts[-1] > pd.Timestamp(before[pair])
    log = stack.log("consumer")
    assert log.count("default: connected to") == 2  # the switch, and no restart
    assert log.count("all 3 pairs loaded") == 2  # reloaded whole after the switch
    assert_no_secret_in_logs(stack, admin, successor["plaintext"])


def assert_no_secret_in_logs(stack: Stack, admin: AdminSession, *more: str) -> None:
    """Every log line of the run (hub, producer, consumer) is free of secrets."""
    logs = "\n".join(path.read_text() for path in sorted(stack.tmp.glob("*.log")))
    assert {"hub", "producer", "consumer"} <= {
        path.stem for path in stack.tmp.glob("*.log")
    }
    # The lines that would carry a secret are there, with prefixes only.
    assert "WebSocket connected /api/v1/message/ws" in logs
    assert "Authorization: Bearer [redacted]" in logs  # the workers' DEBUG headers
    assert f"with token {stack.secrets['worker_prefix']}" in logs
    ours = [
        stack.secrets[name]
        for name in ("producer_key", "consumer_key", "bot_token", "worker_token")
    ]
    for secret in [*ours, *more]:
        assert secret[12:] not in logs  # the secret part, with or without prefix
    for secret in (PASSWORD, admin.cookie("sessionid"), admin.cookie("csrftoken")):
        assert secret not in logs
