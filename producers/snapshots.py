"""The hub's snapshot store: the latest analysed rows of every stream, and whitelists.

Rows are kept pre-encoded twice: as JSON bytes (FreqTrade's replies join them instead
of encoding dataframes) and as msgpack bytes with the columns' dtype codes (exact
values for the native protocol). A reply is encoded once per (stream, limit, format,
version) however many consumers ask. MemoryStore serves the embedded hub; RedisStore
lets several hub processes share one state (settings.REDIS_URL).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import secrets
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from controlplane.lib.wire import FeedFormat
from controlplane.lib.wire.columns import ProtocolError, format_datetime, parse_datetime
from controlplane.lib.wire.shapes import Snapshot

StreamKey = tuple[str, str, str, str]  # (producer, pair, timeframe, candle_type)

# Distinct (limit, format) replies cached per stream; consumers ask 1500 and a few gap
# sizes.
REPLY_CACHE_LIMITS = 16
# FreqTrade's FULL_DATAFRAME_THRESHOLD: a consumer replaces its whole frame with a
# broadcast of this many rows or more, and appends a shorter one.
FULL_FRAME_ROWS = 100


class ColumnsChanged(ProtocolError):
    """An update's columns differ from the stored snapshot's."""


class HistoryRewound(ProtocolError):
    """Rows that end before the newest candle already stored: time went back."""


class SnapshotStoreUnavailable(RuntimeError):
    """The shared store (Redis) cannot be reached."""


@dataclass
class _CachedReplies:
    token: Hashable  # what identifies the stored version these replies were built from
    texts: dict[tuple[int | None, str], str | bytes] = field(default_factory=dict)


class SnapshotStore(ABC):
    """One async interface over the in-process and the Redis store."""

    def __init__(self, max_rows: int | None = None) -> None:
        self._max_rows = max_rows
        self._replies: dict[StreamKey, _CachedReplies] = {}
        # Replies being built: a cold start (100 consumers asking for 100 pairs at
        # once) builds each reply once, the other requests wait for it. Without
        # this every request built its own copy (5.3 GB of hub memory at K=100).
        self._building: dict[Hashable, asyncio.Future] = {}

    @property
    def max_rows(self) -> int:
        if self._max_rows is None:
            from django.conf import settings

            self._max_rows = int(settings.CANDLECAST_SNAPSHOT_ROWS)
        return self._max_rows

    async def replace(
        self,
        key: StreamKey,
        columns: list[str],
        rows: list[bytes],
        packed: list[bytes],
        dates: list[int],
        la: datetime,
        *,
        dtypes: list[str] | None = None,
    ) -> int:
        """Make ``rows`` the whole snapshot of ``key``; returns the new version.

        ``rows`` are JSON (FreqTrade's replies), ``packed`` the same rows as msgpack
        (exact, for native replies), ``dtypes`` the columns' dtype codes (without
        them native replies infer each column's dtype).

        Raises:
            HistoryRewound: the rows end before the newest stored candle.
        """
        _check_rows(rows, packed, dates)
        return await self._write(
            "replace", key, list(columns), rows, dates, la, packed, dtypes
        )

    async def republish(
        self,
        key: StreamKey,
        columns: list[str],
        rows: list[bytes],
        packed: list[bytes],
        dates: list[int],
        la: datetime,
        *,
        dtypes: list[str] | None = None,
        keep_newer: bool = False,
    ) -> int:
        """``replace`` with a producer's whole history; returns how many of its
        newest rows subscribers must be sent to end equal to it.

        That is one row (the newest) when the rows already stored are unchanged,
        and every row from the first one that differs when a restarted producer
        re-analysed them: subscribers drop their rows from that date on and append
        these. When FULL_FRAME_ROWS rows or more differ, subscribers would take them
        for a whole frame: then all of them.

        ``keep_newer``: the history of a pool worker that just took the pair over.
        Its source may be a candle behind the previous owner's (each worker runs
        its own clock): when the history ends on a candle the store holds, the
        stored rows after it are kept after it, and the new owner's next candle
        replaces them by date. Consumers already hold those rows, so they stay
        equal to the hub, and no candle is lost.

        Raises:
            HistoryRewound: the history ends before the newest stored candle (with
                ``keep_newer``: on a candle the store does not hold).
        """
        _check_rows(rows, packed, dates)
        found = await self._read_tail(key, None)
        if keep_newer and found is not None and rows:
            rows, packed, dates = _with_newer(found[0], columns, rows, packed, dates)
        await self._write(
            "replace", key, list(columns), rows, dates, la, packed, dtypes
        )
        if found is None or not rows:
            return min(1, len(rows))
        held = found[0]
        trimmed = len(held.rows) >= self.max_rows  # it dropped older rows
        changed = len(rows) - _unchanged_prefix(held, columns, packed, dates, trimmed)
        return max(1, changed) if changed < FULL_FRAME_ROWS else len(rows)

    async def upsert(
        self,
        key: StreamKey,
        columns: list[str],
        rows: list[bytes],
        packed: list[bytes],
        dates: list[int],
        la: datetime,
        *,
        dtypes: list[str] | None = None,
    ) -> int:
        """Merge rows by date: stored rows from the first new date on are replaced.

        A later date appends, an equal date replaces that row, an earlier date rewinds
        the history to it (FreqTrade's consumer does the same). With no snapshot yet
        this is ``replace``. Rows must be sorted by date. Returns the new version.
        ``dtypes``, when given, replace the stored ones: native replies fall back to
        inferring a column's dtype where older rows do not fit the new one.

        Raises:
            ColumnsChanged: the columns differ from the stored ones.
        """
        _check_rows(rows, packed, dates)
        return await self._write(
            "upsert", key, list(columns), rows, dates, la, packed, dtypes
        )

    @abstractmethod
    async def _write(
        self,
        mode: str,
        key: StreamKey,
        columns: list[str],
        rows: list[bytes],
        dates: list[int],
        la: datetime,
        packed: list[bytes],
        dtypes: list[str] | None,
    ) -> int:
        """Replace or upsert (``mode``), trim to max_rows, bump the version."""

    async def tail(self, key: StreamKey, limit: int | None) -> Snapshot | None:
        """The last ``limit`` rows (None: all), or None for an unknown stream."""
        _check_limit(limit)
        found = await self._read_tail(key, limit)
        return None if found is None else found[0]

    @abstractmethod
    async def _read_tail(
        self, key: StreamKey, limit: int | None
    ) -> tuple[Snapshot, Hashable] | None:
        """The tail and its version token (see _version_token), read atomically."""

    @abstractmethod
    async def set_whitelist(self, producer: str, pairs: list[str]) -> bool:
        """Store a producer's whitelist; True when it changed."""

    @abstractmethod
    async def whitelist(self, producer: str) -> list[str] | None: ...

    @abstractmethod
    async def _version_token(self, key: StreamKey) -> Hashable | None:
        """What changes whenever the stream's snapshot does; None when unknown."""

    async def reply(
        self, key: StreamKey, limit: int | None, fmt: FeedFormat
    ) -> str | bytes:
        """The analyzed_df reply for ``key`` in ``fmt``, encoded once per version.

        An unknown stream gets FreqTrade's answer: an empty frame with la = EPOCH.
        """
        _check_limit(limit)
        token = await self._version_token(key)
        if token is None:
            return fmt.reply(key[1:], None)
        cached = self._replies.get(key)
        if cached is not None and cached.token == token:
            text = cached.texts.get((limit, fmt.name))
            if text is not None:
                return text
        flight = (key, token, limit, fmt.name)
        while (building := self._building.get(flight)) is not None:
            try:
                return await asyncio.shield(building)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this request was cancelled, not the build
                # The building request's socket went away: build it here.
        building = self._building[flight] = asyncio.get_running_loop().create_future()
        try:
            text = await self._build_reply(key, limit, fmt)
        except asyncio.CancelledError:
            building.cancel()
            raise
        except Exception as exc:
            building.set_exception(exc)
            building.exception()  # retrieved: the waiters (if any) raise it too
            raise
        finally:
            del self._building[flight]
        building.set_result(text)
        return text

    async def _build_reply(
        self, key: StreamKey, limit: int | None, fmt: FeedFormat
    ) -> str | bytes:
        found = await self._read_tail(key, limit)
        if found is None:  # removed between the two reads
            return fmt.reply(key[1:], None)
        snapshot, token = found  # may be newer than the first read: cache under it
        if fmt.offload_rows is not None and len(snapshot.rows) > fmt.offload_rows:
            text = await asyncio.to_thread(fmt.reply, key[1:], snapshot)
        else:
            text = fmt.reply(key[1:], snapshot)
        self._remember(key, token, (limit, fmt.name), text)
        return text

    def _remember(
        self,
        key: StreamKey,
        token: Hashable,
        which: tuple[int | None, str],
        text: str | bytes,
    ) -> None:
        cached = self._replies.get(key)
        if cached is None or cached.token != token:
            # Replies of older versions are dropped: at most one version per stream.
            cached = self._replies[key] = _CachedReplies(token)
        if len(cached.texts) >= REPLY_CACHE_LIMITS:
            cached.texts.pop(next(iter(cached.texts)))
        cached.texts[which] = text


def _check_rows(
    rows: Sequence[bytes], packed: Sequence[bytes], dates: Sequence[int]
) -> None:
    if len(packed) != len(rows):
        raise ValueError(
            f"{len(rows)} JSON rows but {len(packed)} msgpack rows: give both per row"
        )
    _check_dates(rows, dates)


def _unchanged_prefix(
    held: Snapshot,
    columns: list[str],
    packed: list[bytes],
    dates: list[int],
    trimmed: bool,
) -> int:
    """How many of the new rows subscribers of ``held`` already hold, unchanged:
    those older than its first row when the store trimmed them (``trimmed``: the
    subscribers got them before), then equal rows. Older rows the store never held
    (a relay whose bot first sent one candle, then its history) are new to them."""
    if held.columns != columns or not held.packed:
        return 0
    at = columns.index("date")
    first = orjson.loads(held.rows[0])[at]
    start = bisect.bisect_left(dates, first)
    if start and not trimmed:
        return 0
    same = set(held.packed)
    for index in range(start, len(packed)):
        if packed[index] not in same:
            return index
    return len(packed)


def _with_newer(
    held: Snapshot,
    columns: list[str],
    rows: list[bytes],
    packed: list[bytes],
    dates: list[int],
) -> tuple[list[bytes], list[bytes], list[int]]:
    """The history followed by the held rows newer than its last one, when it ends
    on a held candle with the held columns; else the history as it is."""
    if held.columns != columns or not held.rows or len(held.packed) != len(held.rows):
        return rows, packed, dates
    at, last = columns.index("date"), dates[-1]
    newer: list[int] = []
    for row in reversed(held.rows):
        date = orjson.loads(row)[at]
        if date <= last:
            if date != last:
                return rows, packed, dates  # not a held candle: a rewound history
            break
        newer.append(date)
    else:
        return rows, packed, dates  # every held row is newer: no common candle
    if not newer:
        return rows, packed, dates
    cut = len(held.rows) - len(newer)
    return (
        [*rows, *held.rows[cut:]],
        [*packed, *held.packed[cut:]],
        [*dates, *reversed(newer)],
    )


def _check_forward(key: StreamKey, dates: list[int], held: list[int]) -> None:
    if dates and held and dates[-1] < held[-1]:
        raise _rewound(key, dates[-1], held[-1])


def _rewound(key: StreamKey, newest: int, held: int) -> HistoryRewound:
    def minute(ms: int) -> str:
        return format_datetime(datetime.fromtimestamp(ms / 1000, UTC))

    return HistoryRewound(
        f"the rows for {key[1]} end at {minute(newest)}, before the {minute(held)} "
        f"candle producer {key[0]} already published: a history cannot go back in "
        "time (was the producer's source clock reset?); refused, the hub keeps "
        "serving the published rows"
    )


def _check_limit(limit: int | None) -> None:
    if limit is not None and (type(limit) is not int or limit < 1):
        raise ValueError(
            f"limit must be a positive int or None (all rows), got {limit!r}"
        )


def _check_dates(rows: Sequence[bytes], dates: Sequence[int]) -> None:
    if len(rows) != len(dates):
        raise ValueError(
            f"{len(rows)} rows but {len(dates)} dates: give one date per row"
        )
    for before, after in itertools.pairwise(dates):
        if after <= before:
            raise ValueError(f"row dates must increase, {after} follows {before}")


### In-process store


@dataclass
class _Stream:
    columns: list[str]
    rows: list[bytes]
    dates: list[int]
    la: datetime
    version: int
    packed: list[bytes]
    dtypes: list[str] | None


class MemoryStore(SnapshotStore):
    """The embedded hub's store: plain lists, searched with bisect."""

    _versions = itertools.count(1)  # unique across streams and stores: safe cache keys

    def __init__(self, max_rows: int | None = None) -> None:
        super().__init__(max_rows)
        self._streams: dict[StreamKey, _Stream] = {}
        self._whitelists: dict[str, list[str]] = {}
        # Methods never await while holding it; it guards callers on other threads.
        self._lock = threading.Lock()

    async def _write(
        self,
        mode: str,
        key: StreamKey,
        columns: list[str],
        rows: list[bytes],
        dates: list[int],
        la: datetime,
        packed: list[bytes],
        dtypes: list[str] | None,
    ) -> int:
        la = _utc(la)
        with self._lock:
            stream = self._streams.get(key)
            if mode == "replace" and stream is not None:
                _check_forward(key, dates, stream.dates)
            if mode == "replace" or stream is None:
                stream = _Stream(
                    columns, list(rows), list(dates), la, 0, list(packed), dtypes
                )
                self._streams[key] = stream
                return self._finish(stream)
            if stream.columns != columns:
                raise _columns_changed(key)
            if dates:
                cut = bisect.bisect_left(stream.dates, dates[0])
                del stream.rows[cut:], stream.dates[cut:], stream.packed[cut:]
                stream.rows.extend(rows)
                stream.dates.extend(dates)
                stream.packed.extend(packed)
            stream.la = la
            if dtypes is not None:
                stream.dtypes = dtypes
            return self._finish(stream)

    def _finish(self, stream: _Stream) -> int:
        excess = len(stream.rows) - self.max_rows
        if excess > 0:
            del stream.rows[:excess], stream.dates[:excess], stream.packed[:excess]
        stream.version = next(self._versions)
        return stream.version

    async def _read_tail(
        self, key: StreamKey, limit: int | None
    ) -> tuple[Snapshot, Hashable] | None:
        with self._lock:
            stream = self._streams.get(key)
            if stream is None:
                return None
            start = 0 if limit is None else max(len(stream.rows) - limit, 0)
            snapshot = Snapshot(
                list(stream.columns),
                stream.rows[start:],
                start,
                stream.la,
                stream.version,
                stream.packed[start:],
                stream.dtypes,
            )
            return snapshot, stream.version

    async def set_whitelist(self, producer: str, pairs: list[str]) -> bool:
        with self._lock:
            changed = self._whitelists.get(producer) != list(pairs)
            self._whitelists[producer] = list(pairs)
            return changed

    async def whitelist(self, producer: str) -> list[str] | None:
        with self._lock:
            pairs = self._whitelists.get(producer)
            return None if pairs is None else list(pairs)

    async def _version_token(self, key: StreamKey) -> Hashable | None:
        stream = self._streams.get(key)
        return None if stream is None else stream.version


def _utc(la: datetime) -> datetime:
    # What Redis would give back: an aware UTC datetime, naive taken as UTC.
    return parse_datetime(format_datetime(la))


def _columns_changed(key: StreamKey) -> ColumnsChanged:
    return ColumnsChanged(
        f"the columns of {'/'.join(key[1:])} from producer {key[0]!r} differ from the "
        "stored snapshot's: publish a full frame (full=true) when the columns change"
    )


### Redis store

# KEYS: rows (sorted set scored by date ms), meta (hash). ARGV: mode, columns JSON,
# la, max rows, generation, dtypes JSON ("" keeps the stored ones), then score/member
# pairs sorted by date. One script, so every hub process sees either the old or the
# new snapshot, never half of one.
_WRITE = """
local stored = redis.call('HGET', KEYS[2], 'columns')
if stored and ARGV[1] == 'replace' and #ARGV >= 7 then
  local held = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
  if held and tonumber(ARGV[#ARGV - 1]) < tonumber(held) then
    return redis.error_reply('CANDLECAST_REWOUND ' .. held)
  end
end
if ARGV[1] == 'upsert' and stored then
  if stored ~= ARGV[2] then return redis.error_reply('CANDLECAST_COLUMNS') end
  if #ARGV >= 7 then redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[7], '+inf') end
else
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], 'dtypes')
end
for i = 7, #ARGV, 1000 do
  redis.call('ZADD', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if excess > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1) end
redis.call('HSET', KEYS[2], 'columns', ARGV[2], 'la', ARGV[3])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'dtypes', ARGV[6]) end
redis.call('HSETNX', KEYS[2], 'gen', ARGV[5])
return redis.call('HINCRBY', KEYS[2], 'version', 1)
"""
# Members: the date (8 bytes, big-endian, so always unique), the JSON row's length
# (4 bytes), the JSON row, then the msgpack row.
_DATE = 8
_LENGTH = 4


@dataclass
class _Connection:
    client: aioredis.Redis
    write: Any  # the registered _WRITE script


class RedisStore(SnapshotStore):
    """Snapshots in Redis, shared by every hub process; replies cached locally."""

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = "candlecast:snap:",
        max_rows: int | None = None,
    ) -> None:
        super().__init__(max_rows)
        if url is None:
            from django.conf import settings

            url = settings.REDIS_URL
        self._url, self._prefix = url, prefix
        # redis.asyncio clients belong to the loop that made them: one per loop.
        self._connections: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, _Connection
        ] = weakref.WeakKeyDictionary()

    def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = self._connections.get(loop)
        if connection is None:
            client = aioredis.Redis.from_url(
                self._url, socket_connect_timeout=5, socket_timeout=10
            )
            connection = _Connection(client, client.register_script(_WRITE))
            self._connections[loop] = connection
        return connection

    async def aclose(self) -> None:
        """Close this event loop's connection (the hub calls it on shutdown)."""
        connection = self._connections.pop(asyncio.get_running_loop(), None)
        if connection is not None:
            await connection.client.aclose()

    def _keys(self, key: StreamKey) -> tuple[str, str]:
        # The hash tag keeps both keys of a stream in one Redis Cluster slot. "2": the
        # member layout with msgpack rows; a hub upgraded in place ignores the old
        # keys, and the producer worker republishes its history when it reconnects.
        tag = f"{self._prefix}{{{orjson.dumps(list(key)).decode()}}}"
        return f"{tag}:rows2", f"{tag}:meta2"

    def _unreachable(self, exc: Exception) -> SnapshotStoreUnavailable:
        return SnapshotStoreUnavailable(
            f"Redis at {redact_url(self._url)} is unreachable ({exc}): start Redis or "
            "unset REDIS_URL to keep snapshots in the hub process"
        )

    async def _write(
        self,
        mode: str,
        key: StreamKey,
        columns: list[str],
        rows: list[bytes],
        dates: list[int],
        la: datetime,
        packed: list[bytes],
        dtypes: list[str] | None,
    ) -> int:
        args: list[Any] = [mode, orjson.dumps(columns), format_datetime(la)]
        args += [self.max_rows, secrets.token_hex(8)]
        args.append(b"" if dtypes is None else orjson.dumps(dtypes))
        for date, row, exact in zip(dates, rows, packed, strict=True):
            head = date.to_bytes(_DATE, "big", signed=True)
            args += (date, head + len(row).to_bytes(_LENGTH, "big") + row + exact)
        try:
            return int(await self._connection().write(keys=self._keys(key), args=args))
        except ResponseError as exc:
            if "CANDLECAST_COLUMNS" in str(exc):
                raise _columns_changed(key) from None
            if "CANDLECAST_REWOUND" in str(exc):
                held = int(float(str(exc).split()[-1]))
                raise _rewound(key, dates[-1], held) from None
            raise
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unreachable(exc) from exc

    async def _read_tail(
        self, key: StreamKey, limit: int | None
    ) -> tuple[Snapshot, Hashable] | None:
        rows_key, meta_key = self._keys(key)
        try:
            async with self._connection().client.pipeline(transaction=True) as pipe:
                pipe.hmget(meta_key, "columns", "la", "version", "gen", "dtypes")
                pipe.zcard(rows_key)
                pipe.zrange(rows_key, 0 if limit is None else -limit, -1)
                (
                    (columns, la, version, gen, dtypes),
                    count,
                    members,
                ) = await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unreachable(exc) from exc
        if version is None:
            return None
        rows, packed = _split_members(members)
        snapshot = Snapshot(
            orjson.loads(columns),
            rows,
            count - len(rows),
            parse_datetime(la.decode()),
            int(version),
            packed,
            orjson.loads(dtypes) if dtypes else None,
        )
        return snapshot, (gen, int(version))

    async def _version_token(self, key: StreamKey) -> Hashable | None:
        try:
            version, gen = await self._connection().client.hmget(
                self._keys(key)[1], "version", "gen"
            )
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unreachable(exc) from exc
        # gen is random per stream creation: a flushed and refilled Redis, whose
        # versions restart at 1, never matches a reply cached before the flush.
        return None if version is None else (gen, int(version))

    async def set_whitelist(self, producer: str, pairs: list[str]) -> bool:
        value = orjson.dumps(list(pairs))
        try:
            old = await self._connection().client.set(
                f"{self._prefix}wl:{producer}", value, get=True
            )
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unreachable(exc) from exc
        return old != value

    async def whitelist(self, producer: str) -> list[str] | None:
        try:
            value = await self._connection().client.get(f"{self._prefix}wl:{producer}")
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unreachable(exc) from exc
        return None if value is None else orjson.loads(value)


def _split_members(members: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    rows, packed = [], []
    for member in members:
        end = _DATE + _LENGTH + int.from_bytes(member[_DATE : _DATE + _LENGTH], "big")
        rows.append(member[_DATE + _LENGTH : end])
        packed.append(member[end:])
    return rows, packed


def redact_url(url: str) -> str:
    """``url`` without its password, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urlunsplit(parts._replace(netloc=netloc))


### The process's store

_store: SnapshotStore | None = None
_store_lock = threading.Lock()


def get_store() -> SnapshotStore:
    """The hub process's store: Redis when settings.REDIS_URL is set, else memory."""
    global _store
    with _store_lock:
        if _store is None:
            from django.conf import settings

            url = settings.REDIS_URL
            prefix = f"{settings.CANDLECAST_REDIS_PREFIX}:snap:"
            _store = RedisStore(url, prefix=prefix) if url else MemoryStore()
        return _store


def reset_store() -> None:
    """Forget the process's store, so the next get_store() reads settings again."""
    global _store
    with _store_lock:
        _store = None
