"""Shared fixtures: domain nouns (producer, feed token, producer key), a clean
snapshot store and channel layer per test, and the services check for CI."""

from __future__ import annotations

import copy
import os
import secrets
import socket
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from producers.models import FeedToken, Producer


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


@pytest.fixture(autouse=True)
def _clean_hub_state(settings):
    """Each test starts with empty snapshots, layer groups and throttle counters.

    With Redis, each test gets key prefixes of its own instead of a flush, so a
    shared Redis is never wiped.
    """
    from channels.layers import channel_layers

    from controlplane.auth import throttle
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


@pytest.fixture(scope="session")
def freqtrade_python() -> str:
    """FreqTrade 2026.9's interpreter, for the interop harnesses."""
    from tests.processes import freqtrade_python

    return freqtrade_python()
