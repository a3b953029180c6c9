"""The publish protocol: producer worker -> hub, over the hub's publish socket.

A publish message is msgpack (binary): exact floats (NaN, +-inf) and each column's
dtype code reach the hub, which checks the whole message before it stores a row and
answers every message with an ack or an error (JSON text). A producer worker that
names itself (WORKER_HEADER) joins its producer's pool: the hub tells it which pairs
are its own with assign messages (JSON text), at any time. Pure module: no Django.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import msgpack
import orjson

from controlplane.lib.candles import CANDLE_TYPES, timeframe_seconds
from controlplane.lib.wire.columns import (
    Key,
    ProtocolError,
    check_key,
    check_pair,
    encode_row_json,
    exact_rows,
    format_datetime,
    is_dtype_code,
    is_strings,
    load_msgpack,
    load_object,
    parse_datetime,
    short,
)

if TYPE_CHECKING:
    import pandas as pd


# Bounds of a frame beyond the message size limit: what a strategy's dataframe has
# (FreqTrade strategies: tens to a few hundred columns) with room to spare.
MAX_COLUMNS = 2048
MAX_COLUMN_NAME = 256
MAX_DATE_MS = 9_223_372_036_854  # pandas' Timestamp.max, in epoch ms

# The handshake header a producer worker names itself with, to join the pool.
WORKER_HEADER = "X-Candlecast-Worker"
MAX_WORKER_NAME = 64
# The hub's close code for a pool worker's socket that a newer socket of the same
# worker name replaced (a restarted worker's ghost, or two workers of one name).
CLOSE_REPLACED = 4409
# Shown on the status page and in /metrics labels: a short, plain name.
_WORKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]*")


class PublishFrame(TypedDict):
    key: list[str]
    columns: list[str]
    dtypes: list[str]  # one dtype code per column
    rows: list[list[Any]]  # exact: floats keep NaN and +-inf in a msgpack publish
    la: str
    full: bool  # True: the rows are the whole history; False: upsert by date
    new_candle: bool


class PublishData(TypedDict):
    whitelist: list[str] | None
    frames: list[PublishFrame]


class PublishMessage(TypedDict):
    type: Literal["publish"]
    seq: int
    data: PublishData


class AckMessage(TypedDict):
    type: Literal["ack"]
    seq: int


class ErrorMessage(TypedDict):
    type: Literal["error"]
    seq: int | None
    data: str


class AssignData(TypedDict):
    pairs: list[str]  # the worker's share of the producer's pairs, in its order


class AssignMessage(TypedDict):
    """Hub -> a named producer worker: publish these pairs, and only these."""

    type: Literal["assign"]
    data: AssignData


def worker_name_refusal(name: str) -> str | None:
    """Why ``name`` cannot name a producer worker, or None when it can."""
    if not name or len(name) > MAX_WORKER_NAME:
        return (
            f"a worker name must have 1 to {MAX_WORKER_NAME} characters, "
            f"got {len(name)}"
        )
    if not _WORKER_NAME.fullmatch(name):
        return (
            f"the worker name {short(name)} may hold only letters, digits and "
            "'.', '_', ':', '@', '-' (and starts with a letter or digit)"
        )
    return None


def publish_frame(
    key: Key, df: pd.DataFrame, la: datetime, *, full: bool, new_candle: bool
) -> PublishFrame:
    """One stream's rows for a publish message (``full``: the whole history).

    Exact: floats keep NaN and +-inf and every column's dtype code goes along.
    """
    columns, dtypes, rows = exact_rows(df)
    return {
        "key": list(key),
        "columns": columns,
        "dtypes": dtypes,
        "rows": rows,
        "la": format_datetime(la),
        "full": full,
        "new_candle": new_candle,
    }


def publish_message(
    seq: int, frames: Iterable[PublishFrame], whitelist: Sequence[str] | None = None
) -> bytes:
    """The msgpack publish message (binary): exact floats and dtypes reach the hub."""
    data = {
        "whitelist": None if whitelist is None else list(whitelist),
        "frames": list(frames),
    }
    message = {"type": "publish", "seq": seq, "data": data}
    return msgpack.packb(message, use_bin_type=True)


def ack_message(seq: int) -> str:
    return orjson.dumps({"type": "ack", "seq": seq}).decode()


def error_message(seq: int | None, text: str) -> str:
    return orjson.dumps({"type": "error", "seq": seq, "data": text}).decode()


def assign_message(pairs: Sequence[str]) -> str:
    return orjson.dumps({"type": "assign", "data": {"pairs": list(pairs)}}).decode()


def parse_publish(text: str | bytes) -> PublishMessage:
    """Check a producer worker's publish message completely, before anything is stored.

    Raises:
        ProtocolError: saying which frame, row or field is wrong.
    """
    message = _load_publish(text)
    if message.get("type") != "publish":
        raise ProtocolError(
            f'expected type "publish", got {short(message.get("type"))}'
        )
    seq = message.get("seq")
    if type(seq) is not int or seq < 0:
        raise ProtocolError(f"publish seq must be an int >= 0, got {short(seq)}")
    data = message.get("data")
    if not isinstance(data, dict):
        raise ProtocolError(
            'publish data must be {"whitelist":[...]|null,"frames":[...]}'
        )
    whitelist = data.get("whitelist")
    if whitelist is not None:
        if not isinstance(whitelist, list):
            raise ProtocolError(
                f"publish whitelist must be a list of pairs or null, got "
                f"{short(whitelist)}"
            )
        for number, pair in enumerate(whitelist):
            check_pair(pair, f"publish whitelist item {number}")
    frames = data.get("frames", [])
    if not isinstance(frames, list):
        raise ProtocolError(f"publish frames must be a list, got {short(frames)}")
    for number, frame in enumerate(frames):
        _check_frame(frame, f"frame {number}")
    return {
        "type": "publish",
        "seq": seq,
        "data": {"whitelist": whitelist, "frames": frames},
    }


def _load_publish(text: str | bytes | None) -> dict:
    """A publish message from its msgpack bytes."""
    example = 'a publish message {"type":"publish","seq":1,"data":{...}}'
    if not isinstance(text, bytes | bytearray) or not text:
        raise ProtocolError(
            f"publish messages are binary: send {example} packed with msgpack "
            "(a text or empty frame came; is the producer worker older than the hub?)"
        )
    message = load_msgpack(text, f"{example} packed with msgpack")
    if not isinstance(message, dict):
        raise ProtocolError(f"a message must be a map, got {type(message).__name__}")
    return message


def _check_frame(frame: Any, where: str) -> None:
    if not isinstance(frame, dict):
        raise ProtocolError(f"{where} must be an object, got {short(frame)}")
    pair, timeframe, candle_type = check_key(frame.get("key"), f"{where} key")
    try:
        timeframe_seconds(timeframe)
    except ValueError:
        raise ProtocolError(
            f"{where} key: timeframe {short(timeframe)} is not one like 5m, 1h or 1d"
        ) from None
    if candle_type not in CANDLE_TYPES:
        raise ProtocolError(
            f"{where} key: candle type {short(candle_type)} is not one of "
            f"{', '.join(CANDLE_TYPES)}"
        )
    check_pair(pair, f"{where} key: the pair")
    for flag in ("full", "new_candle"):
        if type(frame.get(flag)) is not bool:
            raise ProtocolError(
                f"{where} {flag} must be true or false, got {short(frame.get(flag))}"
            )
    parse_datetime(frame.get("la"), f"{where} la")
    _check_rows(frame.get("columns"), frame.get("rows"), where)
    dtypes = frame.get("dtypes")
    if not (
        isinstance(dtypes, list)
        and len(dtypes) == len(frame["columns"])
        and all(map(is_dtype_code, dtypes))
    ):
        raise ProtocolError(
            f"{where} dtypes must list one dtype code per column (such as "
            f'"<f8", "<i8", "|b1", "M8", "str", "O"), got {short(dtypes)}'
        )


def _check_rows(columns: Any, rows: Any, where: str) -> None:
    if not is_strings(columns) or len(set(columns)) != len(columns):
        raise ProtocolError(f"{where} columns must be a list of distinct names")
    if len(columns) > MAX_COLUMNS or any(len(c) > MAX_COLUMN_NAME for c in columns):
        raise ProtocolError(
            f"{where} has {len(columns)} columns: at most {MAX_COLUMNS}, each name "
            f"at most {MAX_COLUMN_NAME} characters"
        )
    if "date" not in columns:
        raise ProtocolError(
            f"{where} has no 'date' column: every frame needs its candle dates"
        )
    if not isinstance(rows, list):
        raise ProtocolError(f"{where} rows must be a list of rows")
    width, at, previous = len(columns), columns.index("date"), None
    for number, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            got = len(row) if isinstance(row, list) else "no"
            raise ProtocolError(
                f"{where} row {number} has {got} values for {width} columns"
            )
        date = row[at]
        if type(date) is not int or not 0 <= date <= MAX_DATE_MS:
            raise ProtocolError(
                f"{where} row {number}: date must be int epoch ms from 0 (1970) to "
                f"{MAX_DATE_MS} (2262, pandas' last), got {short(date)}"
            )
        if previous is not None and date <= previous:
            raise ProtocolError(
                f"{where} row {number}: dates must increase, {date} follows {previous}"
            )
        previous = date


def frame_rows(
    frame: PublishFrame, where: str = "frame"
) -> tuple[list[bytes], list[int]]:
    """A checked frame's rows as stored JSON bytes, and their dates in ms.

    The JSON rows serve FreqTrade's protocol: NaN and +-inf become null there, as
    FreqTrade sends them.

    Raises:
        ProtocolError: a value has no JSON form.
    """
    at = frame["columns"].index("date")
    rows = frame["rows"]
    try:
        texts = [encode_row_json(row) for row in rows]
    except (TypeError, ValueError, OverflowError) as exc:  # bytes, extension types
        raise _no_wire_form(frame, where, exc) from None
    return texts, [row[at] for row in rows]


def packed_rows(frame: PublishFrame, where: str = "frame") -> list[bytes]:
    """A checked frame's rows as msgpack bytes, every value exact (native replies).

    Raises:
        ProtocolError: a value has no wire form.
    """
    try:
        return [msgpack.packb(row, use_bin_type=True) for row in frame["rows"]]
    except (TypeError, ValueError, OverflowError) as exc:
        raise _no_wire_form(frame, where, exc) from None


def _no_wire_form(frame: PublishFrame, where: str, exc: Exception) -> ProtocolError:
    return ProtocolError(
        f"{where} {frame['key']} holds a value with no JSON form ({exc}): send "
        "numbers, strings, booleans, null or lists"
    )


def parse_hub_reply(text: str | bytes) -> AckMessage | ErrorMessage | AssignMessage:
    """A message of the hub's, for the producer worker: the answer to a publish
    message, or (to a named worker) its pairs."""
    message = load_object(text, 'an ack {"type":"ack","seq":1}')
    kind, seq = message.get("type"), message.get("seq")
    if kind == "ack" and type(seq) is int:
        return {"type": "ack", "seq": seq}
    if kind == "error" and (seq is None or type(seq) is int):
        return {"type": "error", "seq": seq, "data": str(message.get("data"))}
    if kind == "assign":
        data = message.get("data")
        pairs = data.get("pairs") if isinstance(data, dict) else None
        if pairs is not None and is_strings(pairs):
            return {"type": "assign", "data": {"pairs": list(pairs)}}
    raise ProtocolError(
        f"expected an ack, an error or an assign from the hub, got {short(message)}"
    )
