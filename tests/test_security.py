"""Security checks across the hub: no secret reaches a log record (at DEBUG), a page
or Redis; every endpoint refuses the credentials of other roles; a producer's feed
token reads only that producer; the failed-auth throttle never locks out a valid
credential and counts the connecting address, not a forged X-Forwarded-For."""

from __future__ import annotations

import asyncio
import logging
import secrets
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import orjson
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.test import Client
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from consumers.models import Consumer, Follow
from controlplane.asgi import application
from controlplane.lib.auth import throttle
from controlplane.management.commands import rundemo, runhub
from producers.models import FeedToken, Producer
from tests.feeds import analysed_frame, frame, publish, receive, request
from tests.processes import free_port
from tests.statuskit import make_user
from tests.test_token_lifecycle import ROOT, check_deploy

pytestmark = [pytest.mark.django_db(transaction=True)]

TIMEOUT = 2
ADDRESS = "127.0.0.1"  # the Django test client's REMOTE_ADDR; the sockets' client too
HOST = {"HTTP_HOST": "127.0.0.1:8000"}
ORIGIN = (b"origin", b"http://127.0.0.1:8000")
PAIR = "BTC/USDT"  # both producers have it: only the token says whose rows are read


### The deployment: every kind of secret, each made once


@dataclass
class Deployment:
    """Producer alpha (a worker, a FreqTrade bot) and producer charlie, consumer bob
    following alpha, a staff user logged in with the demo's password, and a plain
    user; every secret by name."""

    secrets: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)

    def header(self, kind: str) -> list[tuple[bytes, bytes]]:
        """A WebSocket's headers presenting credential ``kind``."""
        if kind in self.cookies:
            return [(b"cookie", f"sessionid={self.cookies[kind]}".encode())]
        if kind == "nothing":
            return []
        return [(b"authorization", f"Bearer {self.secrets[kind]}".encode())]

    def http(self, kind: str) -> tuple[Client, dict]:
        """A test client and request headers presenting credential ``kind``."""
        client = Client()
        if kind in self.cookies:
            client.cookies["sessionid"] = self.cookies[kind]
            return client, {}
        if kind == "nothing":
            return client, {}
        return client, {"HTTP_AUTHORIZATION": f"Bearer {self.secrets[kind]}"}

    def leaked_in(self, text: str, allowed: frozenset[str] = frozenset()) -> list[str]:
        """The secrets (or their private part) found in ``text``, by name."""
        return [
            name
            for name, secret in self.secrets.items()
            if name not in allowed and private(secret) in text
        ]


def private(secret: str) -> str:
    """What must never be shown: ours keep a public 12-character prefix."""
    return secret[12:] if secret[:4] in ("ccf_", "ccp_", "ccc_") else secret


def session(client: Client) -> str:
    return client.cookies["sessionid"].value


@pytest.fixture
def deployment(db, settings, tmp_path) -> Deployment:
    settings.VAR_DIR = tmp_path
    # A fast hasher: the password's hash is not what these tests look at.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.CANDLECAST_ENCRYPTION_KEY = Fernet.generate_key().decode()
    settings.CANDLECAST_STATUS_TOKEN = "status-" + "s3cr3t" * 6
    settings.SECRET_KEY = "deployment-secret-" + "k" * 40
    alpha = Producer.objects.create(name="alpha", pairs=[PAIR, "ETH/USDT"])
    charlie = Producer.objects.create(name="charlie", pairs=[PAIR])
    bob = Consumer.objects.create(name="bob")
    Follow.objects.create(consumer=bob, producer=alpha)
    bot_token = FeedToken.issue(alpha, "bot")[1]
    password = rundemo.Command().ensure_admin()  # the demo's admin and password
    staff = Client()
    assert (
        staff.post(
            "/admin/login/?next=/admin/",
            {"username": "admin", "password": password, "next": "/admin/"},
            **HOST,
        ).status_code
        == 302
    )
    plain = Client()
    plain.force_login(make_user("plain", staff=False))
    found = Deployment(
        secrets={
            "producer key": alpha.issue_key(),
            "charlie's producer key": charlie.issue_key(),
            "feed token": bot_token,
            "worker feed token": bob.follows.get().feed_token.plaintext_for_worker(),
            "charlie's feed token": FeedToken.issue(charlie, "charlie")[1],
            "consumer key": bob.issue_key(),
            "status token": settings.CANDLECAST_STATUS_TOKEN,
            "staff session": session(staff),
            "plain session": session(plain),
            "Fernet key": settings.CANDLECAST_ENCRYPTION_KEY,
            "demo password": password,
            "SECRET_KEY": settings.SECRET_KEY,
        }
    )
    found.cookies = {
        "staff session": session(staff),
        "plain session": session(plain),
    }
    return found


