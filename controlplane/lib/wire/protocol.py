"""The wire protocol: every message shape, its encoder and its decoder.

FreqTrade's producer/consumer frames (shared/PROTOCOL-freqtrade.md §4-§6) and the
hub-internal publish messages between producer workers and the hub. Pure module: no
Django. orjson does the JSON: exact shortest-repr floats, NaN and +-inf as null.
Publish messages travel as msgpack (binary), which keeps NaN, +-inf and each
column's dtype, so the hub can serve the native protocol
(controlplane/lib/wire/native.py) exactly;
the hub still reads the JSON publish messages of older producer workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

import msgpack
import numpy as np
import orjson

from controlplane.lib.candles import CANDLE_TYPES, timeframe_seconds

if TYPE_CHECKING:
    import pandas as pd

    from controlplane.lib.wire.rows import Rows

# pandas is imported by the functions that take or build DataFrames (producer and
# consumer workers), never at module level: the hub only moves encoded rows, and
# pandas 3 with pyarrow is 110 MB of every hub process's RSS.

Key = tuple[str, str, str]  # (pair, timeframe, candle_type)

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
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # FreqTrade's `la` for pairs it does not have


# Column dtype codes, in publish messages and native frames. Numeric numpy dtypes use
# their own little-endian ``dtype.str`` ("<f8", "<i8", "|b1", "<u4"...); these are ours.
DATETIME = "M8"  # int epoch ms (floored), None/NaT missing; decoded as UTC datetimes
TIMEDELTA = "m8"  # int ms
STRING = "str"  # pandas' string dtype: str or None
OBJECT = "O"  # anything else the wire carries
NUMERIC_KINDS = "biuf"


class ProtocolError(ValueError):
    """A message broke the protocol; str(exc) tells the sender what to send instead."""


### Message shapes


class DataFrameEnvelope(TypedDict):
    __type__: Literal["dataframe"]
    __value__: str  # the split document, as a JSON string inside the JSON


class AnalyzedDfData(TypedDict):
    key: list[str]
    df: DataFrameEnvelope
    la: str


class AnalyzedDfMessage(TypedDict):
    type: Literal["analyzed_df"]
    data: AnalyzedDfData


class DecodedAnalyzedDf(TypedDict):
    """An analyzed_df message after decode_message: df and la are Python objects."""

    key: list[str]
    df: pd.DataFrame | Rows  # Rows when decoded with as_rows=True
    la: datetime | None


class ServerMessage(TypedDict):
    type: str
    data: NotRequired[Any]


class SplitDocument(TypedDict):
    columns: list[str]
    index: list[int]
    data: list[list[Any]]


@dataclass(frozen=True)
class Request:
    """A feed client's request. ``limit`` None means the whole snapshot."""

    type: str
    topics: tuple[str, ...] = ()
    limit: int | None = None
    pair: str | None = None


class PublishFrame(TypedDict):
    key: list[str]
    columns: list[str]
    dtypes: NotRequired[list[str]]  # one dtype code per column; absent: JSON publish
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


### Encoding dataframes


def encode_rows(df: pd.DataFrame) -> tuple[list[str], list[list]]:
    """Columns and rows of ``df`` as plain Python values, ready for JSON.

    Datetime columns (naive taken as UTC) and timedeltas become int milliseconds,
    sub-millisecond precision cut (floored); NaN, NaT, None and +-inf become None;
    numpy scalars become ints, floats and bools. Floats keep full precision. ``df``
    is not modified.

    Raises:
        ValueError: a column holds a value with no JSON form.
    """
    columns = [str(name) for name in df.columns]
    values = [_column_values(series, str(name)) for name, series in df.items()]
    if not values:
        return columns, [[] for _ in range(len(df))]
    return columns, list(map(list, zip(*values, strict=True)))


def _column_values(series: pd.Series, name: str) -> list:
    import pandas as pd

    dtype = series.dtype
    kind = dtype.kind if isinstance(dtype, np.dtype | pd.DatetimeTZDtype) else ""
    if kind == "f":
        return _finite_or_none(series.to_numpy())
    if kind in ("i", "u", "b"):
        return series.to_numpy().tolist()
    if kind in ("M", "m"):  # tz-aware included: to_numpy gives UTC wall time
        return _milliseconds(series.to_numpy(dtype=f"{dtype.kind}8[ms]"))
    if isinstance(dtype, pd.StringDtype):
        return series.to_numpy(dtype=object, na_value=None).tolist()
    return [plain_value(value, name) for value in series.to_numpy(dtype=object)]


def _finite_or_none(values: np.ndarray) -> list:
    result = values.tolist()
    bad = ~np.isfinite(values)
    if bad.any():  # usually a handful, but signal columns are mostly NaN: still cheap
        for i in np.flatnonzero(bad).tolist():
            result[i] = None
    return result


