"""What every wire format shares: stream keys, column dtype codes, rows, datetimes.

The producer worker turns a DataFrame into exact rows and dtype codes here; every
format's encoder and decoder (publish.py, freqtrade.py, native.py) reads these codes
and checks envelopes with the same helpers. Pure module: no Django; pandas only inside
the functions that take DataFrames (the hub never calls them).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
import orjson

if TYPE_CHECKING:
    import pandas as pd

Key = tuple[str, str, str]  # (pair, timeframe, candle_type)

# Column dtype codes, in publish messages and native frames. Numeric numpy dtypes use
# their own little-endian ``dtype.str`` ("<f8", "<i8", "|b1", "<u4"...); these are ours.
DATETIME = "M8"  # int epoch ms (floored), None/NaT missing; decoded as UTC datetimes
TIMEDELTA = "m8"  # int ms
STRING = "str"  # pandas' string dtype: str or None
OBJECT = "O"  # anything else the wire carries
NUMERIC_KINDS = "biuf"

PAIR = re.compile(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(:[A-Za-z0-9._-]+)?")
MAX_PAIR_LENGTH = 64
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # FreqTrade's `la` for pairs it does not have


class ProtocolError(ValueError):
    """A message broke the protocol; str(exc) tells the sender what to send instead."""


### DataFrames to exact rows (producer side)


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


### Envelopes and datetimes


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
        raise ProtocolError(f"{what} must be an RFC 3339 string, got {short(text)}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ProtocolError(
            f"{what} must be an RFC 3339 datetime like "
            f"'2026-11-25T10:16:01.715292+00:00', got {short(text)}"
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # year 1 at +05:00 or year 9999 at -05:00
        raise ProtocolError(
            f"{what} {short(text)} is out of range once taken to UTC"
        ) from None


def load_object(text: str | bytes | None, example: str) -> dict:
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


SHORT = 80  # characters of a sender's value quoted back in an error text


def load_msgpack(data: bytes, what: str) -> Any:
    """A msgpack document, any fault a ProtocolError that says ``what`` to send.

    msgpack bounds itself: nesting deeper than its 1024-level stack, a length
    beyond the bytes it has, a list as a map key, a reserved byte all raise here
    (nothing a hostile frame sends reaches Python's recursion limit).
    """
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        why = escaped(str(exc)) or type(exc).__name__
        raise ProtocolError(f"invalid msgpack ({why}): send {what}") from None


def short(value: Any) -> str:
    """A sender's value for an error text: JSON, at most SHORT characters.

    Hostile values must not break the error path: a value nested deeper than
    orjson encodes (254 levels), non-string map keys (msgpack), ints beyond 64 bits
    are named by their type instead. JSON escapes quotes and control characters, so
    a value cannot forge a log line; HTML is escaped where the text is shown.
    """
    try:
        text = orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        return f"a {type(value).__name__} too deep or too odd to quote"
    return _cut(text.decode())


def escaped(text: Any) -> str:
    """A sender's string in words (no quotes): control characters escaped as
    JSON does, at most SHORT characters."""
    if not isinstance(text, str):
        return short(text)
    return _cut(orjson.dumps(text).decode()[1:-1])


def _cut(text: str) -> str:
    return text if len(text) <= SHORT else text[: SHORT - 3] + "..."


def check_key(key: Any, what: str) -> list[str]:
    if not (isinstance(key, list) and len(key) == 3 and is_strings(key)):
        raise ProtocolError(
            f"{what} must be [pair, timeframe, candle_type] "
            f'like ["BTC/USDT","5m","spot"], got {short(key)}'
        )
    return key


def is_pair(value: Any) -> bool:
    """A FreqTrade pair name: BASE/QUOTE (spot) or BASE/QUOTE:SETTLE (futures),
    such as BTC/USDT, BTC/USDT:USDT or 1000PEPE/USDT; letters, digits and ``._-``
    only, so that no pair carries markup, quotes, spaces or a path out of its
    folder (``..`` alone is refused) into a page, a log line or a file name."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_PAIR_LENGTH
        and PAIR.fullmatch(value) is not None
        and ".." not in value
    )


def check_pair(pair: Any, what: str) -> str:
    if not is_pair(pair):
        raise ProtocolError(
            f"{what} must be a pair like BTC/USDT or BTC/USDT:USDT (letters, digits "
            f"and ._- around the / and :, at most {MAX_PAIR_LENGTH} characters), "
            f"got {short(pair)}"
        )
    return pair


def is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