async def socket(
    path: str, headers: list, address: str = ADDRESS
) -> tuple[WebsocketCommunicator, bool]:
    """A WebSocket through the real ASGI stack, from ``address`` as Daphne reports
    it in the scope."""

    async def from_address(scope, receive, send):
        return await application({**scope, "client": (address, 50000)}, receive, send)

    communicator = WebsocketCommunicator(from_address, path, headers=headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    return communicator, connected


### No secret in any log record, at DEBUG, from any logger


@pytest.fixture
def every_record() -> Iterator[list[str]]:
    """Every record of every logger at DEBUG, rendered before any handler's filter
    (the console's redacting filter edits records in place)."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(rendered(record))

    loggers = [logging.getLogger()] + [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
    ]
    levels = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    keep = Keep(logging.DEBUG)
    logging.getLogger().handlers.insert(0, keep)  # before the console's filter
    yield records
    logging.getLogger().removeHandler(keep)
    for lg, level in levels:
        lg.setLevel(level)


def rendered(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info:
        text += logging.Formatter().formatException(record.exc_info)
    return text


async def exercise_the_sockets(d: Deployment) -> list[str]:
    """Publish, follow by query and by header, refuse every wrong credential,
    revoke a live token; returns every message the sockets sent."""
    seen: list[str] = []
    publisher, accepted = await socket("/api/v1/publish/ws", d.header("producer key"))
    assert accepted
    ack = await publish(publisher, [frame(PAIR, analysed_frame(rows=50), full=True)])
    assert ack["type"] == "ack"
    bot, accepted = await socket(
        f"/api/v1/message/ws?token={d.secrets['feed token']}", []
    )
    worker, also = await socket("/api/v1/message/ws", d.header("worker feed token"))
    assert accepted and also
    for follower in (bot, worker):
        await request(follower, {"type": "subscribe", "data": ["analyzed_df"]})
        await request(follower, {"type": "analyzed_df", "data": {"limit": 5}})
        seen += [str(await receive(follower)) for _ in range(2)]
        await request(follower, {"type": "bogus"})  # a bad request is logged
        seen.append(str(await receive(follower)))
    for path, kind in [
        ("/api/v1/message/ws", "consumer key"),
        ("/api/v1/message/ws", "producer key"),
        ("/api/v1/publish/ws", "feed token"),
        ("/api/v1/publish/ws", "consumer key"),
        ("/ws/status", "feed token"),
    ]:
        refused, accepted = await socket(path, [ORIGIN, *d.header(kind)])
        assert not accepted, f"{path} accepted the {kind}"
    refused, _ = await socket(
        f"/api/v1/message/ws?token={d.secrets['consumer key']}", []
    )
    token = await FeedToken.objects.aget(label="bot")
    await sync_to_async(token.revoke)()
    assert (await bot.receive_output(TIMEOUT))["type"] == "websocket.close"
    await worker.disconnect()
    await publisher.disconnect()
    return seen


ADMIN_PAGES = [
    "/admin/",
    "/admin/producers/producer/",
    "/admin/producers/producer/{alpha}/change/",
    "/admin/producers/producer/{alpha}/history/",
    "/admin/producers/feedtoken/",
    "/admin/producers/feedtoken/{token}/change/",
    "/admin/producers/producerkey/",
    "/admin/consumers/consumer/",
    "/admin/consumers/consumer/{bob}/change/",
    "/admin/consumers/consumerkey/",
    "/status/",
    "/status.json",
    "/metrics",
    f"/status/chart.json?producer=alpha&pair={PAIR}",
]


def exercise_the_pages(d: Deployment) -> dict[str, str]:
    """Every page a staff user and a worker reads; returns each body by URL."""
    ids = {
        "alpha": Producer.objects.get(name="alpha").pk,
        "bob": Consumer.objects.get(name="bob").pk,
        "token": FeedToken.objects.get(label="bot").pk,
    }
    staff, _ = d.http("staff session")
    pages = {}
    for url in ADMIN_PAGES:
        response = staff.get(url.format(**ids), **HOST)
        assert response.status_code == 200, url
        pages[url] = response.content.decode()
    client, auth = d.http("status token")
    pages["/metrics (token)"] = client.get("/metrics", **auth, **HOST).content.decode()
    client, auth = d.http("consumer key")
    for url in ("/api/v1/consumer/config", "/api/v1/consumer/freqtrade-config"):
        response = client.get(url, **auth, **HOST)
        assert response.status_code == 200, url
        pages[url] = response.content.decode()
    report = {"producers": {}, "started": "2026-11-01T09:00:00+00:00"}
    client.post(
        "/api/v1/consumer/status", report, content_type="application/json", **auth
    )
    client, auth = d.http("producer key")
    response = client.get("/api/v1/producers/alpha/config", **auth, **HOST)
    pages["/api/v1/producers/alpha/config"] = response.content.decode()
    for url, kind in [
        ("/api/v1/consumer/config", "producer key"),
        ("/api/v1/consumer/config", "feed token"),
        ("/api/v1/producers/alpha/config", "consumer key"),
        ("/api/v1/producers/alpha/config", "charlie's producer key"),
        ("/status.json", "consumer key"),
        (f"/api/v1/message/ws?token={d.secrets['feed token']}", "nothing"),
    ]:
        client, auth = d.http(kind)
        pages[f"{url} ({kind})"] = client.get(url, **auth, **HOST).content.decode()
    return pages


def worker_config_tokens(page: str) -> list[str]:
    document = orjson.loads(page)
    return [p["ws_token"] for p in document["producers"]]


async def test_it_keeps_every_secret_off_logs_pages_and_redis(deployment, every_record):
    seen = await exercise_the_sockets(deployment)
    pages = await sync_to_async(exercise_the_pages)(deployment)
    runhub.access_log(  # the hub's access log, as Daphne calls it
        "http",
        "complete",
        {
            "path": f"/api/v1/message/ws?token={deployment.secrets['feed token']}",
            "status": 400,
            "method": "GET",
            "client": "127.0.0.1:50000",
        },
    )

    assert len(every_record) > 20, "the run logged too little to judge"
    for line in every_record:
        assert not deployment.leaked_in(line), line
    for message in seen:
        assert not deployment.leaked_in(message)
    # The one place a secret is handed out: a consumer worker's own feed token, in
    # its config (and the same config in FreqTrade's shape).
    config = pages.pop("/api/v1/consumer/config")
    assert worker_config_tokens(config) == [deployment.secrets["worker feed token"]]
    for handed in (config, pages.pop("/api/v1/consumer/freqtrade-config")):
        assert deployment.leaked_in(handed) == ["worker feed token"]
    for url, page in pages.items():
        assert not deployment.leaked_in(page), url
    if django_settings.REDIS_URL:
        stored = await redis_contents(django_settings.CANDLECAST_REDIS_PREFIX)
        assert stored, "nothing of the run is in Redis: the scan missed the prefix"
        for key, value in stored.items():
            assert not deployment.leaked_in(key.decode("latin-1")), key
            assert not deployment.leaked_in(value.decode("latin-1")), key


async def redis_contents(prefix: str) -> dict[bytes, bytes]:
    """Every key under ``prefix`` with its value(s), whatever their type."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(django_settings.REDIS_URL)
    readers: dict[bytes, Callable[[bytes], Awaitable]] = {
        b"string": client.get,
        b"list": lambda k: client.lrange(k, 0, -1),
        b"set": client.smembers,
        b"zset": lambda k: client.zrange(k, 0, -1, withscores=True),
        b"hash": client.hgetall,
    }
    found: dict[bytes, bytes] = {}
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=500):
            kind = await client.type(key)
            value = await readers[kind](key) if kind in readers else b""
            found[key] = repr(value).encode() if not isinstance(value, bytes) else value
    finally:
        await client.aclose()
    return found


