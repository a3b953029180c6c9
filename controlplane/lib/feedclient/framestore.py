"""One producer's analysed dataframes, kept with FreqTrade's append and gap semantics.

Pure module (pandas only) used by the consumer worker and by plain scripts. It fixes
FreqTrade's faults: short histories load, month/year gaps are measured, memory is
bounded per key, and gap-fill requests stay on record until a frame fills them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
from pandas import DataFrame

# candle_close: re-exported for the data provider and scripts.
from controlplane.lib.candles import candle_close as candle_close
from controlplane.lib.candles import candle_steps
from controlplane.lib.frames import compacted
from controlplane.lib.wire.rows import Rows

Key = tuple[str, str, str]  # (pair, timeframe, candle_type)

# FreqTrade's FULL_DATAFRAME_THRESHOLD: without an explicit hint, a frame of this many
# rows is a full history, a shorter one an update to append.
FULL_FRAME_ROWS = 100
# What FreqTrade asks for once a hole is FULL_FRAME_ROWS candles or more.
RESYNC_LIMIT = 1500
# Candles kept as received per key before they are joined without a read: a pair
# no strategy reads must not grow without bound (one join per 64 candles, ~1 ms).
MAX_TAIL = 64
SIGNAL_COLUMNS = ("enter_long", "exit_long", "enter_short", "exit_short")
TAG_COLUMNS = ("enter_tag", "exit_tag")


@dataclass(frozen=True)
class Missing:
    """Ask the producer for the last ``limit`` candles of this key's pair again."""

    key: Key
    limit: int


@dataclass(frozen=True)
class Stored:
    """A frame was stored.

    ``rows`` is the stored row count afterwards; ``appended`` counts rows newer than
    the previous last candle (every row for a first frame); ``replaced`` says a full
    frame replaced the stored one; ``new_candle`` says the last candle date advanced;
    ``first`` is the received frame's oldest candle, ``last`` the newest stored one
    (open dates, UTC).
    """

    key: Key
    rows: int
    appended: int
    replaced: bool
    new_candle: bool
    first: pd.Timestamp | None = field(default=None, compare=False)
    last: pd.Timestamp | None = field(default=None, compare=False)


def remove_signals(df: DataFrame) -> DataFrame:
    """A new frame with FreqTrade's signals cleared; ``df`` itself is left alone.

    As FreqTrade's ``remove_entry_exit_signals``: the four signal columns become int 0
    and both tag columns None, created when missing.
    """
    out = df.copy(deep=False)  # copy-on-write: assigning columns never touches df
    for column in SIGNAL_COLUMNS:
        out[column] = 0
    for column in TAG_COLUMNS:
        out[column] = None
    return out


