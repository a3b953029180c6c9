"""What the hub holds for one feed socket that it could not send yet: latest wins.

A feed socket's broadcasts go through its Outbox, so the channel layer's handler
never waits on a slow reader (a handler that waits lets the layer queue thousands of
ticks per socket, and the in-memory layer drops a channel from its groups once a
queued message is 60 s old: the socket then hears nothing, silently). While a socket
is behind, a newer broadcast of a stream replaces the queued older one: an old candle
is worthless once a newer exists, and consumers (ours and FreqTrade's) see the gap in
candle dates and ask for the missed rows. Past the cap, the socket is closed as too
slow. Pure module: no Django.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import OrderedDict
from collections.abc import Hashable

# FreqTrade's texts open with their type and, for a stream's messages, its key:
# {"type":"analyzed_df","data":{"key":["BTC/USDT","5m","spot"],...
# {"type":"new_candle","data":["BTC/USDT","5m","spot"]}
_HEAD = re.compile(r'\{"type":"(\w+)","data":(?:\{"key":)?(\[[^\]]*\])?')
_REPLACEABLE = frozenset({"analyzed_df", "new_candle", "whitelist"})
_unique = itertools.count()


def stream_key(data: str | bytes, position: int) -> Hashable:
    """What a newer broadcast replaces: the same message type of the same stream.

    Args:
        data: the encoded broadcast.
        position: its place in its tick. A native tick carries every pair of one
            publish (split only past the size limit), so the newer tick's message
            at the same place replaces it.
    """
    if isinstance(data, bytes | bytearray):
        return ("tick", position)
    match = _HEAD.match(data, 0, 256)
    if match is None or match.group(1) not in _REPLACEABLE:
        return ("once", next(_unique))  # never replaced: an exception, a notice
    if match.group(1) == "whitelist":
        return ("whitelist",)  # its data is the list itself: the newest one wins
    return (match.group(1), match.group(2))


class SocketTooSlow(Exception):
    """The socket holds more than its cap unsent; the text says how much and for how
    long, and is the close reason."""


class Outbox:
    """One socket's unsent broadcasts, oldest first, at most ``cap`` bytes."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.items: OrderedDict[Hashable, str | bytes] = OrderedDict()
        self.nbytes = 0
        self.superseded = 0  # broadcasts replaced by a newer one, never sent
        self.behind_since: float | None = None  # when it last stopped being empty
        self._ready = asyncio.Event()

    def put(self, key: Hashable, data: str | bytes, now: float | None = None) -> None:
        """Queue ``data`` last; an older message with the same key is dropped.

        Raises:
            SocketTooSlow: the socket now holds more than the cap.
        """
        old = self.items.pop(key, None)
        if old is not None:
            self.nbytes -= len(old)
            self.superseded += 1
        self.items[key] = data
        self.nbytes += len(data)
        if self.behind_since is None:
            self.behind_since = time.monotonic() if now is None else now
        self._ready.set()
        if self.nbytes > self.cap:
            raise SocketTooSlow(self.describe(now))

    async def ready(self) -> None:
        """Return once a message is queued."""
        while not self.items:
            self._ready.clear()
            await self._ready.wait()

    def pop(self) -> str | bytes | None:
        """The oldest queued message, None if there is none."""
        if not self.items:
            return None
        _, data = self.items.popitem(last=False)
        self.nbytes -= len(data)
        return data

    def sent(self) -> None:
        """A message went out; an empty outbox is no longer behind."""
        if not self.items:
            self.behind_since = None

    def describe(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        since = self.behind_since if self.behind_since is not None else now
        return (
            f"too slow: {self.nbytes / 2**20:.1f} MiB unread for {now - since:.0f} s; "
            "reconnect and request history"
        )
