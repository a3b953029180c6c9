"""The hub's snapshot store, run against both implementations.

MemoryStore always; RedisStore against the local Redis (db 15, a fresh key prefix per
test). Without Redis the Redis cases skip, or fail when the CI variable is set.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta

import msgpack
import orjson
import pytest
import redis

from controlplane.lib import wire
from controlplane.lib.wire import freqtrade
from controlplane.lib.wire.columns import EPOCH, ProtocolError, encode_row_json
from controlplane.lib.wire.freqtrade import EMPTY_SPLIT
from producers.snapshots import (
    REPLY_CACHE_LIMITS,
    ColumnsChanged,
    HistoryRewound,
    MemoryStore,
    RedisStore,
    SnapshotStoreUnavailable,
    get_store,
    redact_url,
    reset_store,
)

REDIS_TEST_URL = "redis://127.0.0.1:6379/15"
KEY = ("binance", "BTC/USDT", "5m", "spot")
COLUMNS = ["date", "close"]
STEP = 300_000
LA = datetime(2026, 11, 25, 10, 16, 1, 715292, tzinfo=UTC)


def make_rows(
    *dates: int, close: float = 1.5
) -> tuple[list[bytes], list[bytes], list[int]]:
    """Rows [date, close] as the hub stores them (JSON, msgpack), with their dates."""
    rows = [[d, close + d / STEP] for d in dates]
    json_rows = [encode_row_json(row) for row in rows]
    return json_rows, [msgpack.packb(row) for row in rows], list(dates)


def candles(first: int, count: int) -> list[int]:
    return [(first + i) * STEP for i in range(count)]


async def stored_dates(store, key=KEY) -> list[int]:
    snapshot = await store.tail(key, None)
    return [orjson.loads(row)[0] for row in snapshot.rows]


def redis_or_skip() -> None:
    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs Redis at {REDIS_TEST_URL}: {exc}")
        pytest.skip(f"Redis at {REDIS_TEST_URL} is unreachable: {exc}")


def delete_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def redis_prefix():
    """A key prefix of its own for one test, deleted afterwards."""
    redis_or_skip()
    prefix = f"candlecast:snap:test:{uuid.uuid4().hex}:"
    yield prefix
    delete_prefix(prefix)


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    """A store keeping 10 rows per stream, of each kind."""
    if request.param == "memory":
        yield MemoryStore(max_rows=10)
        return
    prefix = request.getfixturevalue("redis_prefix")
    shared = RedisStore(REDIS_TEST_URL, prefix=prefix, max_rows=10)
    yield shared
    await shared.aclose()


### Replace and tail


async def test_it_serves_the_tail_with_freqtrades_index(store):
    rows, packed, dates = make_rows(*candles(0, 10))
    await store.replace(KEY, COLUMNS, rows, packed, dates, LA)
    snapshot = await store.tail(KEY, 3)
    assert snapshot.rows == rows[-3:]
    assert snapshot.first_index == 7
    assert (snapshot.columns, snapshot.la) == (COLUMNS, LA)
    whole = await store.tail(KEY, None)
    assert (whole.rows, whole.first_index) == (rows, 0)
    assert (await store.tail(KEY, 50)).rows == rows


async def test_it_keeps_only_the_latest_rows(store):
    rows, packed, dates = make_rows(*candles(0, 25))
    await store.replace(KEY, COLUMNS, rows, packed, dates, LA)
    assert await stored_dates(store) == dates[-10:]


async def test_it_replaces_the_whole_history(store):
    await store.replace(KEY, COLUMNS, *make_rows(*candles(0, 5)), LA)
    await store.replace(KEY, ["date", "rsi"], *make_rows(*candles(100, 2)), LA)
    snapshot = await store.tail(KEY, None)
    assert snapshot.columns == ["date", "rsi"]
    assert await stored_dates(store) == candles(100, 2)


async def test_it_knows_nothing_of_unknown_streams(store):
    assert await store.tail(("x", "BTC/USDT", "5m", "spot"), None) is None
    assert await store.whitelist("nobody") is None


async def test_it_gives_la_back_as_aware_utc(store):
    naive = datetime(2026, 1, 1, 12, 0, 0, 42)
    await store.replace(KEY, COLUMNS, *make_rows(0), naive)
    assert (await store.tail(KEY, 1)).la == naive.replace(tzinfo=UTC)


async def test_it_refuses_bad_arguments(store):
    with pytest.raises(ValueError, match="row dates must increase, 0 follows 300000"):
        await store.replace(KEY, COLUMNS, *make_rows(STEP, 0), LA)
    rows, packed, dates = make_rows(0, STEP)
    with pytest.raises(ValueError, match="2 rows but 1 dates"):
        await store.upsert(KEY, COLUMNS, rows, packed, [0], LA)
    with pytest.raises(ValueError, match="2 JSON rows but 1 msgpack rows"):
        await store.replace(KEY, COLUMNS, rows, packed[:1], dates, LA)
    with pytest.raises(ValueError, match="limit must be a positive int or None"):
        await store.tail(KEY, 0)


### Upsert


async def test_it_appends_a_later_candle(store):
    first = await store.replace(KEY, COLUMNS, *make_rows(*candles(0, 3)), LA)
    later = LA + timedelta(minutes=5)
    second = await store.upsert(KEY, COLUMNS, *make_rows(3 * STEP), later)
    assert second > first
    assert await stored_dates(store) == candles(0, 4)
    assert (await store.tail(KEY, 1)).la == later


async def test_it_replaces_the_row_of_an_equal_date(store):
    await store.replace(KEY, COLUMNS, *make_rows(*candles(0, 3)), LA)
    rows, packed, dates = make_rows(2 * STEP, close=99.0)
    await store.upsert(KEY, COLUMNS, rows, packed, dates, LA)
    snapshot = await store.tail(KEY, None)
    assert len(snapshot.rows) == 3 and snapshot.rows[-1] == rows[0]


async def test_it_rewinds_to_an_earlier_date(store):
    await store.replace(KEY, COLUMNS, *make_rows(*candles(0, 6)), LA)
    await store.upsert(KEY, COLUMNS, *make_rows(*candles(2, 2), close=7.0), LA)
    assert await stored_dates(store) == candles(0, 4)


async def test_it_fills_a_hole_and_trims_on_upsert(store):
    await store.replace(KEY, COLUMNS, *make_rows(*candles(0, 8)), LA)
    await store.upsert(KEY, COLUMNS, *make_rows(*candles(7, 5)), LA)
    assert await stored_dates(store) == candles(2, 10)
    assert (await store.tail(KEY, 3)).first_index == 7


async def test_it_upserts_into_nothing_like_replace(store):
    await store.upsert(KEY, COLUMNS, *make_rows(*candles(4, 2)), LA)
    assert await stored_dates(store) == candles(4, 2)


async def test_it_asks_for_a_full_frame_when_columns_change(store):
    await store.replace(KEY, COLUMNS, *make_rows(0), LA)
    with pytest.raises(ColumnsChanged, match="publish a full frame") as caught:
        await store.upsert(KEY, ["date", "rsi"], *make_rows(STEP), LA)
    assert isinstance(caught.value, ProtocolError)
    assert await stored_dates(store) == [0]


async def test_it_keeps_streams_apart(store):
    other = ("binance", "ETH/USDT", "5m", "spot")
    await store.replace(KEY, COLUMNS, *make_rows(0), LA)
    await store.replace(other, COLUMNS, *make_rows(STEP, 2 * STEP), LA)
    assert await stored_dates(store) == [0]
    assert await stored_dates(store, other) == [STEP, 2 * STEP]


### Whitelists


async def test_it_says_whether_the_whitelist_changed(store):
    assert await store.set_whitelist("binance", ["BTC/USDT", "ETH/USDT"]) is True
    assert await store.set_whitelist("binance", ["BTC/USDT", "ETH/USDT"]) is False
    assert await store.set_whitelist("binance", ["ETH/USDT", "BTC/USDT"]) is True
    assert await store.whitelist("binance") == ["ETH/USDT", "BTC/USDT"]
    assert await store.whitelist("kraken") is None


### Replies


async def test_it_answers_an_unknown_stream_like_freqtrade(store):
    text = await store.reply(("binance", "NOPE/USDT", "5m", "spot"), 3, wire.FREQTRADE)
    assert text == freqtrade.analyzed_df_message(
        ("NOPE/USDT", "5m", "spot"), EMPTY_SPLIT, EPOCH
    )


async def test_it_replies_with_the_tail_as_freqtrade_frames(store):
    rows, packed, dates = make_rows(*candles(0, 10))
    await store.replace(KEY, COLUMNS, rows, packed, dates, LA)
    data = freqtrade.decode_message(await store.reply(KEY, 3, wire.FREQTRADE))["data"]
    assert data["key"] == list(KEY[1:]) and data["la"] == LA
    assert data["df"].index.tolist() == [7, 8, 9]
    assert data["df"]["close"].tolist() == [orjson.loads(r)[1] for r in rows[-3:]]


async def test_it_encodes_a_reply_once_per_version(store):
    await store.replace(KEY, COLUMNS, *make_rows(*candles(0, 5)), LA)
    first = await store.reply(KEY, None, wire.FREQTRADE)
    assert await store.reply(KEY, None, wire.FREQTRADE) is first
    await store.upsert(KEY, COLUMNS, *make_rows(5 * STEP), LA)
    fresh = await store.reply(KEY, None, wire.FREQTRADE)
    assert fresh is not first
    assert freqtrade.decode_message(fresh)["data"]["df"].shape == (6, 2)


async def test_it_bounds_the_reply_cache(store):
    await store.replace(KEY, COLUMNS, *make_rows(*candles(0, 10)), LA)
    for limit in range(1, 40):
        await store.reply(KEY, limit, wire.FREQTRADE)
    assert len(store._replies[KEY].texts) == REPLY_CACHE_LIMITS
    await store.upsert(KEY, COLUMNS, *make_rows(10 * STEP), LA)
    await store.reply(KEY, 2, wire.FREQTRADE)
    assert list(store._replies[KEY].texts) == [(2, "freqtrade")]  # older dropped
    await store.reply(("x", "NOPE/USDT", "5m", "spot"), 2, wire.FREQTRADE)
    assert ("x", "NOPE/USDT", "5m", "spot") not in store._replies


### Redis only


async def test_it_shares_snapshots_between_hub_processes(redis_prefix):
    """Two stores on one Redis behave like two hub processes."""
    hub_a = RedisStore(REDIS_TEST_URL, prefix=redis_prefix, max_rows=10)
    hub_b = RedisStore(REDIS_TEST_URL, prefix=redis_prefix, max_rows=10)
    await hub_a.replace(KEY, COLUMNS, *make_rows(*candles(0, 3)), LA)
    before = await hub_b.reply(KEY, None, wire.FREQTRADE)
    await hub_a.upsert(KEY, COLUMNS, *make_rows(3 * STEP), LA)
    after = await hub_b.reply(KEY, None, wire.FREQTRADE)
    assert freqtrade.decode_message(before)["data"]["df"].shape == (3, 2)
    assert freqtrade.decode_message(after)["data"]["df"].shape == (4, 2)
    assert await hub_b.set_whitelist("binance", ["A/B"]) is True
    assert await hub_a.set_whitelist("binance", ["A/B"]) is False
    await hub_a.aclose()
    await hub_b.aclose()


async def test_it_never_serves_a_reply_cached_before_a_flush(redis_prefix):
    """Versions restart after a flush; the stream's generation tells them apart."""
    store = RedisStore(REDIS_TEST_URL, prefix=redis_prefix, max_rows=10)
    await store.replace(KEY, COLUMNS, *make_rows(0), LA)
    old = await store.reply(KEY, None, wire.FREQTRADE)
    delete_prefix(redis_prefix)
    await store.replace(KEY, COLUMNS, *make_rows(STEP), LA)  # version 1 again
    new = await store.reply(KEY, None, wire.FREQTRADE)
    assert new != old and "300000" in new
    await store.aclose()


