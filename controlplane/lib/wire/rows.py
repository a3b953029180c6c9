"""Decoded rows, column by column, before they become a DataFrame.

Both wire decoders (FreqTrade's JSON in controlplane/lib/wire/protocol.py,
candlecast.v1 in controlplane/lib/wire/native.py) produce :class:`Rows`. pandas'
constructors cost 0.1-0.5 ms a frame however few its rows, ten times the decoding of
a one-row candle update, paid per pair and per consumer on every candle close.
The consumer's FrameStore therefore keeps updates as Rows and builds one
DataFrame from many when a frame is read.
Pure module (numpy, pandas): the hub never imports it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.internals import create_dataframe_from_blocks

from controlplane.lib.wire.columns import DATETIME, STRING


class Rows:
    """Columns of equal length, as numpy arrays.

    ``arrays`` holds one numpy array per name; ``finish`` maps a column's position
    to the wire code of the pandas dtype it takes in the DataFrame (``M8``: tz-aware
    UTC dates, ``str``: pandas strings), which pandas makes slowly (15-40 us a
    column), so only when a frame is built.
    A numpy datetime64 column here is always UTC. ``labels`` are the index labels
    (a range when they are consecutive integers). Treat a Rows as immutable.
    """

    __slots__ = ("names", "arrays", "finish", "labels")

    def __init__(
        self,
        names: Sequence[str],
        arrays: list[np.ndarray],
        labels: Sequence,
        finish: dict[int, str] | None = None,
    ) -> None:
        self.names = tuple(names)
        self.arrays = arrays
        self.labels = labels
        self.finish = finish or {}

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"<Rows {len(self)} x {len(self.names)}>"

    @property
    def empty(self) -> bool:
        """As ``DataFrame.empty``: no rows or no columns."""
        return not self.names or not len(self)

    def __getitem__(self, name: str) -> Any:
        """The array of column ``name``, as ``DataFrame[name]`` gives its Series.

        Raises:
            KeyError: there is no such column.
        """
        try:
            return self.arrays[self.names.index(name)]
        except ValueError:
            raise KeyError(name) from None

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (built from blocks: no per-column checks)."""
        if not self.names:
            return pd.DataFrame()
        arrays: list = list(self.arrays)
        dtypes = _pandas_dtypes()
        for position, code in self.finish.items():
            arrays[position] = pd.array(arrays[position], dtype=dtypes[code])
        return _frame_from_arrays(arrays, self.names, _index(self.labels))

    @classmethod
    def joined(cls, parts: Sequence[Rows]) -> Rows:
        """One Rows of ``parts`` in order; they must have the same columns, typed
        alike (as one producer's updates are)."""
        first = parts[0]
        if len(parts) == 1:
            return first
        arrays = [
            np.concatenate(column)
            for column in zip(*(p.arrays for p in parts), strict=True)
        ]
        labels = [label for part in parts for label in part.labels]
        return cls(first.names, arrays, labels, first.finish)

    def joins(self, other: Rows) -> bool:
        """Whether ``other`` has this one's columns, typed alike."""
        return (
            self.names == other.names
            and self.finish == other.finish
            and all(
                a.dtype == b.dtype
                for a, b in zip(self.arrays, other.arrays, strict=True)
            )
        )


@functools.cache
def date_unit() -> str:
    """The unit FreqTrade's decoding gives dates, pd.to_datetime(ms, unit="ms",
    utc=True): a frame decoded from either protocol has the same dtypes."""
    return pd.to_datetime(np.array([0]), unit="ms", utc=True).unit


@functools.cache
def _pandas_dtypes() -> dict[str, Any]:
    return {
        DATETIME: pd.DatetimeTZDtype(date_unit(), "UTC"),
        STRING: pd.array([], dtype="str").dtype,  # what FreqTrade's decoding gives
    }


def utc_dates(values: np.ndarray) -> np.ndarray:
    """int64 epoch milliseconds as datetime64 in date_unit() (NaT for int64 min)."""
    return values.view("M8[ms]").astype(f"M8[{date_unit()}]")


def _frame_from_arrays(
    arrays: list, names: Sequence[str], index: pd.Index
) -> pd.DataFrame:
    """A DataFrame straight from its blocks: one 2-D block per numpy dtype.

    Column by column, pandas spends ~30 us per column checking and wrapping arrays
    (2 ms for a 1-row frame of 26 columns, more than the decoding). The arrays here
    have exactly their final dtypes, so pandas' low-level public constructor is safe.
    """
    groups: dict[np.dtype, tuple[list, list]] = {}
    blocks = []
    for position, array in enumerate(arrays):
        if isinstance(array, np.ndarray):
            members, places = groups.setdefault(array.dtype, ([], []))
            members.append(array)
            places.append(position)
        else:  # an extension array (tz-aware dates, strings): a block of its own
            blocks.append((array, np.array([position], dtype=np.intp)))
    for members, places in groups.values():
        blocks.append((np.vstack(members), np.array(places, dtype=np.intp)))
    try:
        columns = _column_index(tuple(names))
    except TypeError:  # unhashable names (a JSON list as a column name)
        columns = pd.Index(list(names))
    return create_dataframe_from_blocks(blocks, index=index, columns=columns)


@functools.lru_cache(maxsize=1024)
def _column_index(names: tuple) -> pd.Index:
    # Every frame of a producer has the same columns: one (immutable) Index for all.
    return pd.Index(names)


def _index(labels: Sequence) -> pd.Index:
    if isinstance(labels, range):
        return pd.RangeIndex(labels.start, labels.stop)
    if all(type(label) is int for label in labels):
        return pd.Index(np.array(labels, dtype=np.int64))
    return pd.Index(labels)
