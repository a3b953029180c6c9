"""What consumer strategies read: FreqTrade's get_producer_df and get_producer_pairs.

Pure module over one :class:`~controlplane.lib.feedclient.framestore.FrameStore` per
producer name. Adds an
optional staleness guard (signals of an old candle are removed) and locking, since the
worker writes from its event loop while a strategy may read from another thread.

Using it from a plain Python script, without Django::

    from datetime import UTC, datetime
    from consumers.dataprovider import DataProvider
    from controlplane.lib.feedclient.framestore import FrameStore

    store = FrameStore(max_rows=1500)
    store.set_whitelist(["BTC/USDT"])
    store.apply(("BTC/USDT", "5m", "spot"), analysed_df, datetime.now(UTC))

    dp = DataProvider(timeframe="5m", max_signal_age=600)
    dp.attach("default", store)
    df, last_analyzed = dp.get_producer_df("BTC/USDT")  # a copy, safe to modify
    if not df.empty and not df.attrs["stale"]:
        ...
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from pandas import DataFrame

from controlplane.lib.candles import timeframe_seconds
from controlplane.lib.feedclient.framestore import (
    FrameStore,
    Key,
    candle_close,
    remove_signals,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DataProvider:
    """Producer frames by producer name, with FreqTrade's lookup defaults.

    ``timeframe`` and ``candle_type`` are the consumer strategy's and serve as the
    defaults for lookups. ``max_signal_age`` (seconds, None turns it off) is how long
    after the newest candle closes its signals may still be acted on; ``clock``
    returns the current aware datetime (injectable for tests).

    Thread safety: the producer map is guarded by this object's lock and each
    store's contents by the store's own lock. Stored frames are never modified in
    place, so the copy handed out is taken outside both locks.
    """

    def __init__(
        self,
        timeframe: str = "5m",
        candle_type: str = "spot",
        max_signal_age: float | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ):
        timeframe_seconds(timeframe)  # fail on a bad timeframe now, not on first read
        if max_signal_age is not None and max_signal_age < 0:
            raise ValueError(
                f"max_signal_age must be >= 0 seconds or None, got {max_signal_age}"
            )
        self.timeframe = timeframe
        self.candle_type = candle_type
        self.max_signal_age = max_signal_age
        self.clock = clock
        self._lock = threading.Lock()
        self._stores: dict[str, FrameStore] = {}

    def attach(self, producer_name: str, store: FrameStore) -> None:
        """Serve ``store`` as ``producer_name``, replacing any store of that name."""
        with self._lock:
            self._stores[producer_name] = store

    def get_producer_pairs(self, producer_name: str = "default") -> list[str]:
        """A copy of the producer's last whitelist; [] when the producer is unknown."""
        store = self._store(producer_name)
        return store.whitelist if store is not None else []

    def get_producer_df(
        self,
        pair: str,
        timeframe: str | None = None,
        candle_type: str | None = None,
        producer_name: str = "default",
    ) -> tuple[DataFrame, datetime]:
        """A copy of the producer's frame for the pair, and its last-analyzed time.

        Unknown producer or key: an empty ``DataFrame()`` and 1970-01-01 UTC, as in
        FreqTrade. The copy always carries ``attrs["stale"]`` (bool) and
        ``attrs["age_seconds"]`` (seconds since the newest candle closed, None when
        there is no candle); a stale copy has its entry/exit signals removed.
        """
        entry = self._lookup(pair, timeframe, candle_type, producer_name)
        if entry is None:
            df, la, age = DataFrame(), EPOCH, None
        else:
            stored, la = entry
            df = stored.copy()
            age = self._age(stored, timeframe or self.timeframe)
        stale = self._too_old(age)
        if stale and not df.empty:
            df = remove_signals(df)
        df.attrs["stale"] = stale
        df.attrs["age_seconds"] = age
        return df, la

    def is_stale(
        self,
        pair: str,
        timeframe: str | None = None,
        candle_type: str | None = None,
        producer_name: str = "default",
    ) -> bool:
        """True when max_signal_age is set and the newest candle is older or absent."""
        entry = self._lookup(pair, timeframe, candle_type, producer_name)
        if entry is None:
            return self._too_old(None)
        return self._too_old(self._age(entry[0], timeframe or self.timeframe))

    def _store(self, producer_name: str) -> FrameStore | None:
        with self._lock:
            return self._stores.get(producer_name)

    def _lookup(
        self,
        pair: str,
        timeframe: str | None,
        candle_type: str | None,
        producer_name: str,
    ) -> tuple[DataFrame, datetime] | None:
        store = self._store(producer_name)
        if store is None:
            return None
        # "or", not "is None": FreqTrade also treats "" as "use the default".
        key: Key = (pair, timeframe or self.timeframe, candle_type or self.candle_type)
        return store.get(key)

    def _age(self, frame: DataFrame, timeframe: str) -> float | None:
        if frame.empty:
            return None
        closed = candle_close(frame["date"].iloc[-1], timeframe)
        now = self.clock()
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        return (now - closed).total_seconds()

    def _too_old(self, age: float | None) -> bool:
        # No candle at all counts as too old: there is no fresh signal to act on.
        if self.max_signal_age is None:
            return False
        return age is None or age > self.max_signal_age
