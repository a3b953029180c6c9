"""candlecast's native feed encoding: msgpack with binary columns, exact to the bit.

Negotiated per connection as the WebSocket subprotocol ``candlecast.v1``, which
FreqTrade never offers. Numeric columns travel as raw little-endian numpy buffers
(decoded with ``np.frombuffer``, no parsing), datetimes as int64 epoch milliseconds,
strings and objects as msgpack lists. Floats keep every bit (NaN, +-inf, 1e-300, whole
numbers stay float64), and every column keeps its dtype. Pure module: no Django.

A native message is one msgpack map::

    {"type": "tick" | "analyzed_df", "whitelist": [pair, ...] | None,
     "frames": [{"key": [pair, timeframe, candle_type], "la": RFC 3339, "first": int,
                 "rows": int, "new_candle": bool,
                 "columns": [[name, dtype code, payload], ...]}, ...]}

One ``tick`` carries every pair's new rows of one publish (and whitelist changes); an
``analyzed_df`` answers a request. Frames are packed once and spliced into messages
as bytes, so the hub can split a big tick under the size limit without re-encoding.

``candlecast.v1+zstd`` is the same message in one zstd frame (content size in the
header), compressed once per hub process whatever the number of sockets; its replies'
numeric columns are byte-shuffled first (code suffix ``/s``). A client offers it
first; an older hub or client falls back to plain ``candlecast.v1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

import msgpack
import numpy as np
import zstandard

from controlplane.lib.wire.columns import (
    DATETIME,
    EPOCH,
    OBJECT,
    STRING,
    TIMEDELTA,
    Key,
    ProtocolError,
    format_datetime,
    is_dtype_code,
    load_msgpack,
    parse_datetime,
)

if TYPE_CHECKING:
    import pandas as pd

    from controlplane.lib.wire.rows import Rows
    from controlplane.lib.wire.shapes import Broadcast, Snapshot, Tick

SUBPROTOCOL = "candlecast.v1"
SUBPROTOCOL_ZSTD = "candlecast.v1+zstd"
# Level 3 (zstd's default): measured against 1, 9, lz4 and deflate on 1500-row
# replies and 100-pair ticks (docs/benchmarks.md, the native codec).
ZSTD_LEVEL = 3
SHUFFLED = "/s"  # a column code's suffix: its bytes are shuffled (see shuffled())

NAT = np.iinfo(np.int64).min


class DecodedFrame(TypedDict):
    key: list[str]
    df: pd.DataFrame | Rows  # Rows when decoded with as_rows=True
    la: datetime | None
    new_candle: bool


class DecodedMessage(TypedDict):
    type: str
    whitelist: list[str] | None
    frames: list[DecodedFrame]


### Columns from stored rows (hub side)


def columns_from_rows(
    names: Sequence[str], codes: Sequence[str] | None, rows: Sequence[Sequence[Any]]
) -> list[list[Any]]:
    """Wire columns ``[name, code, payload]`` built from row lists.

    A column's declared code is kept when its values fit it exactly; otherwise (no
    codes, an int column that gained a None, a producer whose dtypes changed between
    publishes) the code is inferred from the values, never losing one.
    """
    cells = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    out = []
    for number, name in enumerate(names):
        code = codes[number] if codes else None
        out.append(_column(name, code, cells[number]))
    return out


def _column(name: str, code: str | None, values: tuple) -> list[Any]:
    types = set(map(type, values))
    if code is None or not _fits(code, types):
        code = _infer(name, types)
    try:
        return [name, code, _payload(code, values)]
    except OverflowError:  # an int beyond the dtype's range: objects keep it exact
        return [name, OBJECT, list(values)]


def _fits(code: str, types: set[type]) -> bool:
    if code in (DATETIME, TIMEDELTA):
        return types <= {int, type(None)}
    if code == STRING:
        return types <= {str, type(None)}
    if code == OBJECT:
        return True
    kind = np.dtype(code).kind
    if kind == "f":
        return types <= {float, int, type(None)}
    if kind == "b":
        return types <= {bool}
    return types <= {int}  # i, u: range checked when packed


def _infer(name: str, types: set[type]) -> str:
    if name == "date" and types <= {int, type(None)}:
        return DATETIME
    if types <= {int}:
        return "<i8"
    if types <= {float, int, type(None)}:
        return "<f8"
    if types <= {bool}:
        return "|b1"
    if types <= {str, type(None)}:
        return STRING
    return OBJECT


def _payload(code: str, values: tuple) -> bytes | list:
    if code in (STRING, OBJECT):
        return list(values)
    if code in (DATETIME, TIMEDELTA):
        return np.array(
            [NAT if v is None else v for v in values], dtype="<i8"
        ).tobytes()
    return np.array(values, dtype=code).tobytes()  # None -> NaN for floats


### Encoding (hub side)

_packer = msgpack.Packer(use_bin_type=True)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def array_header(length: int) -> bytes:
    """The msgpack header of an array of ``length`` items packed separately."""
    return _packer.pack_array_header(length)


def frame_block(
    key: Sequence[str],
    columns: list[list[Any]],
    rows: int,
    first: int,
    la: datetime,
    *,
    new_candle: bool = False,
) -> bytes:
    """One frame, packed once, to splice into any number of messages."""
    return pack(
        {
            "key": list(key),
            "la": format_datetime(la),
            "first": first,
            "rows": rows,
            "new_candle": new_candle,
            "columns": columns,
        }
    )


def message(
    kind: str, blocks: Sequence[bytes], whitelist: Sequence[str] | None = None
) -> bytes:
    """A native message from packed frame blocks (spliced, not re-encoded)."""
    return b"".join(
        (
            _packer.pack_map_header(3),
            pack("type"),
            pack(kind),
            pack("whitelist"),
            pack(None if whitelist is None else list(whitelist)),
            pack("frames"),
            array_header(len(blocks)),
            *blocks,
        )
    )


def tick_messages(
    blocks: Sequence[bytes], whitelist: Sequence[str] | None, size_limit: int
) -> tuple[list[bytes], list[int]]:
    """One tick as few messages as fit ``size_limit`` each: usually exactly one.

    Returns the messages and the indexes of blocks too big for any message (the
    caller logs them; consumers notice the hole and ask for the rows).
    """
    messages: list[bytes] = []
    current: list[bytes] = []
    oversize: list[int] = []
    size = 0
    first_whitelist = whitelist
    for number, block in enumerate(blocks):
        if len(block) + 64 > size_limit:
            oversize.append(number)
            continue
        if current and size + len(block) > size_limit:
            messages.append(message("tick", current, first_whitelist))
            first_whitelist, current, size = None, [], 0
        current.append(block)
        size += len(block)
    if current or first_whitelist is not None:
        messages.append(message("tick", current, first_whitelist))
    return messages, oversize


def snapshot_columns(snapshot: Snapshot) -> list[list[Any]]:
    """A snapshot's stored msgpack rows as native wire columns."""
    packed = snapshot.packed
    rows = (
        msgpack.unpackb(array_header(len(packed)) + b"".join(packed), raw=False)
        if packed
        else []
    )
    return columns_from_rows(snapshot.columns, snapshot.dtypes, rows)


