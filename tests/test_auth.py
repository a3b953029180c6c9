"""The hub's shared authentication helpers: reading a credential from a scope,
checking a sent Origin while accepting none, and throttling addresses that fail."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from channels.testing import WebsocketCommunicator

from controlplane.lib import auth
from controlplane.lib.auth import (
    FailureThrottle,
    OptionalOriginValidator,
    bearer,
    scope_address,
    scope_token,
)

ADDRESS = "203.0.113.5"


def scope(authorization: str | None = None, query: bytes = b"") -> dict:
    headers = [(b"host", b"127.0.0.1:8000")]
    if authorization is not None:
        headers.append((b"Authorization", authorization.encode("latin-1")))
    return {"type": "websocket", "headers": headers, "query_string": query}


### Origin


@pytest.mark.parametrize(
    "origin",
    ["http://127.0.0.1:8000", "http://localhost", "https://localhost:8443"],
)
def test_it_allows_an_origin_of_an_allowed_host(origin):
    assert OptionalOriginValidator.allowed(origin)


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://127.0.0.1.evil.example",
        "http://localhost.evil.example:8000",
    ],
)
def test_it_refuses_a_foreign_origin(origin):
    assert not OptionalOriginValidator.allowed(origin)


@pytest.mark.parametrize("origin", ["", "null", "garbage", "://", "http://"])
def test_it_refuses_an_origin_it_cannot_read(origin):
    assert not OptionalOriginValidator.allowed(origin)


def test_it_follows_allowed_hosts(settings):
    settings.ALLOWED_HOSTS = [".example.org"]
    assert OptionalOriginValidator.allowed("https://hub.example.org")
    assert not OptionalOriginValidator.allowed("http://127.0.0.1:8000")


async def accepting(scope, receive, send) -> None:
    """A bare ASGI app that accepts every socket (no consumer, so no ORM)."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def handshake(headers: list[tuple[bytes, bytes]]) -> bool:
    app = OptionalOriginValidator(accepting)
    communicator = WebsocketCommunicator(app, "/api/v1/message/ws", headers=headers)
    connected, _ = await communicator.connect(timeout=1)
    await communicator.disconnect()
    return connected


# Channels' WebsocketDenier is a consumer: it closes old ORM connections on the sync
# thread, which pytest-django only permits with database access.
sockets = pytest.mark.django_db(transaction=True)


@sockets
async def test_it_lets_a_socket_without_origin_through():
    assert await handshake([])


@sockets
async def test_it_lets_a_socket_from_an_allowed_origin_through():
    assert await handshake([(b"origin", b"http://localhost:8000")])


@sockets
async def test_it_refuses_a_socket_from_a_foreign_origin(caplog):
    with caplog.at_level(logging.WARNING, logger="controlplane.lib.auth"):
        assert not await handshake([(b"origin", b"https://evil.example")])
    assert "refused a WebSocket from origin https://evil.example" in caplog.text


### credentials


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bearer ccf_abc", "ccf_abc"),
        ("bearer ccf_abc", "ccf_abc"),
        ("BEARER   ccf_abc  ", "ccf_abc"),
        ("Bearer ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("ccf_abc", None),
        ("", None),
        (None, None),
    ],
)
def test_it_reads_a_bearer_credential(value, expected):
    assert bearer(value) == expected


def test_it_prefers_the_header_to_the_query():
    found = scope_token(
        scope("Bearer from-header", b"token=from-query"), allow_query=True
    )
    assert found == "from-header"


def test_it_reads_the_query_only_when_allowed():
    assert scope_token(scope(query=b"token=from-query"), allow_query=True) == (
        "from-query"
    )
    assert scope_token(scope(query=b"token=from-query"), allow_query=False) is None


def test_it_decodes_a_url_encoded_query_token():
    found = scope_token(scope(query=b"x=1&token=ccf_a%2Db%5Fc&y=2"), allow_query=True)
    assert found == "ccf_a-b_c"