### Every endpoint x every credential: only its own role gets in

KINDS = [
    "nothing",
    "feed token",
    "consumer key",
    "producer key",
    "charlie's producer key",
    "status token",
    "staff session",
    "plain session",
]
UPSTREAM = {
    "url": "ws://127.0.0.1:8080/api/v1/message/ws",
    "connected": True,
    "since": None,
    "reconnects": 0,
    "last_error": None,
    "refused": False,
    "mismatch": None,
    "whitelist": [PAIR],
    "pairs_held": 1,
    "newest_candle": None,
}
CONSUMER_STATUS = {"producers": {}, "started": "2026-11-01T09:00:00+00:00"}


async def ws_outcome(d: Deployment, path: str, kind: str) -> str:
    """ "refused": closed before accept, which Daphne answers with HTTP 403."""
    communicator, connected = await socket(path, [ORIGIN, *d.header(kind)])
    if connected:
        await communicator.disconnect()
    return "accepted" if connected else "refused"


def http_outcome(d: Deployment, method: str, url: str, kind: str, body=None) -> int:
    client, auth = d.http(kind)
    if method == "GET":
        return client.get(url, **auth, **HOST).status_code
    return client.post(
        url, body, content_type="application/json", **auth, **HOST
    ).status_code


# endpoint: (how to reach it, what its own credentials get, what the others get)
ENDPOINTS: dict[str, tuple[tuple, dict[str, object], dict[str, object]]] = {
    "feed socket": (
        ("ws", "/api/v1/message/ws"),
        {"feed token": "accepted"},
        {},
    ),
    "publish socket": (
        ("ws", "/api/v1/publish/ws"),
        # charlie's key is valid: it publishes as charlie, never as alpha
        {"producer key": "accepted", "charlie's producer key": "accepted"},
        {},
    ),
    "status socket": (("ws", "/ws/status"), {"staff session": "accepted"}, {}),
    "consumer config": (
        ("GET", "/api/v1/consumer/config"),
        {"consumer key": 200},
        {"nothing": 401, "staff session": 401, "plain session": 401},
    ),
    "consumer freqtrade-config": (
        ("GET", "/api/v1/consumer/freqtrade-config"),
        {"consumer key": 200},
        {"nothing": 401, "staff session": 401, "plain session": 401},
    ),
    "consumer status": (
        ("POST", "/api/v1/consumer/status", CONSUMER_STATUS),
        {"consumer key": 204},
        {"nothing": 401, "staff session": 401, "plain session": 401},
    ),
    "producer config": (
        ("GET", "/api/v1/producers/alpha/config"),
        {"producer key": 200},
        {"nothing": 401, "staff session": 401, "plain session": 401},
    ),
    "producer status": (
        ("POST", "/api/v1/producers/alpha/status", UPSTREAM),
        {"producer key": 204},
        {"nothing": 401, "staff session": 401, "plain session": 401},
    ),
    "status.json": (
        ("GET", "/status.json"),
        {"status token": 200, "staff session": 200},
        {"nothing": 401},
    ),
    "metrics": (
        ("GET", "/metrics"),
        {"status token": 200, "staff session": 200},
        {"nothing": 401},
    ),
    "admin": (
        ("GET", "/admin/producers/feedtoken/"),
        {"staff session": 200},
        {kind: 302 for kind in KINDS},  # to the login page
    ),
}


