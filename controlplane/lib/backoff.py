"""Reconnect delays for every worker: exponential, capped, with jitter.

One policy for the feed client's links, the producer worker's publish socket and the
workers' config calls to the hub. The jitter spreads reconnects, so that clients cut
off together (a hub restart) do not come back together.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays from ``initial``, doubling after each failure, never over ``cap``."""

    def __init__(self, initial: float, cap: float) -> None:
        self.configure(initial, cap)
        self.reset()

    def configure(self, initial: float, cap: float) -> None:
        """New bounds (settings changed); the next delay stays where it was, capped."""
        self.initial, self.cap = initial, max(initial, cap)

    def reset(self) -> None:
        """A connection proved healthy: start again from ``initial``."""
        self._next = self.initial

    def next(self) -> float:
        delay = min(self._next, self.cap)
        self._next = min(delay * 2, self.cap)
        return jitter(delay)

    def at_cap(self) -> float:
        """The longest delay: for faults a retry soon would not cure (a refusal)."""
        self._next = self.cap
        return jitter(self.cap)


def jitter(delay: float) -> float:
    return delay * random.uniform(0.8, 1.2)
