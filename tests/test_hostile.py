"""Hostile input: a bounded, seeded fuzzer against the feed and the publish socket.

Over 10,000 malformed frames (tests/hostile.py) go to a real hub while a producer
worker publishes and a consumer worker follows it. After them the hub is alive, the
consumer holds every candle, the hub's log has no traceback, and nothing hostile
reached the snapshots, the status page or /metrics.
"""

from __future__ import annotations

import asyncio
import collections
import html
import http.cookiejar
import re
import time
import urllib.parse
import urllib.request

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from controlplane.lib.wire import freqtrade, native, publish
from controlplane.lib.wire.columns import ProtocolError
from producers.models import Producer
from producers.publish import prepare_frame
from tests import hostile
from tests.processes import Stack
from tests.test_e2e_consumer import (
    HISTORY,
    PAIRS,
    assert_continuous,
    assert_equal_to_hub,
    requests,
    set_up,
    stop_consumer,
    wait_loaded_and_one_candle,
)

COUNTS = {"feed": 4500, "native": 2500, "publish": 2000, "raw": 1200}
SOCKETS = {"feed": 3, "native": 2, "publish": 3, "raw": 2}
OVERSIZE = 3  # publish messages just over the size limit
REPLY_TIMEOUT = 30
ADMIN = """
from django.contrib.auth.models import User
User.objects.create_superuser("admin", "admin@example.com", "hostile-pass")
print("{}")
"""


### The generator


def test_it_breaks_every_publish_message_it_makes():
    """The fuzzer's publish messages must all be refused, each as it says: none may
    reach the snapshots of the pairs the real producer worker publishes."""
    producer = Producer(name="e2e", timeframe="5m", candle_type="spot")
    made = collections.Counter()
    for frame in hostile.frames(7, {"publish": 2000}, PAIRS):
        try:
            message = publish.parse_publish(frame.data)
        except ProtocolError:
            made["close"] += 1
            assert frame.expect == "close"
            continue
        assert frame.expect == "error"
        with pytest.raises(ProtocolError):
            for number, one in enumerate(message["data"]["frames"]):
                prepare_frame(producer, one, f"frame {number}")
        made["error"] += 1
    assert made["close"] > 1500 and made["error"] > 20


def test_it_makes_the_same_frames_from_the_same_seed():
    counts = {"feed": 50, "native": 50, "publish": 50, "raw": 50}
    first = list(hostile.frames(3, counts, PAIRS))
    assert first == list(hostile.frames(3, counts, PAIRS))
    assert collections.Counter(f.category for f in first) == counts


### The fuzzer


class Totals:
    def __init__(self) -> None:
        self.sent: collections.Counter[str] = collections.Counter()
        self.replies: collections.Counter[str] = collections.Counter()
        self.closes: collections.Counter[str] = collections.Counter()
        self.acks = 0


async def fuzz_feed(url: str, frames: list[hostile.Frame], totals: Totals, **kw):
    """Send every frame, then a sentinel: requests are answered in order, so its
    reply means every one before it was answered (or ignored, as subscribe is)."""
    async with connect(url, max_size=64 << 20, **kw) as ws:
        sentinel = f"sentinel-{id(frames)}"

        async def read() -> None:
            async for message in ws:
                if isinstance(message, bytes):
                    native.decode(message)  # the hub's binary replies decode
                    totals.replies["native binary"] += 1
                    continue
                kind = orjson.loads(message)["type"]
                totals.replies[kind] += 1
                if kind == "exception" and sentinel in message:
                    return

        reader = asyncio.create_task(read())
        for frame in frames:
            await ws.send(frame.data)
            totals.sent[frame.category] += 1
        await ws.send(orjson.dumps({"type": sentinel}).decode())
        await asyncio.wait_for(reader, REPLY_TIMEOUT * 4)


async def fuzz_publish(url: str, key: str, frames: list[hostile.Frame], totals: Totals):
    """One message at a time; a socket the hub closed is replaced by a new one."""
    headers = {"Authorization": f"Bearer {key}"}
    ws = None
    for frame in frames:
        if ws is None:
            ws = await connect(url, additional_headers=headers, max_size=64 << 20)
        try:
            await ws.send(frame.data)
            totals.sent[frame.category] += 1
            reply = publish.parse_hub_reply(await asyncio.wait_for(ws.recv(), 30))
        except ConnectionClosed as exc:
            # Daphne ends an oversize message (1009) without a reply; a close seen
            # before the reply is counted apart (see the report: under study).
            if frame.expect != "oversize":
                totals.replies["publish closed before its reply"] += 1
            totals.closes[str(exc.rcvd.code if exc.rcvd else None)] += 1
            ws = None
            continue
        totals.replies[f"publish {reply['type']}"] += 1
        totals.acks += reply["type"] == "ack"
        if frame.expect in ("close", "oversize"):
            await ws.close()  # the hub's 4400 is on its way: disconnect, not wait
            rcvd = ws.protocol.close_rcvd
            closed = rcvd.code if rcvd else None
            totals.closes[str(closed)] += 1
            ws = None
    if ws is not None:
        await ws.close()


