"""The requests a feed client sends: the opening three, then gap-fills per pair.

A gap-fill is queued per pair (the biggest limit asked wins), kept until it is sent,
so a link that drops loses none, and not repeated while its answer is on the way.
After a frame over message_size_limit the row cap halves: every request asks for at
most that many rows, where FreqTrade would ask for the same frame forever (§14.2).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from controlplane.lib.feedclient.framestore import Missing
from controlplane.lib.wire import freqtrade

logger = logging.getLogger(__name__)

MAX_ROWS = freqtrade.MAX_LIMIT
# A gap-fill request already sent on this link is not repeated for this long.
REQUEST_RETRY_SECONDS = 30.0


def request_text(kind: str, data: Any = None) -> str:
    message = {"type": kind} if data is None else {"type": kind, "data": data}
    return orjson.dumps(message).decode()


class Requests:
    """One followed producer's requests; ``initial_limit``: initial_candle_limit."""

    def __init__(self, name: str, initial_limit: int) -> None:
        self.name = name
        self.initial_limit = initial_limit
        self.row_cap: int | None = None  # after a frame over message_size_limit
        self._pending: dict[str, int] = {}  # pair -> limit; outlives any link
        self._in_flight: dict[str, tuple[int, float]] = {}  # this link's requests
        self._listed = False  # this link's first whitelist arrived

    def new_link(self) -> None:
        """A new link: what was in flight on the last one will never be answered."""
        self._in_flight.clear()
        self._listed = False

    def opening(self) -> list[str]:
        """subscribe, whitelist, analyzed_df: FreqTrade's three, minus its 0.5 s gaps.

        Unlike FreqTrade we honour initial_candle_limit (0 asks for the whole frame).
        """
        return [
            request_text("subscribe", ["whitelist", "analyzed_df"]),
            request_text("whitelist"),
            request_text(
                "analyzed_df", {"limit": self.capped(self.initial_limit), "pair": None}
            ),
        ]

    def opening_limit(self) -> int:
        return self.capped(self.initial_limit) or MAX_ROWS

    def capped(self, limit: int) -> int:
        if self.row_cap is None:
            return limit
        return min(limit or MAX_ROWS, self.row_cap)

    def halve(self) -> int:
        """A frame was too big: ask for half as many rows from now on."""
        self.row_cap = max(1, (self.row_cap or self.initial_limit or MAX_ROWS) // 2)
        return self.row_cap

    def expect_opening_reply(self, pairs: list[str]) -> None:
        """The link's first whitelist names the pairs our opening request answers."""
        if self._listed:
            return
        self._listed = True
        sent = (self.opening_limit(), time.monotonic())
        for pair in pairs:
            self._in_flight.setdefault(pair, sent)

    @property
    def listed(self) -> bool:
        """This link's first whitelist arrived (our opening request is answered
        for exactly its pairs)."""
        return self._listed

    def asked(self, pair: str) -> bool:
        return pair in self._in_flight

    def asked_for_more(self, pair: str, rows: int) -> bool:
        """Whether our request in flight for ``pair`` wants more than ``rows``."""
        sent = self._in_flight.get(pair)
        return sent is not None and (sent[0] or MAX_ROWS) > rows

    def answered(self, pair: str) -> None:
        self._in_flight.pop(pair, None)

    def queue(self, missing: Missing) -> None:
        pair, limit = missing.key[0], self.capped(missing.limit)
        sent = self._in_flight.get(pair)
        if (
            sent
            and sent[0] >= limit
            and time.monotonic() - sent[1] < REQUEST_RETRY_SECONDS
        ):
            return  # asked already; the answer is on its way
        self._pending[pair] = max(self._pending.get(pair, 0), limit)

    async def flush(self, ws: ClientConnection) -> None:
        while self._pending:
            pair, limit = next(iter(self._pending.items()))
            await ws.send(request_text("analyzed_df", {"limit": limit, "pair": pair}))
            # Removed only once sent: a request never vanishes with a dropped link.
            del self._pending[pair]
            self._in_flight[pair] = (limit, time.monotonic())
            logger.info("%s: requesting %d candles of %s", self.name, limit, pair)
