"""How far a link's initial frames have loaded, said in the log at most every second.

A cold start of 100 pairs x 1500 rows takes seconds on a small machine: the consumer
worker says what it is waiting for instead of staying silent.
"""

from __future__ import annotations

import logging
import time

# It speaks for the link it reports on: one logger for a link, in every module.
logger = logging.getLogger("controlplane.lib.feedclient.client")


class LoadProgress:
    """Says how far the initial frames of one link have loaded, at most every second.

    A pair the producer has no rows for yet answers with an empty frame: it counts as
    waiting, not loaded, until rows arrive (after the producer publishes).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.monotonic()
        self.logged = self.started
        self.expected: list[str] | None = None
        self.rows: dict[str, int] = {}
        self.done = False
        self.said_waiting = False

    def expect(self, whitelist: list[str]) -> None:
        self.expected = list(whitelist)
        self._report()

    def loaded(self, pair: str, rows: int) -> None:
        if rows or pair not in self.rows:
            self.rows[pair] = max(rows, self.rows.get(pair, 0))
        self._report()

    def _report(self) -> None:
        if self.done or self.expected is None:
            return
        have = [self.rows[p] for p in self.expected if self.rows.get(p)]
        answered = sum(p in self.rows for p in self.expected)
        total, now = len(self.expected), time.monotonic()
        if len(have) == total:
            self.done = True
            logger.info(
                "%s: all %d pairs loaded in %.1f s (%s)",
                self.name,
                total,
                now - self.started,
                _rows_text(have),
            )
        elif answered == total and not self.said_waiting:
            self.said_waiting = True
            logger.info(
                "%s: %d/%d pairs loaded; the producer has no data yet for "
                "the others, waiting for it to publish",
                self.name,
                len(have),
                total,
            )
        elif now - self.logged >= 1.0:
            self.logged = now
            logger.info("%s: loaded %d/%d pairs", self.name, len(have), total)


def _rows_text(rows: list[int]) -> str:
    low, high = min(rows), max(rows)
    return f"{low} rows each" if low == high else f"{low}-{high} rows"