def reply(key: Key, snapshot: Snapshot | None, *, shuffle: bool = False) -> bytes:
    """The analyzed_df reply of a stream's rows (an empty frame, la = EPOCH, for a
    stream the hub does not have). Exact values and dtypes. ``shuffle``: numeric
    columns byte-shuffled (for the zstd format only)."""
    if snapshot is None:
        return message("analyzed_df", [frame_block(key, [], 0, 0, EPOCH)])
    columns = snapshot_columns(snapshot)
    if shuffle:
        columns = shuffled(columns)
    block = frame_block(
        key, columns, len(snapshot.rows), snapshot.first_index, snapshot.la
    )
    return message("analyzed_df", [block])


def _tick(update: Tick, size_limit: int) -> tuple[list[Broadcast], list[str]]:
    blocks = [
        frame_block(
            frame.key,
            snapshot_columns(frame.rows),
            len(frame.rows.rows),
            frame.rows.first_index,
            frame.rows.la,
            new_candle=frame.new_candle,
        )
        for frame in update.frames
    ]
    packed, oversize = tick_messages(blocks, update.whitelist, size_limit)
    topics = update.topics
    left_out = [update.frames[number].key[0] for number in oversize]
    return [(topics, data) for data in packed], left_out


_last_tick: tuple[Tick, tuple[list[Broadcast], list[str]]] | None = None


