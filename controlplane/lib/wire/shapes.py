"""The shapes every feed format encodes from: a stream's stored rows and a tick.

The hub's snapshot store hands out :class:`Snapshot`s; a publish becomes one
:class:`Tick`. Each format (freqtrade.py, native.py) turns them into its own bytes,
once, for every socket that speaks it. Pure module: no Django, no pandas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from controlplane.lib.wire.columns import Key

# One encoded broadcast message: the topics it carries, and its payload (text for
# FreqTrade's protocol, bytes for a binary one). A socket gets it when it subscribed
# to any of the topics.
Broadcast = tuple[tuple[str, ...], str | bytes]


@dataclass
class Snapshot:
    """A stream's stored rows (or its newest ones), encoded once per format family."""

    columns: list[str]
    rows: list[bytes]  # one JSON array per row: FreqTrade's replies join them
    first_index: int  # position of rows[0] in the stored snapshot, FreqTrade's label
    la: datetime
    version: int
    packed: list[bytes] = field(default_factory=list)  # the rows as msgpack, exact
    dtypes: list[str] | None = None  # the columns' dtype codes; None: infer


@dataclass(frozen=True)
class TickFrame:
    """One stream's part of a tick: the rows to broadcast, fresh from the store."""

    key: Key
    rows: Snapshot
    new_candle: bool


@dataclass
class Tick:
    """One publish's changes, broadcast once in every format."""

    whitelist: list[str] | None = None  # a changed whitelist
    frames: list[TickFrame] = field(default_factory=list)

    @property
    def topics(self) -> tuple[str, ...]:
        """The feed topics this tick carries, sorted."""
        topics = {"analyzed_df"} if self.frames else set()
        if self.whitelist is not None:
            topics.add("whitelist")
        if any(frame.new_candle for frame in self.frames):
            topics.add("new_candle")
        return tuple(sorted(topics))