def _milliseconds(values: np.ndarray) -> list:
    """datetime64 / timedelta64 in ms (floored, like FreqTrade's // 1e6) as ints."""
    result = values.view(np.int64).tolist()
    missing = np.isnat(values)
    if missing.any():
        for i in np.flatnonzero(missing).tolist():
            result[i] = None
    return result


def plain_value(value: Any, column: str) -> Any:
    """One value of an object or extension-dtype column as a JSON-ready value."""
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str | bool | int):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_ | np.integer):
        return value.item()
    if isinstance(value, datetime | np.datetime64):
        return _timestamp_ms(pd.Timestamp(value))
    if isinstance(value, pd.Timedelta | np.timedelta64):
        delta = pd.Timedelta(value)
        return None if delta is pd.NaT else delta.value // 1_000_000
    if isinstance(value, list | dict | tuple):
        return value
    raise ValueError(
        f"column {column!r} holds a {type(value).__name__} ({value!r}), which has no "
        "JSON form: convert the column to numbers, strings, booleans or datetimes"
    )


def _timestamp_ms(stamp: pd.Timestamp) -> int | None:
    import pandas as pd

    if stamp is pd.NaT:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert(None)
    return int(stamp.as_unit("ns").value // 1_000_000)


def dtype_code(dtype: Any) -> str:
    """The wire code of a pandas / numpy dtype (anything unknown is ``O``)."""
    import pandas as pd

    if isinstance(dtype, pd.DatetimeTZDtype):
        return DATETIME
    if isinstance(dtype, pd.StringDtype):
        return STRING
    if isinstance(dtype, np.dtype):
        if dtype.kind in "Mm":
            return DATETIME if dtype.kind == "M" else TIMEDELTA
        if dtype.kind in NUMERIC_KINDS:
            return dtype.newbyteorder("<").str
    return OBJECT


def is_dtype_code(code: Any) -> bool:
    """Whether ``code`` is a dtype code the wire knows."""
    if code in (DATETIME, TIMEDELTA, STRING, OBJECT):
        return True
    if not isinstance(code, str) or code[:1] not in "<|":
        return False
    try:
        return np.dtype(code).kind in NUMERIC_KINDS
    except TypeError:
        return False


def exact_rows(df: pd.DataFrame) -> tuple[list[str], list[str], list[list]]:
    """Columns, dtype codes and rows of ``df`` as exact plain values, for msgpack.

    As encode_rows, but floats stay floats (NaN and +-inf included) and each
    column's dtype code goes along.

    Raises:
        ValueError: a column holds a value with no wire form.
    """
    names = [str(name) for name in df.columns]
    codes = [dtype_code(series.dtype) for _, series in df.items()]
    values = [
        column_values(series, code, name)
        for (_, series), code, name in zip(df.items(), codes, names, strict=True)
    ]
    if not values:
        return names, codes, [[] for _ in range(len(df))]
    return names, codes, list(map(list, zip(*values, strict=True)))


def column_values(series: pd.Series, code: str, name: str) -> list:
    """One column's exact plain values for its dtype code (see exact_rows)."""
    if code in (DATETIME, TIMEDELTA):
        return _milliseconds(series.to_numpy(dtype=f"{code}[ms]"))
    if code == STRING:
        return series.to_numpy(dtype=object, na_value=None).tolist()
    if code == OBJECT:
        return [_exact_plain(value, name) for value in series.to_numpy(dtype=object)]
    return series.to_numpy().tolist()  # numeric: exact Python floats, ints, bools


def _exact_plain(value: Any, column: str) -> Any:
    if isinstance(value, float | np.floating):
        return float(value)  # NaN and +-inf kept: msgpack carries them
    return plain_value(value, column)


def encode_row_json(row: list) -> bytes:
    """One row as JSON bytes, to store once and reuse in every reply.

    orjson's bytes keep the ~4 KiB buffer it wrote into; a stored row is copied to
    its own size (measured: 4,097 -> 427 bytes per row; storing 100 pairs x 1500
    rows x 28 columns took 1,180 MiB of RSS before, 91 MiB after).
    """
    return bytes(memoryview(orjson.dumps(row)))


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


def format_datetime(moment: datetime) -> str:
    """RFC 3339 with a +00:00 offset (naive taken as UTC), as FreqTrade sends it."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # datetime's own isoformat, also for a pandas Timestamp (a datetime subclass):
    # microseconds, never nanoseconds.
    return datetime.isoformat(moment.astimezone(UTC))


def parse_datetime(text: Any, what: str = "la") -> datetime:
    """An RFC 3339 string as an aware UTC datetime (a naive one is taken as UTC)."""
    if not isinstance(text, str):
        raise ProtocolError(f"{what} must be an RFC 3339 string, got {text!r}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ProtocolError(
            f"{what} must be an RFC 3339 datetime like "
            f"'2026-11-25T10:16:01.715292+00:00', got {text!r}"
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


### Feed requests (client -> feed)


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
    message = _load_object(text, 'a request such as {"type":"whitelist"}')
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(
            f"request type must be a string, one of {', '.join(REQUEST_TYPES)}; "
            f"got {kind!r}"
        )
    if kind not in REQUEST_TYPES:
        raise ProtocolError(f"Invalid request type: {kind}")  # FreqTrade's own words
    data = message.get("data")
    if kind == "subscribe":
        return Request("subscribe", topics=_topics(data))
    if kind == "analyzed_df":
        return _analyzed_df_request(data)
    return Request("whitelist")


def _load_object(text: str | bytes | None, example: str) -> dict:
    if text is None or text == "":
        raise ProtocolError(f"empty message: send {example}")
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"invalid JSON ({exc}): send {example}") from None
    if not isinstance(message, dict):
        raise ProtocolError(
            f"a message must be a JSON object, got {type(message).__name__}: "
            f"send {example}"
        )
    return message


def _topics(data: Any) -> tuple[str, ...]:
    if data is None:
        return ()
    if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
        raise ProtocolError(
            "subscribe data must be a list of message types, such as "
            f'["whitelist","analyzed_df"]; got {_short(data)}'
        )
    return tuple(data)


def _analyzed_df_request(data: Any) -> Request:
    if data is None or data == {}:
        return Request("analyzed_df")  # FreqTrade: no data means the whole frame
    if not isinstance(data, dict):
        raise ProtocolError(
            'analyzed_df data must be an object like {"limit":1500,"pair":"BTC/USDT"}, '
            f"got {_short(data)}"
        )
    pair = data.get("pair")
    if pair is not None and not isinstance(pair, str):
        raise ProtocolError(
            f"analyzed_df pair must be a string or null, got {_short(pair)}"
        )
    return Request("analyzed_df", limit=_limit(data.get("limit")), pair=pair)


def _limit(limit: Any) -> int | None:
    if limit is None:
        return MAX_LIMIT  # data given without a limit: FreqTrade sends 1500 rows
    numeric = isinstance(limit, int | float) and not isinstance(limit, bool)
    if not numeric or math.isnan(limit) or limit < 0:
        raise ProtocolError(
            f"analyzed_df limit must be a number from 0 to {MAX_LIMIT}, "
            f"got {_short(limit)}"
        )
    capped = int(min(limit, MAX_LIMIT))
    return capped or None  # 0 means the whole frame, as in FreqTrade


def _short(value: Any) -> str:
    text = orjson.dumps(value, default=repr).decode()
    return text if len(text) <= 80 else text[:77] + "..."


### Decoding server messages (feed -> consumer)


def decode_message(text: str | bytes, *, as_rows: bool = False) -> dict:
    """A feed message as a dict; an analyzed_df's df and la become Python objects.

    An analyzed_df's ``df`` is a DataFrame, or with ``as_rows`` the decoded
    :class:`~controlplane.lib.wire.rows.Rows` (what a FrameStore keeps).

    Raises:
        ProtocolError: the envelope is malformed.
    """
    message = _load_object(text, "a message like FreqTrade's")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(f"message type must be a string, got {_short(kind)}")
    data = message.get("data")
    if kind == "analyzed_df":
        message["data"] = _decode_analyzed_df(data, as_rows)
    elif kind == "whitelist" and not _is_strings(data):
        raise ProtocolError(
            f"whitelist data must be a list of pairs, got {_short(data)}"
        )
    elif kind == "new_candle":
        _check_key(data, "new_candle data")
    return message


def _decode_analyzed_df(data: Any, as_rows: bool) -> DecodedAnalyzedDf:
    if not isinstance(data, dict):
        raise ProtocolError(f"analyzed_df data must be an object, got {_short(data)}")
    key = _check_key(data.get("key"), "analyzed_df key")
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


def _check_key(key: Any, what: str) -> list[str]:
    if not (isinstance(key, list) and len(key) == 3 and _is_strings(key)):
        raise ProtocolError(
            f"{what} must be [pair, timeframe, candle_type] "
            f'like ["BTC/USDT","5m","spot"], got {_short(key)}'
        )
    return key


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def decode_dataframe(value: str | bytes) -> pd.DataFrame:
    """A split document as a DataFrame, built column by column (no pandas read_json).

    ``date`` becomes ``pd.to_datetime(ms, unit="ms", utc=True)`` (datetime64[us, UTC]
    under pandas 3.1), exactly what FreqTrade's consumer makes of it; no other column
    is guessed to be a date. Numbers with a float or a null -> float64, ints -> int64,
    strings (with nulls) -> str, booleans -> bool, anything else -> object.
    """
    return decode_rows(value).frame()


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


### Publish messages (producer worker <-> hub)


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


def parse_publish(text: str | bytes) -> PublishMessage:
    """Check a producer worker's publish message completely, before anything is stored.

    Raises:
        ProtocolError: saying which frame, row or field is wrong.
    """
    message = _load_publish(text)
    if message.get("type") != "publish":
        raise ProtocolError(
            f'expected type "publish", got {_short(message.get("type"))}'
        )
    seq = message.get("seq")
    if type(seq) is not int or seq < 0:
        raise ProtocolError(f"publish seq must be an int >= 0, got {_short(seq)}")
    data = message.get("data")
    if not isinstance(data, dict):
        raise ProtocolError(
            'publish data must be {"whitelist":[...]|null,"frames":[...]}'
        )
    whitelist = data.get("whitelist")
    if whitelist is not None and not _is_strings(whitelist):
        raise ProtocolError(
            "publish whitelist must be a list of pairs or null, "
            f"got {_short(whitelist)}"
        )
    frames = data.get("frames", [])
    if not isinstance(frames, list):
        raise ProtocolError(f"publish frames must be a list, got {_short(frames)}")
    for number, frame in enumerate(frames):
        _check_frame(frame, f"frame {number}")
    return {
        "type": "publish",
        "seq": seq,
        "data": {"whitelist": whitelist, "frames": frames},
    }


def _load_publish(text: str | bytes | None) -> dict:
    """A publish message from msgpack (binary) or, from older workers, JSON."""
    example = 'a publish message {"type":"publish","seq":1,"data":{...}}'
    if not isinstance(text, bytes | bytearray) or text[:1] in (b"{", b" ", b""):
        return _load_object(text, example)
    try:
        message = msgpack.unpackb(text, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ProtocolError(
            f"invalid msgpack ({exc}): send {example} packed with msgpack, or as JSON"
        ) from None
    if not isinstance(message, dict):
        raise ProtocolError(f"a message must be a map, got {type(message).__name__}")
    return message


def _check_frame(frame: Any, where: str) -> None:
    if not isinstance(frame, dict):
        raise ProtocolError(f"{where} must be an object, got {_short(frame)}")
    pair, timeframe, candle_type = _check_key(frame.get("key"), f"{where} key")
    try:
        timeframe_seconds(timeframe)
    except ValueError as exc:
        raise ProtocolError(f"{where} key: {exc}") from None
    if candle_type not in CANDLE_TYPES:
        raise ProtocolError(
            f"{where} key: candle type {candle_type!r} is not one of "
            f"{', '.join(CANDLE_TYPES)}"
        )
    if not pair:
        raise ProtocolError(f"{where} key: the pair is empty")
    for flag in ("full", "new_candle"):
        if type(frame.get(flag)) is not bool:
            raise ProtocolError(
                f"{where} {flag} must be true or false, got {_short(frame.get(flag))}"
            )
    parse_datetime(frame.get("la"), f"{where} la")
    _check_rows(frame.get("columns"), frame.get("rows"), where)
    dtypes = frame.get("dtypes")
    if dtypes is not None and not (
        isinstance(dtypes, list)
        and len(dtypes) == len(frame["columns"])
        and all(map(is_dtype_code, dtypes))
    ):
        raise ProtocolError(
            f"{where} dtypes must list one dtype code per column (such as "
            f'"<f8", "<i8", "|b1", "M8", "str", "O"), got {_short(dtypes)}'
        )


def _check_rows(columns: Any, rows: Any, where: str) -> None:
    if not _is_strings(columns) or len(set(columns)) != len(columns):
        raise ProtocolError(f"{where} columns must be a list of distinct names")
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
        if type(date) is not int:
            raise ProtocolError(
                f"{where} row {number}: date must be int epoch ms, got {_short(date)}"
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


def parse_hub_reply(text: str | bytes) -> AckMessage | ErrorMessage:
    """The hub's answer to a publish message, for the producer worker."""
    message = _load_object(text, 'an ack {"type":"ack","seq":1}')
    kind, seq = message.get("type"), message.get("seq")
    if kind == "ack" and type(seq) is int:
        return {"type": "ack", "seq": seq}
    if kind == "error" and (seq is None or type(seq) is int):
        return {"type": "error", "seq": seq, "data": str(message.get("data"))}
    raise ProtocolError(
        f"expected an ack or an error from the hub, got {_short(message)}"
    )
