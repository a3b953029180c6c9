"""What a feed client does with each message: decode it, store its frames, ask for
what is missing, and drop (and count, and say why) what it cannot use.

FreqTrade's JSON messages and candlecast.v1's binary ticks take the same steps frame
by frame: key check, gap detection, FrameStore.apply, on_stored. Frames over
OFFLOAD_BYTES are decoded and stored in a thread so other producers keep flowing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from controlplane.lib.candles import CANDLE_TYPES, timeframe_seconds
from controlplane.lib.feedclient.framestore import (
    FULL_FRAME_ROWS,
    FrameStore,
    Key,
    Missing,
    Stored,
)
from controlplane.lib.feedclient.progress import LoadProgress
from controlplane.lib.feedclient.requests import Requests
from controlplane.lib.wire import freqtrade, native

logger = logging.getLogger(__name__)

# Frames above this are decoded (and stored) in a thread: a 400-column frame takes
# ~100 ms to decode, which would stall every other producer on the loop.
OFFLOAD_BYTES = 256 * 1024
# At most this many distinct reasons are counted; later ones count as "other".
DROP_KINDS = 100


class Dispatch:
    """Acts on one followed producer's messages.

    ``on_stored(name, stored)`` runs on the event loop for every frame stored;
    ``on_error(text)`` records and logs a problem the user should see.
    """

    def __init__(
        self,
        name: str,
        store: FrameStore,
        requests: Requests,
        on_stored: Callable[[str, Stored], None] | None,
        on_error: Callable[[str], None],
    ) -> None:
        self.name, self.store, self.requests = name, store, requests
        self.on_stored, self.on_error = on_stored, on_error
        self.progress = LoadProgress(name)
        self.dropped: dict[str, int] = {}
        self.max_bytes = 8 << 20  # a compressed message's size, decompressed

    def new_link(self) -> None:
        self.progress = LoadProgress(self.name)

    async def handle(self, text: str | bytes, protocol: str | None) -> None:
        """Act on one message from the producer; a bad one is dropped and logged."""
        if isinstance(text, bytes) and protocol == native.SUBPROTOCOL_ZSTD:
            try:
                text = native.decompress(text, self.max_bytes)
            except native.ProtocolError as exc:
                self.drop("malformed", f"dropped a malformed message ({exc})")
                return
            protocol = native.SUBPROTOCOL
        if isinstance(text, bytes) and protocol == native.SUBPROTOCOL:
            await self._native(text)
            return
        offload = len(text) > OFFLOAD_BYTES
        try:
            message = await _decoded(freqtrade.decode_message, text, offload)
        except (ValueError, TypeError, OverflowError) as exc:  # ProtocolError, pandas
            self.drop(
                "malformed",
                f"dropped a malformed message ({exc}); the producer "
                "sends frames this worker cannot read: check that it is a "
                "FreqTrade or candlecast producer of a supported version",
            )
            return
        kind, data = message["type"], message.get("data")
        if kind not in freqtrade.MESSAGE_TYPES:
            self.drop(
                "invalid-type",
                f"dropped a message of unknown type {kind!r}; "
                "nothing to do unless the producer misbehaves otherwise",
            )
        elif kind == "whitelist" and data == [] and not self.requests.listed:
            # The answer to our opening: the producer has no pairs yet, so our
            # request for every pair's history is answered with nothing. Pairs it
            # lists later were never asked for: their first broadcast asks (see
            # _unasked_first). A later empty whitelist is dropped, as FreqTrade does.
            logger.info(
                "%s: the producer lists no pairs yet; waiting for its whitelist",
                self.name,
            )
            self.requests.expect_opening_reply([])
        elif kind in ("whitelist", "analyzed_df", "exception") and not data:
            self.drop(
                "empty",
                f"dropped a {kind} message without data; the producer "
                "may have nothing to send yet",
            )
        elif kind == "whitelist":
            self._whitelist(data)
        elif kind == "analyzed_df":
            await self._frame(data, offload)
        elif kind == "exception":
            self.drop(
                f"exception:{str(data)[:200]}",
                f"the producer answered an error: {str(data)[:200]}",
            )
        else:
            logger.debug("%s: ignored a %s message", self.name, kind)

    async def _native(self, data: bytes) -> None:
        """One native message: a tick (every pair's new rows) or a reply."""
        offload = len(data) > OFFLOAD_BYTES
        try:
            message = await _decoded(native.decode, data, offload)
        except (ValueError, TypeError, OverflowError) as exc:  # ProtocolError, pandas
            self.drop(
                "malformed",
                f"dropped a malformed {native.SUBPROTOCOL} message ({exc}); the "
                "hub sends frames this worker cannot read: check that hub and "
                "worker run the same candlecast version",
            )
            return
        if message["whitelist"] is not None:
            self._whitelist(message["whitelist"])
        for frame in message["frames"]:
            await self._frame(frame, offload)

    def _whitelist(self, pairs: list[str]) -> None:
        self.store.set_whitelist(pairs)
        self.progress.expect(pairs)
        self.requests.expect_opening_reply(pairs)

    async def _frame(
        self, data: freqtrade.DecodedAnalyzedDf | native.DecodedFrame, offload: bool
    ) -> None:
        pair, timeframe, candle_type = data["key"]
        key: Key = (pair, timeframe, candle_type)
        if not self._known_key(key):
            return
        if self._unasked_first(key, data["df"]):
            # A broadcast row for a pair we hold nothing of (its history reached the
            # hub after our opening request, or the pair is new): ask for the
            # history, as FreqTrade does, rather than keep one row as if it were all.
            self.requests.queue(Missing(key, self.requests.opening_limit()))
            return
        # One row for a pair we hold nothing of and asked more of: a candle that
        # closed while the hub answered the pairs before it. Kept, but it answers
        # nothing: the pair is loaded when its reply (read after the candle, so
        # holding it) replaces it, or, should the producer hold that one row only,
        # at the pair's next frame.
        early = (
            len(data["df"]) == 1
            and key not in self.store
            and self.requests.asked_for_more(pair, 1)
        )
        try:
            if offload:
                result = await asyncio.to_thread(
                    self.store.apply, key, data["df"], data["la"]
                )
            else:
                result = self.store.apply(key, data["df"], data["la"])
        except Exception as exc:  # one bad frame must not end the link
            self.drop("bad-frame", f"dropped a frame for {pair} ({exc})")
            return
        if isinstance(result, Missing):
            self.requests.queue(result)
            return
        if early:
            return
        self.requests.answered(pair)
        if result is not None and result.replaced:
            # A whole frame drops every row held before: worth a line when a
            # consumer's history is shorter than expected.
            logger.debug(
                "%s: %s replaced by a whole frame of %d rows, %s to %s",
                self.name,
                pair,
                len(data["df"]),
                result.first,
                result.last,
            )
        self.progress.loaded(pair, 0 if result is None else result.rows)
        if result is not None and self.on_stored is not None:
            self.on_stored(self.name, result)

    def _unasked_first(self, key: Key, df: Any) -> bool:
        """A short frame for a key with nothing stored and no request of ours."""
        return (
            0 < len(df) < FULL_FRAME_ROWS
            and not self.requests.asked(key[0])
            and key not in self.store
        )

    def _known_key(self, key: tuple) -> bool:
        try:
            timeframe_seconds(key[1])
        except ValueError as exc:
            self.drop(
                "bad-key",
                f"dropped a frame for {key[0]}: {exc}; the producer "
                "publishes a timeframe this worker cannot follow",
            )
            return False
        if key[2] not in CANDLE_TYPES:
            self.drop(
                "bad-key",
                f"dropped a frame for {key[0]}: candle type "
                f"{key[2]!r} is not one of {', '.join(CANDLE_TYPES)}",
            )
            return False
        return True

    def drop(self, kind: str, text: str) -> None:
        """Log a dropped message once per kind (later ones at debug), and count it."""
        if kind not in self.dropped and len(self.dropped) >= DROP_KINDS:
            kind = "other"  # distinct error texts must not grow this without bound
        self.dropped[kind] = self.dropped.get(kind, 0) + 1
        if self.dropped[kind] == 1:
            self.on_error(text)
        else:
            logger.debug("%s: %s", self.name, text)


async def _decoded(decode: Callable[..., Any], data: Any, offload: bool) -> Any:
    """``decode(data)`` with frames as Rows (the FrameStore builds DataFrames when
    they are read), in a thread when ``offload``: other producers keep flowing."""
    if offload:
        return await asyncio.to_thread(decode, data, as_rows=True)
    return decode(data, as_rows=True)
