"""What a refused handshake costs the hub: a secret of the wrong shape, or one that
failed lately, is refused on the event loop (no thread hop, no query); a fresh
well-formed one costs one hop and one query, as a valid one does, and a valid one
is never refused, whatever its address sent before."""

from __future__ import annotations

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.lib.auth import throttle
from producers import tokens
from producers.models import FeedToken, ProducerKey
from tests.feeds import connect, feed, publisher

pytestmark = pytest.mark.django_db(transaction=True)


def malformed(role: str = tokens.FEED_TOKEN) -> dict[str, str]:
    """Secrets no ``mint(role)`` makes, by what is wrong with them."""
    other = tokens.CONSUMER_KEY if role != tokens.CONSUMER_KEY else tokens.FEED_TOKEN
    return {
        "another role": f"{other}_" + "a" * 43,
        "cut short": f"{role}_" + "a" * 42,
        "joined to more": f"{role}_" + "a" * 44,
        "outside the alphabet": f"{role}_" + "a" * 42 + "=",
        "not ours at all": "0123456789abcdef0123456789abcdef",
        "megabytes": f"{role}_" + "a" * 1_000_000,
    }


MALFORMED = malformed()


def well_formed_wrong(role: str = tokens.FEED_TOKEN) -> str:
    return tokens.mint(role).plaintext  # the right shape, never issued


@pytest.fixture
def hops(monkeypatch) -> list[str]:
    """The functions run on a sync thread (every sync_to_async and
    database_sync_to_async call goes through SyncToAsync.__call__)."""
    seen: list[str] = []
    real = SyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        seen.append(getattr(self.func, "__name__", repr(self.func)))
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)
    return seen


async def refused_feed(token: str | None) -> bool:
    """Whether the feed refused ``token``; the socket then ends as Daphne ends it."""
    socket, connected = await feed(token)
    await socket.disconnect()
    return not connected


async def refused_publish(key: str | None) -> bool:
    if key is None:
        socket, connected = await connect("/api/v1/publish/ws")
    else:
        socket, connected = await publisher(key)
    await socket.disconnect()
    return not connected


### On the event loop: no thread hop


@pytest.mark.parametrize("kind", [*MALFORMED, "none"])
async def test_it_refuses_a_malformed_feed_token_without_a_thread_hop(
    feed_token, hops, kind
):
    assert await refused_feed(MALFORMED.get(kind))
    assert hops == []


@pytest.mark.parametrize("kind", [*MALFORMED, "none"])
async def test_it_refuses_a_malformed_producer_key_without_a_thread_hop(
    producer_key, hops, kind
):
    assert await refused_publish(malformed(tokens.PRODUCER_KEY).get(kind))
    assert hops == []


async def test_it_refuses_a_repeated_wrong_feed_token_on_the_loop(feed_token, hops):
    """The first try costs its lookup; the next ones only a hash."""
    wrong = feed_token[0][:12] + "x" * 35  # the real prefix: the row is found
    assert await refused_feed(wrong)
    assert hops == ["_authenticate"]
    for _ in range(20):
        assert await refused_feed(wrong)
    assert hops == ["_authenticate"]


async def test_it_refuses_a_repeated_wrong_producer_key_on_the_loop(producer_key, hops):
    wrong = well_formed_wrong(tokens.PRODUCER_KEY)
    for _ in range(20):
        assert await refused_publish(wrong)
    assert hops == ["_authenticate"]


async def test_a_fresh_wrong_token_costs_the_one_hop_a_valid_one_does(feed_token, hops):
    """A valid token's hop checks it; then, once the socket listens to its
    producer's group, one more re-reads it (a revocation committed in between
    would have gone unheard)."""
    assert await refused_feed(well_formed_wrong())
    assert hops == ["_authenticate"]
    socket, connected = await feed(feed_token[0])
    assert connected
    assert hops == ["_authenticate", "_authenticate", "_recheck"]
    await socket.disconnect()


### The queries behind it


def test_it_refuses_malformed_and_known_bad_secrets_without_a_query(feed_token):
    wrong = well_formed_wrong()
    with CaptureQueriesContext(connection) as first:
        assert FeedToken.objects.authenticate(wrong)[0] is None
    with CaptureQueriesContext(connection) as later:
        for secret in [*MALFORMED.values(), wrong, wrong]:
            assert FeedToken.objects.authenticate(secret)[0] is None
    assert (len(first), len(later)) == (1, 0)


def test_a_valid_credential_costs_one_query(feed_token, producer_key):
    with CaptureQueriesContext(connection) as feed_queries:
        assert FeedToken.objects.authenticate(feed_token[0])[0] == feed_token[1]
    with CaptureQueriesContext(connection) as key_queries:
        assert ProducerKey.objects.authenticate(producer_key)[0] is not None
    assert (len(feed_queries), len(key_queries)) == (1, 1)


### A valid credential is never refused


async def test_a_valid_token_is_accepted_after_a_flood_from_its_address(
    feed_token, producer_key, settings
):
    """Every kind of bad secret, from the same address (the communicator's), far
    over the limit: the address is throttled, the valid credentials still work."""
    settings.CANDLECAST_AUTH_FAILURES_PER_WINDOW = 3
    repeated = {role: well_formed_wrong(role) for role in tokens.ROLES}
    for n in range(32):
        for role, refused in (
            (tokens.FEED_TOKEN, refused_feed),
            (tokens.PRODUCER_KEY, refused_publish),
        ):
            bad = [well_formed_wrong(role), repeated[role], *malformed(role).values()]
            assert await refused(bad[n % len(bad)])
    assert throttle.over("unknown")
    socket, connected = await feed(feed_token[0])
    assert connected
    await socket.disconnect()
    socket, connected = await publisher(producer_key)
    assert connected
    await socket.disconnect()


async def test_a_token_tried_before_it_was_issued_works_once_issued(
    producer, monkeypatch
):
    """A secret remembered as bad is forgotten when it is issued: the cache never
    outlives a new issue (another hub process forgets it when the window ends)."""
    chosen = well_formed_wrong()
    assert await refused_feed(chosen)
    assert await refused_feed(chosen)  # now refused from the cache
    assert throttle.known_bad(chosen)
    monkeypatch.setattr(tokens.secrets, "token_urlsafe", lambda n: chosen[4:])
    token, plaintext = await sync_to_async(FeedToken.issue)(producer, "issued later")
    assert plaintext == chosen
    socket, connected = await feed(plaintext)
    assert connected
    await socket.disconnect()
