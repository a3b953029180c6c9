"""FreqTrade's feed protocol: its requests, its messages, and their decoding.

shared/PROTOCOL-freqtrade.md §4-§6, byte for byte: JSON text frames, an analyzed_df's
dataframe as a pandas split document inside a JSON string. The hub joins replies from
rows encoded once (columns.encode_row_json); consumers decode column by column into
:class:`~controlplane.lib.wire.rows.Rows`. orjson does the JSON: exact shortest-repr
floats, NaN and +-inf as null. Pure module: no Django.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import orjson

from controlplane.lib.wire.columns import (
    DATETIME,
    EPOCH,
    STRING,
    Key,
    ProtocolError,
    check_key,
    check_pair,
    escaped,
    format_datetime,
    is_strings,
    load_object,
    parse_datetime,
    short,
)

if TYPE_CHECKING:
    import pandas as pd

    from controlplane.lib.wire.rows import Rows
    from controlplane.lib.wire.shapes import Broadcast, Snapshot, Tick

REQUEST_TYPES = ("subscribe", "whitelist", "analyzed_df")
# FreqTrade's RPCMessageType values: the topics a feed client may subscribe to.
MESSAGE_TYPES = (
    "status",
    "warning",
    "exception",
    "startup",
    "entry",
    "entry_fill",
    "entry_cancel",
    "exit",
    "exit_fill",
    "exit_cancel",
    "protection_trigger",
    "protection_trigger_global",
    "liquidation_warning",
    "strategy_msg",
    "whitelist",
    "analyzed_df",
    "new_candle",
)


MAX_LIMIT = 1500


EMPTY_SPLIT = b'{"columns":[],"index":[],"data":[]}'


class DecodedAnalyzedDf(TypedDict):
    """An analyzed_df message after decode_message: df and la are Python objects."""

    key: list[str]
    df: pd.DataFrame | Rows  # Rows when decoded with as_rows=True
    la: datetime | None


@dataclass(frozen=True)
class Request:
    """A feed client's request. ``limit`` None means the whole snapshot."""

    type: str
    topics: tuple[str, ...] = ()
    limit: int | None = None
    pair: str | None = None


### Messages (hub -> feed client)


def split_document(
    columns: list[str], rows: Sequence[bytes], first_index: int
) -> bytes:
    """The pandas orient='split' document, joined from pre-encoded rows.

    ``index`` runs from ``first_index``, like FreqTrade's labels of the cached frame.
    """
    index = orjson.dumps(list(range(first_index, first_index + len(rows))))
    parts = (b'{"columns":', orjson.dumps(columns), b',"index":', index, b',"data":[')
    return b"".join((*parts, b",".join(rows), b"]}"))


def analyzed_df_message(key: Key, split_doc: bytes, la: datetime) -> str:
    """FreqTrade's analyzed_df text frame; the split document goes in as a string."""
    return b"".join(
        (
            b'{"type":"analyzed_df","data":{"key":',
            orjson.dumps(list(key)),
            b',"df":{"__type__":"dataframe","__value__":',
            orjson.dumps(split_doc.decode()),
            b'},"la":',
            orjson.dumps(format_datetime(la)),
            b"}}",
        )
    ).decode()


def whitelist_message(pairs: Sequence[str]) -> str:
    return orjson.dumps({"type": "whitelist", "data": list(pairs)}).decode()


def new_candle_message(key: Key) -> str:
    return orjson.dumps({"type": "new_candle", "data": list(key)}).decode()


def exception_message(text: str) -> str:
    return orjson.dumps({"type": "exception", "data": text}).decode()


def reply(key: Key, snapshot: Snapshot | None) -> str:
    """The analyzed_df reply of a stream's rows; FreqTrade's empty one (la = EPOCH)
    for a stream the hub does not have."""
    if snapshot is None:
        return analyzed_df_message(key, EMPTY_SPLIT, EPOCH)
    doc = split_document(snapshot.columns, snapshot.rows, snapshot.first_index)
    return analyzed_df_message(key, doc, snapshot.la)