def tick(update: Tick, size_limit: int) -> tuple[list[Broadcast], list[str]]:
    """A tick as few binary messages as fit ``size_limit``: usually one, carrying
    every pair's new rows. Returns the messages and the pairs too big to send.

    The hub asks once per native format for the same tick: it is packed once."""
    global _last_tick
    if _last_tick is not None and _last_tick[0] is update:
        return _last_tick[1]
    result = _tick(update, size_limit)
    _last_tick = (update, result)
    return result


### zstd (candlecast.v1+zstd)


def compress(data: bytes) -> bytes:
    """One message as one zstd frame that says its decompressed size."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


def decompress(data: bytes, limit: int) -> bytes:
    """A candlecast.v1+zstd message's native bytes, at most ``limit`` of them.

    Raises:
        ProtocolError: not a zstd frame, no size in its header, or over ``limit``.
    """
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise ProtocolError(
            f"not a {SUBPROTOCOL_ZSTD} message ({exc}): the producer speaks another "
            "protocol on this link"
        ) from None
    if size < 0 or size > limit:
        raise ProtocolError(
            f"a {SUBPROTOCOL_ZSTD} message must say its size, at most the "
            f"{limit >> 20} MiB message size limit (it says {size})"
        )
    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise ProtocolError(f"a corrupt {SUBPROTOCOL_ZSTD} message ({exc})") from None


def shuffled(columns: list[list[Any]]) -> list[list[Any]]:
    """Numeric columns with their bytes regrouped: every value's first byte, then
    every second byte... (code + SHUFFLED). Sign, exponent and high mantissa bytes
    of neighbouring candles repeat, which zstd then finds: 13% fewer bytes on a
    1500-row frame of exact float64s (docs/benchmarks.md)."""
    out = []
    for name, code, payload in columns:
        size = _item_size(code)
        if isinstance(payload, bytes) and size > 1 and len(payload) > size:
            grid = np.frombuffer(payload, dtype=np.uint8).reshape(-1, size)
            name, code, payload = name, code + SHUFFLED, grid.T.tobytes()
        out.append([name, code, payload])
    return out


def _item_size(code: str) -> int:
    if code in (DATETIME, TIMEDELTA):
        return 8
    if code in (STRING, OBJECT):
        return 0
    return np.dtype(code).itemsize


def _unshuffled(payload: bytes, size: int) -> bytes:
    return np.frombuffer(payload, dtype=np.uint8).reshape(size, -1).T.tobytes()


def reply_zstd(key: Key, snapshot: Snapshot | None) -> bytes:
    return compress(reply(key, snapshot, shuffle=True))


def tick_zstd(update: Tick, size_limit: int) -> tuple[list[Broadcast], list[str]]:
    """The native tick's messages, each compressed once (a size limit counts the
    native bytes, so the client's decompression limit holds)."""
    messages, left_out = tick(update, size_limit)
    packed = [(t, compress(d) if isinstance(d, bytes) else d) for t, d in messages]
    return packed, left_out


### Decoding (consumer side)


def decode(data: bytes, *, as_rows: bool = False) -> DecodedMessage:
    """A native message as Python objects: every frame a DataFrame, or with
    ``as_rows`` the decoded :class:`~controlplane.lib.wire.rows.Rows` (what a
    FrameStore keeps).

    Raises:
        ProtocolError: the message is not a candlecast.v1 message, saying where.
    """
    raw = load_msgpack(data, "a candlecast.v1 message (is this link another protocol?)")
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise ProtocolError('a candlecast.v1 message is a map with a "type"')
    whitelist = raw.get("whitelist")
    if whitelist is not None and not (
        isinstance(whitelist, list) and all(isinstance(p, str) for p in whitelist)
    ):
        raise ProtocolError("the native whitelist must be a list of pairs or null")
    frames = raw.get("frames")
    if not isinstance(frames, list):
        raise ProtocolError('a candlecast.v1 message needs a "frames" list')
    decoded = [_decode_frame(f, n, as_rows) for n, f in enumerate(frames)]
    return {"type": raw["type"], "whitelist": whitelist, "frames": decoded}


