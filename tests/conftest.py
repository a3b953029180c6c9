"""Shared fixtures: domain nouns (producer, feed token, producer key), a clean
snapshot store and channel layer per test, and the services check for CI."""

from __future__ import annotations

import asyncio
import copy
import functools
import os
import secrets
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from producers.models import FeedToken, Producer
from tests.processes import Stack


def _service_reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), 2):
            return True
    except OSError:
        return False


def pytest_configure(config):
    """In scale-out mode the services must be there: fail loudly, never skip."""
    checks = [("REDIS_URL", 6379), ("DATABASE_URL", 5432)]
    for name, port in checks:
        url = os.environ.get(name, "")
        if url and not url.startswith("sqlite") and not _service_reachable(url, port):
            raise pytest.UsageError(
                f"{name}={url} is set but nothing answers there: start the service "
                f"or unset {name} to test the embedded default"
            )


# Rounds of cancelling and waiting (up to a second each) before a test loop closes.
LEFTOVER_ROUNDS = 10


def _end_leftover_tasks(runner: asyncio.Runner) -> None:
    """Cancel the tasks a test left on its loop until they have ended.

    A loop's own close (asyncio.Runner, in pytest-asyncio) cancels each task once and
    waits without a limit. On Python 3.11 asyncio.wait_for() loses a cancellation that
    arrives as the future it wraps completes (CPython gh-86296, fixed in 3.12), and
    redis-py sends every command through wait_for() when socket_timeout is set: a
    channels-redis receive() that loses its cancellation goes back to BZPOPMIN and
    polls for good, and the test hangs in teardown. That is the receive loop of any
    consumer a test leaves running, e.g. a refused handshake's, never disconnected.
    So: cancel as the close would, then again whatever still runs a second later.
    """
    try:
        loop = runner.get_loop()
    except RuntimeError:  # the runner is closed already
        return
    if loop.is_closed():
        return
    tasks = asyncio.all_tasks(loop)
    if tasks:
        # Cancelled before the loop runs again, as the runner's close does.
        for task in tasks:
            task.cancel()
        runner.run(_cancel_until_ended(tasks))


async def _cancel_until_ended(tasks: set[asyncio.Task]) -> None:
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    seen = set(tasks)
    for _ in range(LEFTOVER_ROUNDS):
        await asyncio.wait(tasks, timeout=1)
        tasks = asyncio.all_tasks() - {current}
        if not tasks:
            break
        seen |= tasks
        for task in tasks:
            task.cancel()
    else:
        raise RuntimeError(f"tasks outlived {LEFTOVER_ROUNDS} cancellations: {tasks}")
    for task in seen:  # as the runner's close would report them
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception in a task left by the test",
                    "exception": task.exception(),
                    "task": task,
                }
            )


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """Before pytest-asyncio closes a test's event loop, end what is left on it."""
    value = yield
    if isinstance(value, asyncio.Runner):
        # Runs before the runner's own teardown (finalizers run last-in, first-out)
        # and after the async fixtures set up later, so they still end cleanly.
        fixturedef.addfinalizer(functools.partial(_end_leftover_tasks, value))
    return value


@pytest.fixture(autouse=True)
def _clean_hub_state(settings):
    """Each test starts with empty snapshots, layer groups and throttle counters.

    With Redis, each test gets key prefixes of its own instead of a flush, so a
    shared Redis is never wiped.
    """
    from channels.layers import channel_layers

    from controlplane.lib.auth import throttle
    from producers import snapshots

    if settings.REDIS_URL:
        prefix = f"cc-test-{secrets.token_hex(4)}"
        settings.CANDLECAST_REDIS_PREFIX = prefix
        layer = copy.deepcopy(settings.CHANNEL_LAYERS)
        layer["default"]["CONFIG"]["prefix"] = prefix
        settings.CHANNEL_LAYERS = layer
        caches = copy.deepcopy(settings.CACHES)
        caches["default"]["KEY_PREFIX"] = prefix
        settings.CACHES = caches
    else:
        from django.core.cache import cache

        cache.clear()  # process-local memory; with Redis the prefix isolates instead
    snapshots.reset_store()
    channel_layers.backends.clear()
    throttle.reset()
    yield
    snapshots.reset_store()
    channel_layers.backends.clear()


@pytest.fixture
def producer(db) -> Producer:
    return Producer.objects.create(
        name="alpha",
        pairs=["BTC/USDT", "ETH/USDT"],
        timeframe="5m",
        source_options={"seed": 7},
    )


@pytest.fixture
def producer_key(producer) -> str:
    return producer.issue_key()


@pytest.fixture
def feed_token(producer) -> tuple[str, FeedToken]:
    """Plaintext and row together: the plaintext exists only now."""
    token, plaintext = FeedToken.issue(producer, "bot one")
    return plaintext, token


@pytest.fixture
def charlie(db) -> tuple[str, FeedToken]:
    """An outsider: a valid token, but for another producer."""
    other = Producer.objects.create(name="charlie", pairs=["XRP/USDT"])
    token, plaintext = FeedToken.issue(other, "charlie")
    return plaintext, token


@pytest.fixture
def redis_in_use() -> bool:
    return bool(settings.REDIS_URL)


@pytest.fixture(scope="session", autouse=True)
def _close_socket_thread_connections(django_db_setup):
    """Sockets reach the ORM from asgiref's one sync thread: close its connections
    before the test database is dropped (PostgreSQL refuses while they are open)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result()


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    """A deployment of real processes (tests/processes.py), ended after the test."""
    stack = Stack(tmp_path)
    yield stack
    stack.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report shows the log of every process its stacks started."""
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Stack):
                report.sections.append(("process logs", value.logs()))
    return report
