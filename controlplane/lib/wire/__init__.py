"""The wire: every protocol candlecast speaks, one module each, and the feed formats.

- columns.py: stream keys, column dtype codes, exact rows, datetimes (shared);
- publish.py: producer worker -> hub (msgpack publishes, JSON acks);
- freqtrade.py: FreqTrade's feed protocol, byte for byte;
- native.py: candlecast.v1, binary columns, exact to the bit;
- shapes.py: what the hub encodes from (Snapshot, Tick); rows.py: decoded rows.

A feed format is chosen per connection by WebSocket subprotocol. The hub's sockets,
groups and snapshot store loop over :data:`FORMATS`, so a new protocol version is one
module plus one entry here. Pure package: no Django, no pandas at import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from controlplane.lib.wire import freqtrade, native
from controlplane.lib.wire.columns import Key
from controlplane.lib.wire.shapes import Broadcast, Snapshot, Tick


@dataclass(frozen=True)
class FeedFormat:
    """One protocol the feed serves, and how the hub encodes it."""

    name: str  # in logs, the status page and the reply cache
    subprotocol: str | None  # what a client offers to get it; None: the default
    binary: bool  # its messages are binary WebSocket frames
    group: str  # prefix of the channel-layer group of its sockets
    reply: Callable[[Key, Snapshot | None], str | bytes]  # an analyzed_df reply
    # A tick's broadcast under a size limit, and the pairs left out of it.
    tick: Callable[[Tick, int], tuple[list[Broadcast], list[str]]]
    offload_rows: int | None  # replies of more rows are built off the event loop


FREQTRADE = FeedFormat(
    name="freqtrade",
    subprotocol=None,
    binary=False,
    group="feed",
    reply=freqtrade.reply,
    tick=freqtrade.tick,
    offload_rows=None,  # joins stored bytes: microseconds
)
NATIVE = FeedFormat(
    name=native.SUBPROTOCOL,
    subprotocol=native.SUBPROTOCOL,
    binary=True,
    group="native",
    reply=native.reply,
    tick=native.tick,
    offload_rows=64,  # 1500 rows take a few ms to columnise
)
NATIVE_ZSTD = FeedFormat(
    name=native.SUBPROTOCOL_ZSTD,
    subprotocol=native.SUBPROTOCOL_ZSTD,
    binary=True,
    group="nativez",
    reply=native.reply_zstd,
    tick=native.tick_zstd,  # packs with NATIVE's packing of the same tick
    offload_rows=64,
)
# Every format, the preferred first: clients offer the subprotocols in this order.
FORMATS = (NATIVE_ZSTD, NATIVE, FREQTRADE)


def negotiate(offered: Iterable[str]) -> FeedFormat:
    """The format for a client that offers these subprotocols (the client's order
    wins, RFC 6455); FreqTrade's protocol when it offers none we speak."""
    for subprotocol in offered:
        for fmt in FORMATS:
            if fmt.subprotocol == subprotocol:
                return fmt
    return FREQTRADE


def offered() -> list[str]:
    """The subprotocols a feed client offers, preferred first."""
    return [fmt.subprotocol for fmt in FORMATS if fmt.subprotocol is not None]


def by_subprotocol(subprotocol: str | None) -> FeedFormat:
    """The format a server selected (None: it selected none, FreqTrade's)."""
    return next((fmt for fmt in FORMATS if fmt.subprotocol == subprotocol), FREQTRADE)