def expected(endpoint: str, kind: str) -> object:
    (how, *_), own, others = ENDPOINTS[endpoint]
    if kind in own:
        return own[kind]
    return others.get(kind, "refused" if how == "ws" else 403)


async def outcome(d: Deployment, endpoint: str, kind: str) -> object:
    (how, url, *body), _, _ = ENDPOINTS[endpoint]
    throttle.reset()  # each credential judged on its own, never as throttled
    if how == "ws":
        return await ws_outcome(d, url, kind)
    return await sync_to_async(http_outcome)(d, how, url, kind, *body)


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_it_refuses_every_credential_but_the_endpoint_s_own(deployment, endpoint):
    found = {kind: await outcome(deployment, endpoint, kind) for kind in KINDS}
    assert found == {kind: expected(endpoint, kind) for kind in KINDS}


### A producer's feed token reads that producer only


async def test_it_never_gives_a_producer_s_rows_to_another_producer_s_token(
    deployment,
):
    """Charlie's token, subscribed, sees none of alpha's BTC/USDT, though charlie
    has a BTC/USDT of its own; alpha's token gets them."""
    sockets = {}
    for name in ("feed token", "charlie's feed token"):
        sockets[name], connected = await socket(
            "/api/v1/message/ws", deployment.header(name)
        )
        assert connected
        await request(sockets[name], {"type": "subscribe", "data": ["analyzed_df"]})
    alpha, charlie = sockets["feed token"], sockets["charlie's feed token"]
    publisher, _ = await socket("/api/v1/publish/ws", deployment.header("producer key"))
    rows = analysed_frame(rows=30)
    await publish(publisher, [frame(PAIR, rows, full=True)])
    assert (await receive(alpha))["data"]["key"][0] == PAIR
    assert await charlie.receive_nothing(timeout=0.5)
    await request(charlie, {"type": "analyzed_df", "data": {"pair": PAIR}})
    assert (await receive(charlie))["data"]["df"].empty
    await request(charlie, {"type": "whitelist"})
    assert (await receive(charlie))["data"] == [PAIR]  # charlie's own definition
    for communicator in (alpha, charlie, publisher):
        await communicator.disconnect()


