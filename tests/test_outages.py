"""A service the hub cannot reach (its database, its Redis) is told in words: the API
answers 503 with the hub's sentence, the status page a 503 in plain words, and the
log one line, never Django's HTML error page (issue 15, fault 4)."""

from __future__ import annotations

import logging
from unittest import mock

import pytest
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from redis.exceptions import ConnectionError as RedisConnectionError

from consumers.models import Consumer
from controlplane.lib.contracts import CONSUMER_CONFIG
from controlplane.outages import OutageFilter, unavailable
from producers.snapshots import SnapshotStoreUnavailable

REFUSED = (
    'connection failed: connection to server at "127.0.0.1", port 5441 failed: '
    "Connection refused\n\tIs the server running on that host?"
)


def database_down():
    """Every query fails as it does while PostgreSQL is stopped."""
    failing = OperationalError(REFUSED)
    return mock.patch.object(
        BaseDatabaseWrapper, "ensure_connection", side_effect=failing
    )


@pytest.fixture
def consumer_key(db) -> str:
    return Consumer.objects.create(name="bob").issue_key()


def test_it_answers_the_api_with_503_in_words(client, consumer_key, caplog):
    with database_down(), caplog.at_level(logging.ERROR, logger="controlplane.outages"):
        response = client.get(
            CONSUMER_CONFIG, HTTP_AUTHORIZATION=f"Bearer {consumer_key}"
        )
    assert response.status_code == 503
    error = response.json()["error"]
    assert error.startswith("the hub's database is unavailable (connection failed")
    assert "Is the server running" not in error  # one line
    assert error.endswith("; retry in a few seconds")
    [line] = [
        r.getMessage() for r in caplog.records if r.name == "controlplane.outages"
    ]
    assert line.endswith(f"answered GET {CONSUMER_CONFIG} with 503")


def test_it_answers_the_status_page_with_503_in_words(admin_client):
    with database_down():
        response = admin_client.get("/status/")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode().startswith("the hub's database is unavailable")


def test_it_names_redis_behind_the_snapshot_store_s_own_error():
    try:
        try:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6391.")
        except RedisConnectionError as exc:
            raise SnapshotStoreUnavailable("the snapshot store is unreachable") from exc
    except SnapshotStoreUnavailable as exc:
        assert unavailable(exc) == "Redis"
    assert unavailable(OperationalError("database is locked")) == "the database"
    assert unavailable(ValueError("a bug")) is None


def test_it_leaves_a_bug_to_django_s_500(client, db):
    with mock.patch("controlplane.views.build_status_snapshot", side_effect=KeyError):
        client.raise_request_exception = False
        response = client.get("/status.json")
    assert response.status_code != 503


def daphne_record(exc: BaseException) -> logging.LogRecord:
    """What Daphne logs when an application instance raised."""
    try:
        raise exc
    except BaseException as raised:
        info = (type(raised), raised, raised.__traceback__)
    return logging.LogRecord(
        "daphne.server",
        logging.ERROR,
        __file__,
        1,
        "Exception inside application: %s",
        (exc,),
        info,
    )


def test_it_tells_a_socket_lost_to_redis_in_one_line():
    record = daphne_record(
        RedisConnectionError("Error 111 connecting to 127.0.0.1:6391. Connect call")
    )
    assert OutageFilter().filter(record)
    assert record.exc_info is None
    assert record.getMessage() == (
        "the hub's Redis is unavailable (Error 111 connecting to 127.0.0.1:6391. "
        "Connect call): a connection failed with an error; its client retries"
    )


def test_it_keeps_the_traceback_of_a_bug():
    record = daphne_record(KeyError("pair"))
    assert OutageFilter().filter(record)
    assert record.exc_info is not None
    assert record.getMessage() == "Exception inside application: 'pair'"