def _utc(moment: datetime | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    # The wire protocol says naive datetimes are UTC.
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp


def gap_limit(steps: int, max_rows: int) -> int:
    """FreqTrade's request size for a hole of ``steps`` candle lengths, capped.

    One candle of overlap is added (a 1-candle hole is 2 steps, so 3 candles are
    asked for); holes of 100 candles or more ask for a whole history instead.
    """
    limit = steps + 1
    if limit >= FULL_FRAME_ROWS:
        limit = RESYNC_LIMIT
    return max(1, min(limit, max_rows))


@dataclass
class _Held:
    """One key's rows: a frame, plus the candles appended since it was built.

    Appending a candle to a 1500-row DataFrame costs pandas about 0.5 ms whatever
    is done (concat, or building from column arrays), so a plain append only puts
    the decoded rows in ``tail``; the frame is rebuilt when it is read.
    """

    frame: DataFrame
    la: datetime
    last: pd.Timestamp  # the newest candle's open date, UTC
    rows: int  # rows once the tail is joined
    tail: list[DataFrame | Rows] = field(default_factory=list)


class FrameStore:
    """The latest analysed frame per (pair, timeframe, candle_type) of one producer.

    Thread safety: the worker calls :meth:`apply` from its event loop while a strategy
    may read from another thread. Every read and write of the internal dicts holds one
    ``threading.Lock``. A stored frame is never modified after it is stored (a new
    frame is built and the reference swapped), so a frame returned by :meth:`get`
    stays consistent; treat it as read-only (``DataProvider`` hands out copies).

    A candle that follows the stored ones is kept as received (decoded, a DataFrame
    or :class:`~controlplane.lib.wire.rows.Rows`) and joined to the frame on the next
    :meth:`get`: per candle close the worker's loop spends ~50 us a pair instead of
    ~1 ms, and a pair nobody reads costs one join per ``MAX_TAIL`` candles.

    Rewinds are kept from FreqTrade: an update whose first candle is older than the
    stored last candle drops the stored candles from that date on, and the producer's
    later broadcasts (or a resync) bring the history forward again.
    """

    def __init__(self, max_rows: int = 1500, remove_entry_exit_signals: bool = False):
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.max_rows = max_rows
        self.remove_entry_exit_signals = remove_entry_exit_signals
        self._lock = threading.Lock()
        self._held: dict[Key, _Held] = {}
        self._outstanding: dict[Key, Missing] = {}
        self._whitelist: list[str] = []

    def apply(
        self,
        key: Key,
        df: DataFrame | Rows,
        la: datetime | None,
        *,
        full: bool | None = None,
    ) -> Stored | Missing | None:
        """Store one received frame, or say which candles to request.

        Args:
            key: ``(pair, timeframe, candle_type)`` from the message.
            df: the decoded frame (a DataFrame or decoded Rows), with a datetime64
                ``date`` column.
            la: the producer's "last analyzed" time; None stores now, as FreqTrade.
            full: True replaces the stored frame, False appends; None decides as
                FreqTrade does (100 rows or more is full) except that a first frame
                for a key is always full, so short histories load.

        Returns:
            None for an empty frame (ignored), :class:`Missing` when there is a hole
            or nothing to append to, else :class:`Stored`.

        Raises:
            ValueError: when ``df`` has no datetime ``date`` column.
        """
        if df.empty:
            return None
        first, last = _date_range(key, df)
        analysed = la or datetime.now(UTC)
        with self._lock:
            held = self._held.get(key)
            if full is None:
                full = held is None or len(df) >= FULL_FRAME_ROWS
            if not full:
                if held is None:
                    result: Stored | Missing = Missing(
                        key, min(RESYNC_LIMIT, self.max_rows)
                    )
                else:
                    result = self._update(key, df, first, last, analysed, held)
                self._record(key, result)
                return result
        # A whole frame, maybe big: sorted and cleared outside the lock.
        frame = self._prepare(_as_frame(df))
        with self._lock:
            result = self._replace(key, frame, first, analysed, self._held.get(key))
            self._record(key, result)
        return result

    def get(self, key: Key) -> tuple[DataFrame, datetime] | None:
        """The stored frame (not a copy: do not modify it) and its ``la``."""
        with self._lock:
            held = self._held.get(key)
            if held is None:
                return None
            self._join(held)
            return held.frame, held.la

    def newest(self, key: Key) -> tuple[pd.Timestamp, int] | None:
        """The newest candle's open date and the row count, without building it."""
        with self._lock:
            held = self._held.get(key)
            return None if held is None else (held.last, held.rows)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._held

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._held)

    def outstanding(self) -> list[Missing]:
        """Requests not yet filled by a frame; re-send them after a reconnect."""
        with self._lock:
            return list(self._outstanding.values())

    def set_whitelist(self, pairs: list[str]) -> None:
        with self._lock:
            self._whitelist = list(pairs)

    @property
    def whitelist(self) -> list[str]:
        with self._lock:
            return list(self._whitelist)

    def remove(self, key: Key) -> None:
        with self._lock:
            self._held.pop(key, None)
            self._outstanding.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._outstanding.clear()

    def _prepare(self, df: DataFrame) -> DataFrame:
        """Clear signals if asked, sort by date."""
        if self.remove_entry_exit_signals:
            df = remove_signals(df)
        if len(df) > 1 and not df["date"].is_monotonic_increasing:
            df = df.sort_values("date", kind="stable")
        return df

    def _replace(
        self,
        key: Key,
        frame: DataFrame,
        first: pd.Timestamp,
        la: datetime,
        previous: _Held | None,
    ) -> Stored:
        frame = _renumbered(frame.iloc[-self.max_rows :])
        last = _utc(frame["date"].iloc[-1])
        if previous is None:
            newer = len(frame)
        else:
            old_last = _like(frame["date"], previous.last)
            newer = len(frame) - int(frame["date"].searchsorted(old_last, "right"))
        self._held[key] = _Held(frame, la, last, len(frame))
        return Stored(key, len(frame), newer, True, newer > 0, first, last)

    def _update(
        self,
        key: Key,
        df: DataFrame | Rows,
        first: pd.Timestamp,
        last: pd.Timestamp,
        la: datetime,
        held: _Held,
    ) -> Stored | Missing:
        steps = candle_steps(held.last, first, key[1])
        if steps > 1:
            return Missing(key, gap_limit(int(steps), self.max_rows))
        if first > held.last and _is_sorted(df):
            # The next candle(s): kept as they are until the frame is read.
            held.tail.append(df)
            held.rows = min(self.max_rows, held.rows + len(df))
            held.la, held.last = la, last
            if len(held.tail) >= MAX_TAIL:
                self._join(held)
            return Stored(key, held.rows, len(df), False, True, first, last)
        # Stored rows from the incoming first date on are superseded (replace-last
        # when equal, rewind when older); stored is sorted, so one cut suffices.
        self._join(held)
        stored = held.frame
        frame = _match_dates(self._prepare(_as_frame(df)), stored["date"].dtype)
        keep = int(stored["date"].searchsorted(_like(stored["date"], first), "left"))
        merged = pd.concat([stored.iloc[:keep], frame]) if keep else frame
        merged = compacted(_renumbered(merged.iloc[-self.max_rows :]))
        newest = _utc(merged["date"].iloc[-1])
        self._held[key] = _Held(merged, la, newest, len(merged))
        old = _like(frame["date"], held.last)
        newer = len(frame) - int(frame["date"].searchsorted(old, "right"))
        return Stored(key, len(merged), newer, False, newer > 0, first, newest)

    def _join(self, held: _Held) -> None:
        """Build the frame with the candles appended since (under the lock)."""
        if not held.tail:
            return
        dtype = held.frame["date"].dtype
        parts = [
            _match_dates(self._prepare(_as_frame(p)), dtype) for p in _runs(held.tail)
        ]
        merged = pd.concat([held.frame, *parts])
        held.frame = compacted(_renumbered(merged.iloc[-self.max_rows :]))
        held.tail = []

    def _record(self, key: Key, result: Stored | Missing) -> None:
        # A Missing stays on record until some frame for the key is stored: a
        # request lost with a dropped connection can then be sent again.
        if isinstance(result, Missing):
            self._outstanding[key] = result
        else:
            self._outstanding.pop(key, None)