async def test_it_keeps_another_producer_s_publishes_out_of_alpha_s_streams(
    deployment,
):
    alpha, _ = await socket("/api/v1/message/ws", deployment.header("feed token"))
    await request(alpha, {"type": "subscribe", "data": ["analyzed_df"]})
    intruder, accepted = await socket(
        "/api/v1/publish/ws", deployment.header("charlie's producer key")
    )
    assert accepted
    ack = await publish(intruder, [frame(PAIR, analysed_frame(rows=30), full=True)])
    assert ack["type"] == "ack"  # stored as charlie's BTC/USDT
    assert await alpha.receive_nothing(timeout=0.5)
    await request(alpha, {"type": "analyzed_df", "data": {"pair": PAIR}})
    assert (await receive(alpha))["data"]["df"].empty
    await alpha.disconnect()
    await intruder.disconnect()


### The failed-auth throttle: no lock-out, no evasion


async def flood(d: Deployment, attempts: int) -> None:
    """Bad credentials from ADDRESS on every kind of route."""
    for n in range(attempts):
        if n % 2:
            await ws_outcome(d, "/api/v1/message/ws", "consumer key")
        else:
            await sync_to_async(http_outcome)(
                d, "GET", "/api/v1/producers/alpha/config", "consumer key"
            )


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e != "admin"])
async def test_a_flood_of_failures_never_locks_out_a_valid_credential(
    deployment, settings, endpoint
):
    settings.CANDLECAST_AUTH_FAILURES_PER_WINDOW = 3
    await flood(deployment, 10)
    assert throttle.over(ADDRESS)
    (how, url, *body), own, _ = ENDPOINTS[endpoint]
    for kind, accepted in own.items():
        if how == "ws":
            assert await ws_outcome(deployment, url, kind) == accepted
        else:
            found = await sync_to_async(http_outcome)(deployment, how, url, kind, *body)
            assert found == accepted, kind
    assert throttle.over(ADDRESS), "the valid credential cleared the address"


def forged(n: int) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", f"203.0.113.{n}".encode())]