async def fuzz(stack: Stack, secrets: dict, totals: Totals) -> None:
    all_frames = list(hostile.frames(2026, COUNTS, PAIRS))
    split = collections.defaultdict(list)
    for frame in all_frames:
        split[frame.category].append(frame)
    limit = 8 << 20
    split["publish"][10:10] = [hostile.oversize(limit) for _ in range(OVERSIZE)]
    feed = f"{stack.feed_url}?token={secrets['token']}"
    publish_url = f"ws://127.0.0.1:{stack.port}/api/v1/publish/ws"
    jobs = []
    for category, sockets in SOCKETS.items():
        for number in range(sockets):
            part = split[category][number::sockets]
            if category == "publish":
                jobs.append(
                    fuzz_publish(publish_url, secrets["producer_key"], part, totals)
                )
            elif category == "native":
                protocols = [native.SUBPROTOCOL]
                jobs.append(fuzz_feed(feed, part, totals, subprotocols=protocols))
            else:
                jobs.append(fuzz_feed(feed, part, totals))
    await asyncio.gather(*jobs)


### What the hub shows afterwards


def rss_mib(pid: int) -> float:
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def staff_pages(stack: Stack) -> dict[str, str]:
    """The status page and /metrics as a logged-in staff user reads them."""
    base = f"http://127.0.0.1:{stack.port}"
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{base}/admin/login/").read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = {"username": "admin", "password": "hostile-pass", "next": "/status/"}
    form["csrfmiddlewaretoken"] = csrf
    body = urllib.parse.urlencode(form).encode()
    login = urllib.request.Request(
        f"{base}/admin/login/?next=/status/", body, headers={"Referer": base}
    )
    page = opener.open(login).read().decode()
    assert "<title>" in page and "log in" not in page.lower()[:2000], page[:500]
    return {
        "status": page,
        "status.json": opener.open(f"{base}/status.json").read().decode(),
        "metrics": opener.open(f"{base}/metrics").read().decode(),
    }


def assert_nothing_hostile_shown(pages: dict[str, str]) -> None:
    for name, text in pages.items():
        for value in hostile.HOSTILE + hostile.HOSTILE_PAIRS:
            assert value not in text, f"{name} shows {value!r} unescaped"
        assert hostile.MARK not in text, f"{name} shows a hostile value"
    assert "<script>alert" not in html.unescape(pages["status"])


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_it_survives_10000_malformed_frames_and_serves_every_tick(stack):
    secrets = set_up(stack)
    stack.setup(ADMIN)
    stack.hub()
    stack.producer("e2e", secrets["producer_key"], history=True)
    stack.consumer("follower", secrets["consumer_key"], dump=stack.tmp / "dump")
    wait_loaded_and_one_candle(stack)
    hub_pid = stack.processes["hub"].pid
    rss_before = rss_mib(hub_pid)
    totals = Totals()
    started = time.monotonic()
    asyncio.run(fuzz(stack, secrets, totals))
    took = time.monotonic() - started
    rss_after = rss_mib(hub_pid)
    # The legitimate consumer keeps following: a candle after the fuzzing.
    last = wait_loaded_and_one_candle(stack)

    assert stack.processes["hub"].poll() is None, "the hub died"
    sent = sum(totals.sent.values())
    assert sent >= 10_000
    assert totals.acks == 0, "the hub took a malformed publish"
    assert totals.closes["4400"] >= 1000, totals.closes
    # Just over the limit: Daphne's 1009, or the hub's own 4400/4413 refusal.
    assert set(totals.closes) <= {"4400", "4413", "1009"}, totals.closes
    frames = stop_consumer(stack)
    hub = stack.hub_frames(secrets["token"], len(PAIRS))
    assert sorted(hub) == PAIRS
    for pair in PAIRS:
        assert len(frames[pair]) > HISTORY
        assert frames[pair]["date"].iloc[-1] >= last[pair]
        assert_continuous(frames[pair])
        assert_equal_to_hub(frames[pair], hub[pair])
    assert requests(stack.log("consumer")) == []  # no candle went missing
    log = stack.log("hub")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
    assert "Redis up?" not in log
    assert_nothing_hostile_shown(staff_pages(stack))
    whitelist = asyncio.run(whitelist_of(stack, secrets["token"]))
    assert whitelist == PAIRS
    print(
        f"\nhostile frames: {sent} in {took:.1f} s over "
        f"{sum(SOCKETS.values())} sockets; by category {dict(totals.sent)}"
        f"\nreplies: {dict(totals.replies)}"
        f"\ncloses by code: {dict(totals.closes)}"
        f"\nhub RSS: {rss_before:.0f} MiB before, {rss_after:.0f} MiB after"
    )


async def whitelist_of(stack: Stack, token: str) -> list[str]:
    async with connect(f"{stack.feed_url}?token={token}") as ws:
        await ws.send('{"type":"whitelist"}')
        return freqtrade.decode_message(await ws.recv())["data"]