async def test_it_uses_one_client_per_event_loop(redis_prefix):
    store = RedisStore(REDIS_TEST_URL, prefix=redis_prefix, max_rows=10)
    await store.set_whitelist("binance", ["A/B"])

    def other_loop() -> list[str] | None:
        async def read():
            try:
                return await store.whitelist("binance")
            finally:
                await store.aclose()

        return asyncio.run(read())

    assert await asyncio.to_thread(other_loop) == ["A/B"]
    assert await store.whitelist("binance") == ["A/B"]
    await store.aclose()


async def test_it_says_how_to_fix_an_unreachable_redis():
    store = RedisStore("redis://:hunter2@127.0.0.1:1/0", max_rows=10)
    with pytest.raises(SnapshotStoreUnavailable) as caught:
        await store.whitelist("binance")
    message = str(caught.value)
    assert message.startswith("Redis at redis://:***@127.0.0.1:1/0 is unreachable")
    assert "start Redis or unset REDIS_URL" in message and "hunter2" not in message
    with pytest.raises(SnapshotStoreUnavailable):
        await store.replace(KEY, COLUMNS, *make_rows(0), LA)
    with pytest.raises(SnapshotStoreUnavailable):
        await store.reply(KEY, 3, wire.FREQTRADE)


def test_it_hides_passwords_in_urls():
    assert redact_url("redis://u:pw@host:6380/1") == "redis://u:***@host:6380/1"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