def tick(update: Tick, size_limit: int) -> tuple[list[Broadcast], list[str]]:
    """A tick as FreqTrade broadcasts it: one text per message type and pair.

    FreqTrade has no size limit on a broadcast; nothing is ever left out.
    """
    messages: list[Broadcast] = []
    if update.whitelist is not None:
        messages.append((("whitelist",), whitelist_message(update.whitelist)))
    for frame in update.frames:
        messages.append((("analyzed_df",), reply(frame.key, frame.rows)))
        if frame.new_candle:
            messages.append((("new_candle",), new_candle_message(frame.key)))
    return messages, []


### Requests (feed client -> hub)


def parse_request(text: str | bytes | None) -> Request:
    """Check a feed client's request and normalise it (PROTOCOL §5).

    Stricter than FreqTrade where FreqTrade drops the connection without a word: every
    fault is a ProtocolError whose text the feed sends back as an ``exception``.
    """
    if isinstance(text, bytes | bytearray | memoryview):
        raise ProtocolError(
            "binary frames are not supported: "
            'send text JSON such as {"type":"whitelist"}'
        )
    message = load_object(text, 'a request such as {"type":"whitelist"}')
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(
            f"request type must be a string, one of {', '.join(REQUEST_TYPES)}; "
            f"got {kind!r}"
        )
    if kind not in REQUEST_TYPES:
        raise ProtocolError(f"Invalid request type: {escaped(kind)}")  # FreqTrade's
    data = message.get("data")
    if kind == "subscribe":
        return Request("subscribe", topics=_topics(data))
    if kind == "analyzed_df":
        return _analyzed_df_request(data)
    return Request("whitelist")


def _topics(data: Any) -> tuple[str, ...]:
    if data is None:
        return ()
    if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
        raise ProtocolError(
            "subscribe data must be a list of message types, such as "
            f'["whitelist","analyzed_df"]; got {short(data)}'
        )
    return tuple(data)


def _analyzed_df_request(data: Any) -> Request:
    if data is None or data == {}:
        return Request("analyzed_df")  # FreqTrade: no data means the whole frame
    if not isinstance(data, dict):
        raise ProtocolError(
            'analyzed_df data must be an object like {"limit":1500,"pair":"BTC/USDT"}, '
            f"got {short(data)}"
        )
    pair = data.get("pair")
    if pair is not None:
        check_pair(pair, "analyzed_df pair (or null for every pair)")
    return Request("analyzed_df", limit=_limit(data.get("limit")), pair=pair)


def _limit(limit: Any) -> int | None:
    if limit is None:
        return MAX_LIMIT  # data given without a limit: FreqTrade sends 1500 rows
    numeric = isinstance(limit, int | float) and not isinstance(limit, bool)
    if not numeric or math.isnan(limit) or limit < 0:  # +inf: capped below
        raise ProtocolError(
            f"analyzed_df limit must be a number from 0 to {MAX_LIMIT}, "
            f"got {short(limit)}"
        )
    capped = int(min(limit, MAX_LIMIT))
    return capped or None  # 0 means the whole frame, as in FreqTrade


### Decoding messages (feed client side)


def decode_message(text: str | bytes, *, as_rows: bool = False) -> dict:
    """A feed message as a dict; an analyzed_df's df and la become Python objects.

    An analyzed_df's ``df`` is a DataFrame, or with ``as_rows`` the decoded
    :class:`~controlplane.lib.wire.rows.Rows` (what a FrameStore keeps).

    Raises:
        ProtocolError: the envelope is malformed.
    """
    message = load_object(text, "a message like FreqTrade's")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(f"message type must be a string, got {short(kind)}")
    data = message.get("data")
    if kind == "analyzed_df":
        message["data"] = _decode_analyzed_df(data, as_rows)
    elif kind == "whitelist" and not is_strings(data):
        raise ProtocolError(
            f"whitelist data must be a list of pairs, got {short(data)}"
        )
    elif kind == "new_candle":
        check_key(data, "new_candle data")
    return message