def _runs(tail: list[DataFrame | Rows]) -> list[DataFrame | Rows]:
    """The tail with each run of alike Rows joined: one DataFrame built per run."""
    runs: list[list] = []
    for part in tail:
        last = runs[-1][-1] if runs else None
        if isinstance(part, Rows) and isinstance(last, Rows) and last.joins(part):
            runs[-1].append(part)
        else:
            runs.append([part])
    return [Rows.joined(run) if len(run) > 1 else run[0] for run in runs]


def _as_frame(df: DataFrame | Rows) -> DataFrame:
    return df if isinstance(df, DataFrame) else df.frame()


def _date_range(key: Key, df: DataFrame | Rows) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The first and last date of a received frame, UTC; checks the date column."""
    try:
        dates = df["date"]
    except KeyError:
        raise ValueError(
            f"frame for {key} has no 'date' column; producer frames must carry "
            "each candle's open time in 'date'"
        ) from None
    if not pd.api.types.is_datetime64_any_dtype(dates.dtype):
        raise ValueError(
            f"frame for {key} has a 'date' column of dtype {dates.dtype}; "
            "decode it to datetime64 (UTC) before storing"
        )
    if len(dates) == 1:
        stamp = _utc(dates[0] if isinstance(df, Rows) else dates.iloc[0])
        return stamp, stamp
    return _utc(dates.min()), _utc(dates.max())


def _is_sorted(df: DataFrame | Rows) -> bool:
    if len(df) == 1:
        return True
    dates = df["date"]
    return bool(pd.Index(dates).is_monotonic_increasing)


def _renumbered(rows: DataFrame) -> DataFrame:
    """``rows`` (a fresh slice) indexed 0..n-1 without copying its columns.

    reset_index copies every column: 1 of the 2 ms that appending one candle to a
    1500-row frame took, paid per pair on every candle close.
    """
    rows.index = pd.RangeIndex(len(rows))
    return rows


def _like(dates: pd.Series, moment: datetime) -> pd.Timestamp:
    """``moment`` as comparable with ``dates`` (both tz-aware, or both naive UTC)."""
    stamp = _utc(moment)
    return stamp if dates.dt.tz is not None else stamp.tz_convert(UTC).tz_localize(None)


def _match_dates(frame: DataFrame, dtype: object) -> DataFrame:
    """Give ``frame['date']`` the stored dtype, so appends never change it."""
    dates = frame["date"]
    if dates.dtype == dtype:
        return frame
    stored_tz = getattr(dtype, "tz", None)
    if stored_tz is not None and dates.dt.tz is None:
        dates = dates.dt.tz_localize(UTC)  # naive means UTC on the wire
    elif stored_tz is None and dates.dt.tz is not None:
        dates = dates.dt.tz_convert(UTC).dt.tz_localize(None)
    frame = frame.copy(deep=False)
    frame["date"] = dates.astype(dtype)
    return frame