def test_it_falls_back_to_the_query_for_an_empty_bearer():
    found = scope_token(scope("Bearer ", b"token=from-query"), allow_query=True)
    assert found == "from-query"


def test_it_finds_no_token_in_a_bare_scope():
    assert scope_token({"type": "websocket"}, allow_query=True) is None
    assert scope_token(scope(query=b"token="), allow_query=True) is None


def test_it_names_the_client_address():
    assert scope_address({"client": ("198.51.100.2", 51515)}) == "198.51.100.2"
    assert scope_address({"client": None}) == "unknown"


### throttle


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch, settings) -> Clock:
    """Three failures per ten-second window, on a hand-moved clock."""
    settings.CANDLECAST_AUTH_FAILURES_PER_WINDOW = 3
    settings.CANDLECAST_AUTH_WINDOW_SECONDS = 10
    fake = Clock()
    monkeypatch.setattr(auth, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def fail(throttle: FailureThrottle, times: int, address: str = ADDRESS) -> bool:
    """``times`` failures; whether the last one was over the limit."""
    return [throttle.failed(address) for _ in range(times)][-1]


def test_an_address_goes_over_the_limit_after_it(clock):
    throttle = FailureThrottle()
    assert not fail(throttle, 3), "the limit's failures are each told"
    assert throttle.over(ADDRESS)
    assert fail(throttle, 1)
    assert not throttle.over("198.51.100.2")


def test_an_address_comes_back_under_after_the_window(clock):
    throttle = FailureThrottle()
    fail(throttle, 3)
    clock.now += 9.9
    assert throttle.over(ADDRESS)
    clock.now += 0.1
    assert not throttle.over(ADDRESS)
    assert not throttle.failed(ADDRESS)


def test_it_counts_failures_in_a_sliding_window(clock):
    throttle = FailureThrottle()
    fail(throttle, 1)
    clock.now += 5
    fail(throttle, 2)
    assert throttle.over(ADDRESS)
    clock.now += 5  # the first failure leaves the window
    assert not throttle.over(ADDRESS)
    assert not throttle.failed(ADDRESS)
    assert throttle.failed(ADDRESS)


def test_it_keeps_no_more_stamps_per_address_than_the_limit(clock):
    throttle = FailureThrottle()
    fail(throttle, 5000)
    assert len(throttle._failures[ADDRESS]) == 3


def test_it_logs_the_throttling_once_per_window(clock, caplog):
    throttle = FailureThrottle()
    fail(throttle, 3)
    with caplog.at_level(logging.WARNING, logger="controlplane.lib.auth"):
        for _ in range(5):
            assert throttle.failed(ADDRESS)
            clock.now += 1
        assert len(caplog.records) == 1
        clock.now += 10
        fail(throttle, 4)
    assert [r.getMessage() for r in caplog.records] == [
        f"throttling {ADDRESS}: 3 failed attempts within 10 s; its further failures "
        "are refused without a log line each until the window passes (valid "
        "credentials are still accepted)"
    ] * 2


def test_it_remembers_a_failed_secret_for_the_window(clock):
    throttle = FailureThrottle()
    throttle.remember_bad("ccf_wrong")
    assert throttle.known_bad("ccf_wrong") and not throttle.known_bad("ccf_other")
    clock.now += 10
    assert not throttle.known_bad("ccf_wrong")


def test_it_remembers_a_bounded_number_of_failed_secrets(clock, monkeypatch):
    monkeypatch.setattr(FailureThrottle, "MAX_SECRETS", 2)
    throttle = FailureThrottle()
    for secret in ("a", "b", "c"):
        throttle.remember_bad(secret)
    assert [throttle.known_bad(s) for s in "abc"] == [False, True, True]


def test_it_forgets_everything_on_reset(clock):
    throttle = FailureThrottle()
    fail(throttle, 3)
    throttle.remember_bad("ccf_wrong")
    throttle.reset()
    assert not throttle.over(ADDRESS) and not throttle.known_bad("ccf_wrong")