async def test_forged_forwarded_for_headers_count_for_the_real_address(
    deployment, settings
):
    """Without proxy headers (the default), Daphne's scope names the connecting
    address, and so does every throttle count, on sockets and HTTP alike."""
    settings.CANDLECAST_AUTH_FAILURES_PER_WINDOW = 3
    bad = deployment.header("consumer key")
    for n in range(2):
        communicator, connected = await socket("/api/v1/message/ws", bad + forged(n))
        assert not connected
    wrong = deployment.http("consumer key")[1]
    client = Client()
    codes = [
        await sync_to_async(
            lambda n: (
                client.post(
                    "/api/v1/producers/alpha/status",
                    UPSTREAM,
                    content_type="application/json",
                    HTTP_X_FORWARDED_FOR=f"198.51.100.{n}",
                    **wrong,
                    **HOST,
                ).status_code
            )
        )(n)
        for n in range(3)
    ]
    assert codes == [403, 429, 429]  # 2 socket failures + 1 before the limit
    assert throttle.over(ADDRESS)
    assert not any(throttle.over(f"203.0.113.{n}") for n in range(2))


### X-Forwarded-For through the real hub (runhub, Daphne), off and on


def refusals(port: int, forwarded_for: list[str]) -> list[int]:
    """The consumer API's answers to a wrong key, one request per forged address."""
    codes = []
    for address in forwarded_for:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/consumer/config",
            headers={
                "Authorization": "Bearer ccc_wrongwrongwrongwrongwrong",
                "X-Forwarded-For": address,
            },
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
            codes.append(200)
        except urllib.error.HTTPError as refused:
            codes.append(refused.code)
    return codes


async def refused_feed(port: int, forwarded_for: str) -> int:
    url = f"ws://127.0.0.1:{port}/api/v1/message/ws?token=ccf_wrongwrongwrongwrongwrong"
    try:
        async with connect(url, additional_headers={"X-Forwarded-For": forwarded_for}):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_the_hub_trusts_x_forwarded_for_only_with_proxy_headers_on(stack):
    stack.setup('print("{}")')
    ports = {"off": stack.port, "on": free_port()}
    for mode, port in ports.items():
        hub = stack.start(
            f"hub-{mode}",
            "runhub",
            "--port",
            str(port),
            env={
                "CANDLECAST_PROXY_HEADERS": str(mode == "on"),
                "CANDLECAST_AUTH_FAILURES_PER_WINDOW": "2",
            },
        )
        stack.wait_http(f"http://127.0.0.1:{port}/admin/login/", hub)
    # The feed names the address it refused (before any throttling quiets it).
    for port in ports.values():
        assert asyncio.run(refused_feed(port, "192.0.2.9")) == 403
    stack.wait_log("hub-on", "feed: refused 192.0.2.9:")
    stack.wait_log("hub-off", "feed: refused 127.0.0.1:")
    assert "192.0.2.9" not in stack.log("hub-off")
    many = [f"203.0.113.{n}" for n in range(4)]
    # Off: the feed's failure and four forged addresses are one client, 127.0.0.1,
    # throttled after two failures.
    assert refusals(ports["off"], many) == [403, 429, 429, 429]
    # On: each forwarded address counts for itself, and one of them is throttled.
    assert refusals(ports["on"], many) == [403] * 4
    assert refusals(ports["on"], ["198.51.100.7"] * 3) == [403, 403, 429]


### check --deploy with the deployment recipe's environment


def test_it_passes_check_deploy_with_the_hubs_example_environment(tmp_path):
    """scripts/deploy/candlecast.env.example, as systemd and compose read it, plus
    the secrets the unit passes as credentials (the README's block has its own test
    in test_token_lifecycle)."""
    lines = (ROOT / "scripts/deploy/candlecast.env.example").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")
    assert env["DEBUG"] == "False" and env["CANDLECAST_PROXY_HEADERS"] == "True"
    for name in ("SECRET_KEY", "CANDLECAST_STATUS_TOKEN"):
        secret = tmp_path / name
        secret.write_text(secrets.token_urlsafe(50))
        env[f"{name}_FILE"] = str(secret)
    done = check_deploy(env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout
