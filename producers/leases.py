"""The producer pool: which named producer workers are alive, and which pairs each one
publishes.

A lease per (producer, worker) lives in Django's cache (locmem for the embedded hub,
Redis when several hub processes share it), written by the hub process that holds the
worker's publish socket every REFRESH_SECONDS and dropped when the socket ends. A hub
killed -9 leaves its leases to expire after LEASE_SECONDS. Every hub computes the
assignment from the same live leases with the same pure function, so all hubs agree
without talking to each other.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any, TypedDict

from django.core.cache import cache

LEASE_SECONDS = 5.0
REFRESH_SECONDS = 1.0


class Lease(TypedDict):
    holder: str  # the channel name of the publish socket that holds it
    since: float  # when that socket connected: the newer socket of a name wins
    expires: float  # epoch seconds


### The assignment (pure)


def _score(pair: str, worker: str) -> bytes:
    return hashlib.blake2b(f"{pair}|{worker}".encode(), digest_size=8).digest()


def assignment(pairs: Sequence[str], workers: Sequence[str]) -> dict[str, list[str]]:
    """Each worker's pairs, in the definition's order: balanced rendezvous.

    The pairs go in sorted order to the worker that ranks best for them
    (blake2b(pair|worker)) among those with room: shares differ by one pair at
    most (plain rendezvous split 6 pairs 5/1), and a worker that joins or leaves
    moves few of the others' pairs. The same inputs give the same answer on every
    hub process.
    """
    names = sorted(set(workers))
    if not names:
        return {}
    unique = sorted(set(pairs))
    floor, extra = divmod(len(unique), len(names))
    owned: dict[str, set[str]] = {name: set() for name in names}
    full = 0  # workers already holding floor + 1 pairs: at most ``extra`` of them
    for pair in unique:
        ranked = sorted(names, key=lambda name: _score(pair, name), reverse=True)
        for name in ranked:
            held = len(owned[name])
            if held < floor or (held == floor and full < extra):
                owned[name].add(pair)
                full += held == floor
                break
    return {name: [p for p in pairs if p in owned[name]] for name in names}


### The leases (in the cache)


def _lease_key(producer: str, worker: str) -> str:
    return f"pool:lease:{producer}:{worker}"


def _names_key(producer: str) -> str:
    return f"pool:names:{producer}"


class Leases:
    """The live workers of each producer pool, in a Django cache (sync: the hub
    calls it through asyncio.to_thread)."""

    def __init__(self, store: Any = None) -> None:
        self.cache = cache if store is None else store

    def hold(
        self,
        producer: str,
        worker: str,
        holder: str,
        since: float,
        now: float | None = None,
    ) -> str | None:
        """Take or refresh ``worker``'s lease for the socket ``holder``.

        Returns the other socket that held the name when this one took it over
        (it must be closed), or None. A live lease of a newer socket is left
        alone: this socket is the ghost, and ``holder`` comes back as the answer.
        """
        now = time.time() if now is None else now
        key = _lease_key(producer, worker)
        current: Lease | None = self.cache.get(key)
        if current and current["expires"] > now and current["holder"] != holder:
            if current["since"] > since:
                return holder
            replaced: str | None = current["holder"]
        else:
            replaced = None
        lease: Lease = {
            "holder": holder,
            "since": since,
            "expires": now + LEASE_SECONDS,
        }
        self.cache.set(key, lease, timeout=LEASE_SECONDS + 1)
        self._list(producer, worker, now)
        return replaced

    def _list(self, producer: str, worker: str, now: float) -> None:
        """Keep ``worker`` in the producer's list of names, and dead names out.

        Two hub processes writing at once may drop a name the other added: it is
        written back within REFRESH_SECONDS by its own hub's next hold.
        """
        names: list[str] = self.cache.get(_names_key(producer)) or []
        live = self._live_leases(producer, names, now)
        kept = [name for name in names if name in live or name == worker]
        if worker not in kept:
            kept.append(worker)
        if kept != names:
            self.cache.set(_names_key(producer), sorted(kept), timeout=None)

    def drop(self, producer: str, worker: str, holder: str) -> None:
        """End the lease at once, if ``holder`` still holds it (a replaced ghost's
        disconnect leaves its successor's lease alone)."""
        key = _lease_key(producer, worker)
        current: Lease | None = self.cache.get(key)
        if current is not None and current["holder"] == holder:
            self.cache.delete(key)

    def holder(
        self, producer: str, worker: str, now: float | None = None
    ) -> str | None:
        now = time.time() if now is None else now
        current: Lease | None = self.cache.get(_lease_key(producer, worker))
        return current["holder"] if current and current["expires"] > now else None

    def live(self, producer: str, now: float | None = None) -> list[str]:
        """The names of the producer's workers whose leases are live, sorted."""
        now = time.time() if now is None else now
        names: list[str] = self.cache.get(_names_key(producer)) or []
        return sorted(self._live_leases(producer, names, now))

    def _live_leases(
        self, producer: str, names: list[str], now: float
    ) -> dict[str, Lease]:
        keys = {_lease_key(producer, name): name for name in names}
        found = self.cache.get_many(list(keys))
        return {
            keys[key]: lease for key, lease in found.items() if lease["expires"] > now
        }

    def shares(
        self, producer: str, pairs: Sequence[str], now: float | None = None
    ) -> dict[str, list[str]]:
        """Each live worker's pairs of the producer's ``pairs``."""
        return assignment(pairs, self.live(producer, now))


leases = Leases()
