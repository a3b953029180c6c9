"""permessage-deflate (RFC 7692) payloads, compressed once per message per process.

Every socket that negotiated deflate without server context takeover can take the
same compressed bytes: a broadcast or a cached reply costs one compression in a hub
process, whatever the number of consumers. Entries are keyed by the message itself
(the text or bytes the socket would have sent) and the window size.

libdeflate compresses: it needs 0.92x zlib's bytes at 0.4x its CPU on a 1500-row
FreqTrade reply (docs/benchmarks.md). Its stream ends in a block with BFINAL set,
which RFC 7692 allows in the form of its example 7.2.3.4: the final block, then one
0x00 octet, the header bits (BFINAL 0, BTYPE 00) of the empty stored block whose
LEN and NLEN are the 0x00 0x00 0xff 0xff every receiver appends. Without that
octet, a decoder that keeps one inflater for the connection and resets it at the
final block (Chromium's, WebKit's, libsoup's) reads the appended octets as the
start of a stored block and fails the socket at the next message (Chromium: "Invalid
frame header"). A decoder that starts each message afresh, as
server_no_context_takeover (always set by the hub) lets it, ignores what follows
the final block. libdeflate has no window under 32 KiB: a client that asks for one
gets zlib's.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict

import deflate as libdeflate

# libdeflate's 9 against its 6: 0.5% fewer bytes for 1.6x the CPU; 10 and up search
# for optimal matches (2.5-5x the CPU, 3% fewer bytes). Measured in
# docs/benchmarks.md.
LEVEL = 9
ZLIB_LEVEL = zlib.Z_DEFAULT_COMPRESSION
# Keys are mostly the reply cache's own strings (shared, not copied): the budget
# mainly bounds the compressed payloads and the broadcasts a Redis layer hands over.
CACHE_BYTES = 256 << 20
TAIL = b"\x00\x00\xff\xff"  # every sync flush ends so; RFC 7692 7.2.1 drops it
# After a final block: the start of the empty stored block TAIL completes.
AFTER_FINAL_BLOCK = b"\x00"


def deflate(data: bytes, window_bits: int = zlib.MAX_WBITS) -> bytes:
    """One message's permessage-deflate payload, independent of any other."""
    if window_bits == zlib.MAX_WBITS:
        return libdeflate.deflate_compress(data, LEVEL) + AFTER_FINAL_BLOCK
    compressor = zlib.compressobj(ZLIB_LEVEL, zlib.DEFLATED, -window_bits)
    payload = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return payload[: -len(TAIL)]


class DeflateCache:
    """A small LRU of compressed payloads, bounded by bytes held."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.held = 0
        self.compressions = 0  # what the cache could not spare: one per message
        self._entries: OrderedDict[tuple[str | bytes, int], bytes] = OrderedDict()

    def payload(self, message: str | bytes, window_bits: int = zlib.MAX_WBITS) -> bytes:
        key = (message, window_bits)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        data = message.encode() if isinstance(message, str) else message
        found = deflate(data, window_bits)
        self.compressions += 1
        cost = len(message) + len(found)
        if cost <= self.max_bytes:
            self._entries[key] = found
            self.held += cost
            while self.held > self.max_bytes:
                (old, _), dropped = self._entries.popitem(last=False)
                self.held -= len(old) + len(dropped)
        return found


shared = DeflateCache()