### The process's store


def test_it_picks_the_store_from_settings(settings):
    reset_store()
    try:
        settings.REDIS_URL = ""
        store = get_store()
        assert isinstance(store, MemoryStore) and get_store() is store
        reset_store()
        settings.REDIS_URL = REDIS_TEST_URL
        assert isinstance(get_store(), RedisStore)
    finally:
        reset_store()


async def test_it_keeps_as_many_rows_as_settings_say(settings):
    settings.CANDLECAST_SNAPSHOT_ROWS = 4
    store = MemoryStore()
    await store.replace(KEY, COLUMNS, *make_rows(*candles(0, 9)), LA)
    assert await stored_dates(store) == candles(5, 4)


async def test_it_refuses_a_history_that_goes_back_in_time(store):
    """Issue 15: a restarted producer's history ended hours before the published one."""
    await store.replace(KEY, COLUMNS, *make_rows(*candles(0, 8)), LA)
    with pytest.raises(HistoryRewound, match="before the 1970-01-01T00:35:00"):
        await store.republish(KEY, COLUMNS, *make_rows(*candles(0, 6)), LA)
    assert await stored_dates(store) == candles(0, 8)


async def test_it_says_which_rows_of_a_republished_history_changed(store):
    await store.replace(KEY, COLUMNS, *make_rows(*candles(0, 8)), LA)
    same = await store.republish(KEY, COLUMNS, *make_rows(*candles(2, 6)), LA)
    assert same == 1  # the newest: nothing else changed
    json_rows, packed, dates = make_rows(*candles(2, 9))
    # Re-analysed from candle 6 on (held, with other values), then 3 new candles.
    json_rows[4:], packed[4:] = make_rows(*candles(6, 5), close=9.0)[:2]
    assert await store.republish(KEY, COLUMNS, json_rows, packed, dates, LA) == 5


async def test_it_sends_older_rows_it_never_held_with_a_republished_history(store):
    """A relay's bot sent one candle before its history: the hub held that one
    row, so its subscribers hold nothing older and must get the whole history."""
    await store.replace(KEY, COLUMNS, *make_rows(*candles(7, 1)), LA)
    assert await store.republish(KEY, COLUMNS, *make_rows(*candles(0, 8)), LA) == 8


async def test_it_counts_older_rows_it_trimmed_as_held_by_subscribers():
    store = MemoryStore(max_rows=4)
    await store.replace(KEY, COLUMNS, *make_rows(*candles(0, 9)), LA)  # keeps 5-8
    assert await store.republish(KEY, COLUMNS, *make_rows(*candles(0, 9)), LA) == 1


async def test_it_sends_a_whole_republished_history_when_much_changed():
    """A broadcast of 100 rows or more replaces a consumer's frame: send all rows."""
    store = MemoryStore(max_rows=300)
    await store.replace(KEY, COLUMNS, *make_rows(*candles(0, 200)), LA)
    rows = make_rows(*candles(0, 200), close=2.0)
    assert await store.republish(KEY, COLUMNS, *rows, LA) == 200