def _decode_frame(frame: Any, number: int, as_rows: bool) -> DecodedFrame:
    where = f"native frame {number}"
    if not isinstance(frame, dict):
        raise ProtocolError(f"{where} must be a map")
    key = frame.get("key")
    if not (
        isinstance(key, list) and len(key) == 3 and all(isinstance(k, str) for k in key)
    ):
        raise ProtocolError(f"{where} key must be [pair, timeframe, candle_type]")
    rows, first = frame.get("rows"), frame.get("first", 0)
    if type(rows) is not int or rows < 0 or type(first) is not int:
        raise ProtocolError(f"{where} ({key[0]}) needs int rows >= 0 and int first")
    columns = frame.get("columns")
    if not isinstance(columns, list):
        raise ProtocolError(f"{where} ({key[0]}) needs a columns list")
    la = frame.get("la")
    decoded = _decode_columns(columns, rows, first, f"{where} ({key[0]})")
    return {
        "key": key,
        "df": decoded if as_rows else decoded.frame(),
        "la": parse_datetime(la, f"{where} la") if la else None,
        "new_candle": frame.get("new_candle") is True,
    }


def _decode_columns(columns: list, rows: int, first: int, where: str) -> Rows:
    from controlplane.lib.wire.rows import Rows  # pandas: the hub never decodes

    if not columns:
        return Rows((), [], range(0))
    names, decoded, finish = [], [], {}
    for number, column in enumerate(columns):
        if not (isinstance(column, list) and len(column) == 3):
            raise ProtocolError(f"{where} column {number} must be [name, code, data]")
        name, code, payload = column
        decoded.append(_decode_column(name, code, payload, rows, where))
        names.append(name)
        if isinstance(code, str) and code.removesuffix(SHUFFLED) == DATETIME:
            finish[number] = DATETIME  # UTC datetimes
        elif code == STRING:  # pandas strings
            finish[number] = code
    return Rows(names, decoded, range(first, first + rows), finish)


def _decode_column(name: Any, code: Any, payload: Any, rows: int, where: str) -> Any:
    if isinstance(code, str) and code.endswith(SHUFFLED):
        code = code.removesuffix(SHUFFLED)
        size = _item_size(code) if is_dtype_code(code) else 0
        if size < 2 or not isinstance(payload, bytes) or len(payload) != rows * size:
            raise ProtocolError(
                f"{where} column {name!r}: a shuffled column needs {rows} values "
                f"of a numeric dtype, not {code!r}"
            )
        payload = _unshuffled(payload, size)
    if not is_dtype_code(code):
        raise ProtocolError(f"{where} column {name!r} has an unknown dtype {code!r}")
    if code in (STRING, OBJECT):
        if not isinstance(payload, list) or len(payload) != rows:
            raise ProtocolError(f"{where} column {name!r} must list {rows} values")
        values = np.empty(rows, dtype=object)
        for number, value in enumerate(payload):  # lists stay lists, not a 2-D array
            values[number] = value
        return values
    dtype = np.dtype("<i8" if code in (DATETIME, TIMEDELTA) else code)
    if not isinstance(payload, bytes) or len(payload) != rows * dtype.itemsize:
        raise ProtocolError(
            f"{where} column {name!r} must hold {rows} x {dtype.itemsize} bytes"
        )
    values = np.frombuffer(payload, dtype=dtype)
    if code == DATETIME:
        from controlplane.lib.wire.rows import utc_dates

        return utc_dates(values)  # NaT stays NaT
    if code == TIMEDELTA:
        return values.view("m8[ms]")
    return values
