"""The producer pool's leases and assignment (producers/leases.py)."""

from __future__ import annotations

import itertools

import pytest
from django.core.cache.backends.locmem import LocMemCache

from producers.leases import LEASE_SECONDS, Leases, assignment

PAIRS = [f"P{n:02d}/USDT" for n in range(100)]
NOW = 1_800_000_000.0


@pytest.fixture
def leases() -> Leases:
    """Leases in a cache of their own, as every hub process of a deployment sees."""
    store = LocMemCache("test-leases", {})
    store.clear()  # locmem caches of one name share their memory
    return Leases(store)


def sizes(shares: dict[str, list[str]]) -> list[int]:
    return sorted(len(pairs) for pairs in shares.values())


### The assignment


@pytest.mark.parametrize("pairs", [1, 2, 5, 6, 7, 100])
@pytest.mark.parametrize("workers", [1, 2, 3, 4, 7])
def test_it_balances_the_pairs_within_one_pair(pairs, workers):
    """Plain rendezvous split 6 pairs 5/1 over two workers: shares here differ by
    one pair at most, and every pair has exactly one owner."""
    names = [f"worker-{n}" for n in range(workers)]
    shares = assignment(PAIRS[:pairs], names)
    assert set(shares) == set(names)
    assert max(sizes(shares)) - min(sizes(shares)) <= 1
    owned = [pair for share in shares.values() for pair in share]
    assert sorted(owned) == sorted(PAIRS[:pairs])


def test_it_splits_six_pairs_three_and_three():
    assert sizes(assignment(PAIRS[:6], ["host-a:41", "host-b:42"])) == [3, 3]


def test_it_gives_the_same_answer_whatever_the_order_of_its_inputs():
    """Every hub computes the same shares from the same live leases."""
    workers = ["c", "a", "b"]
    first = assignment(PAIRS[:10], workers)
    for order in itertools.permutations(workers):
        assert assignment(PAIRS[:10], list(order)) == first
    shuffled = PAIRS[:10][::-1]
    for name, share in assignment(shuffled, workers).items():
        assert sorted(share) == sorted(first[name])


def test_it_keeps_each_share_in_the_definitions_order():
    pairs = ["XRP/USDT", "BTC/USDT", "ETH/USDT", "ADA/USDT"]
    for share in assignment(pairs, ["a", "b"]).values():
        assert share == [p for p in pairs if p in share]


def test_it_moves_few_pairs_when_a_worker_joins():
    """The bonus: a third worker takes about a third; the others keep most."""
    before = assignment(PAIRS, ["a", "b"])
    after = assignment(PAIRS, ["a", "b", "c"])
    kept = sum(len(set(before[w]) & set(after[w])) for w in ("a", "b"))
    assert kept >= 50  # of 66 that stay with a or b; a full reshuffle keeps ~33


def test_it_assigns_nothing_without_workers():
    assert assignment(PAIRS[:3], []) == {}


### The leases


def test_a_held_lease_is_live_until_it_expires(leases):
    leases.hold("alpha", "a", "channel-1", since=NOW, now=NOW)
    assert leases.live("alpha", now=NOW + LEASE_SECONDS - 0.1) == ["a"]
    assert leases.live("alpha", now=NOW + LEASE_SECONDS + 0.1) == []
    assert leases.live("bravo", now=NOW) == []


def test_a_refresh_keeps_it_live(leases):
    for second in range(10):
        leases.hold("alpha", "a", "channel-1", since=NOW, now=NOW + second)
    assert leases.live("alpha", now=NOW + 9 + LEASE_SECONDS - 0.5) == ["a"]


def test_a_drop_ends_it_at_once_but_only_by_its_holder(leases):
    leases.hold("alpha", "a", "channel-1", since=NOW, now=NOW)
    leases.drop("alpha", "a", "channel-ghost")
    assert leases.live("alpha", now=NOW) == ["a"]
    leases.drop("alpha", "a", "channel-1")
    assert leases.live("alpha", now=NOW) == []


def test_a_newer_socket_takes_the_name_over(leases):
    """A restarted worker replaces its ghost: the ghost's socket is named back."""
    assert leases.hold("alpha", "a", "old", since=NOW, now=NOW) is None
    assert leases.hold("alpha", "a", "new", since=NOW + 3, now=NOW + 3) == "old"
    assert leases.holder("alpha", "a", now=NOW + 3) == "new"
    # The ghost's next refresh finds the newer holder and is told it is the ghost.
    assert leases.hold("alpha", "a", "old", since=NOW, now=NOW + 4) == "old"
    assert leases.holder("alpha", "a", now=NOW + 4) == "new"


def test_an_expired_holder_is_no_one_to_replace(leases):
    leases.hold("alpha", "a", "old", since=NOW, now=NOW)
    later = NOW + LEASE_SECONDS + 1
    assert leases.hold("alpha", "a", "new", since=later, now=later) is None


def test_dead_names_leave_the_list(leases):
    leases.hold("alpha", "a", "channel-1", since=NOW, now=NOW)
    leases.hold("alpha", "b", "channel-2", since=NOW, now=NOW)
    later = NOW + LEASE_SECONDS + 1
    leases.hold("alpha", "b", "channel-2", since=NOW, now=later)
    assert leases.cache.get("pool:names:alpha") == ["b"]


def test_two_hubs_sharing_a_cache_agree(leases):
    other_hub = Leases(leases.cache)
    leases.hold("alpha", "a", "hub1-channel", since=NOW, now=NOW)
    other_hub.hold("alpha", "b", "hub2-channel", since=NOW, now=NOW)
    one = leases.shares("alpha", PAIRS[:6], now=NOW)
    assert one == other_hub.shares("alpha", PAIRS[:6], now=NOW)
    assert sizes(one) == [3, 3]