def _decode_analyzed_df(data: Any, as_rows: bool) -> DecodedAnalyzedDf:
    if not isinstance(data, dict):
        raise ProtocolError(f"analyzed_df data must be an object, got {short(data)}")
    key = check_key(data.get("key"), "analyzed_df key")
    envelope = data.get("df")
    if not isinstance(envelope, dict) or envelope.get("__type__") != "dataframe":
        raise ProtocolError(
            'analyzed_df df must be {"__type__":"dataframe","__value__":"<split JSON>"}'
        )
    value = envelope.get("__value__")
    if not isinstance(value, str):
        raise ProtocolError(
            "analyzed_df __value__ must be the split document as a JSON string, "
            f"got {type(value).__name__}"
        )
    la = data.get("la")
    moment = parse_datetime(la, "analyzed_df la") if la else None
    decoded = decode_rows(value)
    return {"key": key, "df": decoded if as_rows else decoded.frame(), "la": moment}


def decode_rows(value: str | bytes) -> Rows:
    """A split document as :class:`~controlplane.lib.wire.rows.Rows`, typed as
    decode_dataframe.

    Raises:
        ProtocolError: the document is not valid JSON or not a split document.
    """
    from controlplane.lib.wire.rows import Rows

    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"the dataframe is not valid JSON: {exc}") from None
    columns, index, rows = _split_parts(doc)
    if not columns and not rows:
        return Rows((), [], range(0))
    cells = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    arrays, finish = [], {}
    for position, name in enumerate(columns):
        array, dtype = _decode_column(name, cells[position])
        arrays.append(array)
        if dtype is not None:
            finish[position] = dtype
    return Rows(columns, arrays, index, finish)


def _split_parts(doc: Any) -> tuple[list[str], list, list[list]]:
    if not isinstance(doc, dict):
        raise ProtocolError(
            'the dataframe must be a split document {"columns","index","data"}'
        )
    columns, index, rows = doc.get("columns"), doc.get("index"), doc.get("data")
    if not (
        isinstance(columns, list) and isinstance(index, list) and isinstance(rows, list)
    ):
        raise ProtocolError(
            'the split document needs lists "columns", "index" and "data"'
        )
    if len(index) != len(rows):
        raise ProtocolError(
            f"the split document has {len(index)} labels for {len(rows)} rows"
        )
    width = len(columns)
    for number, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise ProtocolError(
                f"row {number} must be a list of {width} values, one per column"
            )
    return columns, index, rows


def _decode_column(name: Any, values: tuple) -> tuple[np.ndarray, Any]:
    """One column's values as a numpy array, and the dtype it becomes (rows.py)."""
    types = set(map(type, values))
    if name == "date":
        return _decode_dates(values, types), DATETIME
    if types <= {int}:
        try:
            return np.array(values, dtype=np.int64), None
        except OverflowError:
            return np.array(values), None
    if types <= {int, float, type(None)}:
        return np.array(values, dtype=np.float64), None  # None -> NaN, as read_json
    if types == {bool}:
        return np.array(values, dtype=bool), None
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column, (STRING if types <= {str, type(None)} else None)


def _decode_dates(values: tuple, types: set[type]) -> np.ndarray:
    if not types <= {int, float, type(None)}:
        raise ProtocolError("the date column must hold int epoch milliseconds")
    from controlplane.lib.wire.rows import date_unit, utc_dates

    if types <= {int}:
        return utc_dates(np.array(values, dtype=np.int64))
    import pandas as pd

    # float or null: pandas' own conversion (null -> NaT, fractions floored)
    stamps = pd.to_datetime(np.array(values, dtype=np.float64), unit="ms")
    return stamps.as_unit(date_unit()).to_numpy()
