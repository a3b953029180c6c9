"""FrameStore: FreqTrade's append/gap semantics, minus its faults."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from controlplane.lib.feedclient.framestore import (
    MAX_TAIL,
    FrameStore,
    Missing,
    Stored,
    candle_close,
    candle_steps,
    gap_limit,
)
from controlplane.lib.wire import freqtrade
from controlplane.lib.wire.columns import encode_row_json
from tests.feeds import json_rows

KEY = ("BTC/USDT", "5m", "spot")
LA = datetime(2026, 1, 1, 12, tzinfo=UTC)
START = pd.Timestamp("2026-01-01", tz="UTC")


def make_frame(first: int, rows: int, freq: str = "5min", columns: int = 3):
    """Rows of candles numbered from ``first`` (candle n opens at START + n * freq)."""
    step = pd.Timedelta(freq)
    dates = pd.date_range(START + first * step, periods=rows, freq=freq)
    frame = pd.DataFrame({"date": dates})
    for index in range(columns):
        frame[f"c{index}"] = np.arange(first, first + rows, dtype="float64") + index
    frame["enter_long"] = 1.0
    frame["enter_tag"] = "breakout"
    return frame


def candle(n: int) -> pd.Timestamp:
    return START + n * pd.Timedelta("5min")


def stored_frame(store: FrameStore, key=KEY) -> pd.DataFrame:
    entry = store.get(key)
    assert entry is not None
    return entry[0]


def test_it_ignores_empty_frames():
    store = FrameStore()
    assert store.apply(KEY, pd.DataFrame(), LA) is None
    assert store.apply(KEY, make_frame(0, 0), LA) is None
    assert store.keys() == []


def test_it_stores_a_full_frame_with_its_last_analyzed():
    store = FrameStore()
    result = store.apply(KEY, make_frame(0, 1500), LA)
    assert result == Stored(
        KEY, rows=1500, appended=1500, replaced=True, new_candle=True
    )
    frame, la = store.get(KEY)
    assert la == LA
    assert frame["date"].iloc[-1] == candle(1499)
    assert store.keys() == [KEY]


def test_it_appends_the_next_candle():
    store = FrameStore()
    store.apply(KEY, make_frame(0, 200), LA)
    result = store.apply(KEY, make_frame(200, 1), LA)
    assert result == Stored(KEY, rows=201, appended=1, replaced=False, new_candle=True)
    frame = stored_frame(store)
    assert list(frame.index) == list(range(201))
    assert frame["date"].iloc[-1] == candle(200)
    assert frame["c0"].iloc[-1] == 200.0


def test_it_replaces_the_last_candle_when_it_comes_again():
    store = FrameStore()
    store.apply(KEY, make_frame(0, 200), LA)
    again = make_frame(199, 1).assign(c0=-1.0)
    result = store.apply(KEY, again, LA)
    assert result == Stored(KEY, rows=200, appended=0, replaced=False, new_candle=False)
    frame = stored_frame(store)
    assert frame["c0"].iloc[-1] == -1.0
    assert frame["date"].is_unique


def test_it_asks_for_three_candles_after_a_one_candle_hole():
    """As FreqTrade logs it: 'Holes in data ..., requesting 3 candles'."""
    store = FrameStore()
    store.apply(KEY, make_frame(0, 200), LA)
    result = store.apply(KEY, make_frame(201, 1), LA)
    assert result == Missing(KEY, limit=3)
    assert len(stored_frame(store)) == 200
    assert store.outstanding() == [Missing(KEY, 3)]

    # The 3-candle reply overlaps by one candle and fills the hole.
    filled = store.apply(KEY, make_frame(199, 3), LA)
    assert filled == Stored(KEY, rows=202, appended=2, replaced=False, new_candle=True)
    step = stored_frame(store)["date"].diff().dropna().unique()
    assert list(step) == [pd.Timedelta("5min")]
    assert store.outstanding() == []


def test_it_asks_for_a_whole_history_after_a_long_hole():
    store = FrameStore()
    store.apply(KEY, make_frame(0, 200), LA)
    assert store.apply(KEY, make_frame(250, 1), LA) == Missing(KEY, 52)
    assert store.apply(KEY, make_frame(400, 1), LA) == Missing(KEY, 1500)
    assert FrameStore(max_rows=300).apply(KEY, make_frame(0, 1), LA, full=False) == (
        Missing(KEY, 300)
    )


def test_it_caps_gap_requests_at_max_rows():
    assert gap_limit(2, 1500) == 3
    assert gap_limit(98, 1500) == 99
    assert gap_limit(99, 1500) == 1500
    assert gap_limit(98, 50) == 50


def test_it_rewinds_history_to_an_older_candle_like_freqtrade():
    store = FrameStore()
    store.apply(KEY, make_frame(0, 200), LA)
    result = store.apply(KEY, make_frame(150, 1), LA)
    assert result == Stored(KEY, rows=151, appended=0, replaced=False, new_candle=False)
    assert stored_frame(store)["date"].iloc[-1] == candle(150)


def test_it_loads_a_short_history_when_nothing_is_stored():
    """FreqTrade never loads fewer than 100 rows; a 60-row new listing must load."""
    store = FrameStore()
    result = store.apply(KEY, make_frame(0, 60), LA)
    assert result == Stored(KEY, rows=60, appended=60, replaced=True, new_candle=True)


def test_it_follows_an_explicit_full_flag():
    store = FrameStore()
    store.apply(KEY, make_frame(0, 200), LA)
    # A short frame flagged full replaces everything stored.
    assert store.apply(KEY, make_frame(300, 5), LA, full=True).replaced
    assert len(stored_frame(store)) == 5
    # A long frame flagged as an update is appended, not a replacement.
    result = store.apply(KEY, make_frame(305, 150), LA, full=False)
    assert result == Stored(
        KEY, rows=155, appended=150, replaced=False, new_candle=True
    )
    # Nothing stored and an update: ask for a whole history.
    other = ("ETH/USDT", "5m", "spot")
    assert store.apply(other, make_frame(0, 1), LA, full=False) == Missing(other, 1500)


def test_it_keeps_memory_bounded_at_max_rows():
    store = FrameStore(max_rows=100)
    store.apply(KEY, make_frame(0, 250), LA)
    frame = stored_frame(store)
    assert len(frame) == 100
    assert frame["date"].iloc[0] == candle(150)
    assert list(frame.index) == list(range(100))
    for n in range(250, 260):
        assert store.apply(KEY, make_frame(n, 1), LA).rows == 100
    assert stored_frame(store)["date"].iloc[0] == candle(160)


def test_it_sorts_frames_by_date():
    store = FrameStore()
    shuffled = make_frame(0, 120).sample(frac=1, random_state=3)
    store.apply(KEY, shuffled, LA)
    frame = stored_frame(store)
    assert frame["date"].is_monotonic_increasing
    assert list(frame.index) == list(range(120))


def test_it_removes_entry_and_exit_signals_on_every_frame_when_asked():
    store = FrameStore(remove_entry_exit_signals=True)
    received = make_frame(0, 120)
    store.apply(KEY, received, LA)
    store.apply(KEY, make_frame(120, 1), LA)
    frame = stored_frame(store)
    for column in ("enter_long", "exit_long", "enter_short", "exit_short"):
        assert (frame[column] == 0).all(), column
        assert frame[column].dtype == "int64"
    assert frame["enter_tag"].isna().all() and frame["exit_tag"].isna().all()
    # The caller's frame is left alone.
    assert (received["enter_long"] == 1.0).all()


def test_it_keeps_signals_by_default():
    store = FrameStore()
    store.apply(KEY, make_frame(0, 120), LA)
    assert (stored_frame(store)["enter_tag"] == "breakout").all()


def test_it_keeps_the_date_dtype_across_appends():
    store = FrameStore()
    store.apply(KEY, make_frame(0, 120).astype({"date": "datetime64[ns, UTC]"}), LA)
    update = make_frame(120, 1).astype({"date": "datetime64[ms, UTC]"})
    store.apply(KEY, update, LA)
    naive = make_frame(121, 1)
    naive["date"] = naive["date"].dt.tz_localize(None).astype("datetime64[s]")
    store.apply(KEY, naive, LA)
    frame = stored_frame(store)
    assert frame["date"].dtype == "datetime64[ns, UTC]"
    assert frame["date"].iloc[-1] == candle(121)


def test_it_refuses_frames_without_datetime_dates():
    store = FrameStore()
    with pytest.raises(ValueError, match="no 'date' column"):
        store.apply(KEY, make_frame(0, 3).drop(columns="date"), LA)
    as_ms = make_frame(0, 3).assign(date=lambda df: df["date"].astype("int64"))
    with pytest.raises(ValueError, match="decode it to datetime64"):
        store.apply(KEY, as_ms, LA)


def wire_rows(frame: pd.DataFrame):
    """``frame`` as the consumer decodes it off FreqTrade's wire: Rows, not a frame."""
    columns, rows = json_rows(frame)
    encoded = [encode_row_json(row) for row in rows]
    return freqtrade.decode_rows(freqtrade.split_document(columns, encoded, 0))


def test_it_keeps_appended_candles_as_received_until_the_frame_is_read():
    """A candle close costs the loop a list append; the frame is built when read."""
    store, eager = FrameStore(max_rows=300), FrameStore(max_rows=300)
    for target in (store, eager):
        target.apply(KEY, make_frame(0, 298), LA)
    for n in range(298, 303):
        result = store.apply(KEY, wire_rows(make_frame(n, 1)), LA)
        assert result == Stored(KEY, min(n + 1, 300), 1, False, True)
        assert (result.first, result.last) == (candle(n), candle(n))
        assert store.newest(KEY) == (candle(n), min(n + 1, 300))
        eager.apply(KEY, make_frame(n, 1), LA)
        stored_frame(eager)  # built at every candle
    frame = stored_frame(store)  # built once, from five candles
    assert_frame_equal(frame, stored_frame(eager), check_dtype=False)
    assert frame["enter_tag"].dtype == make_frame(0, 1)["enter_tag"].dtype
    assert frame["date"].dtype == "datetime64[us, UTC]"
    assert list(frame.index) == list(range(300))
    assert stored_frame(store) is frame  # nothing new: the same frame


def test_it_bounds_the_candles_kept_for_a_pair_nobody_reads():
    store = FrameStore(max_rows=300)
    store.apply(KEY, make_frame(0, 200), LA)
    last = 200 + 2 * MAX_TAIL + 4
    for n in range(200, last + 1):
        store.apply(KEY, wire_rows(make_frame(n, 1)), LA)
    assert len(store._held[KEY].tail) == 5  # joined twice without a read
    frame = stored_frame(store)
    assert len(frame) == 300 and frame["date"].iloc[-1] == candle(last)
    assert frame["date"].diff().iloc[1:].eq(pd.Timedelta("5min")).all()


def test_it_joins_received_rows_before_a_rewind_or_a_replaced_candle():
    store = FrameStore()
    store.apply(KEY, make_frame(0, 200), LA)
    store.apply(KEY, wire_rows(make_frame(200, 1)), LA)
    again = make_frame(200, 1).assign(c0=-1.0)
    result = store.apply(KEY, wire_rows(again), LA)
    assert result == Stored(KEY, rows=201, appended=0, replaced=False, new_candle=False)
    frame = stored_frame(store)
    assert frame["c0"].iloc[-1] == -1.0 and frame["date"].iloc[-1] == candle(200)
    store.apply(KEY, wire_rows(make_frame(201, 1)), LA)
    store.apply(KEY, wire_rows(make_frame(150, 1)), LA)  # rewind
    assert stored_frame(store)["date"].iloc[-1] == candle(150)
    assert len(stored_frame(store)) == 151


def test_it_detects_a_hole_after_received_rows_not_yet_read():
    store = FrameStore()
    store.apply(KEY, make_frame(0, 200), LA)
    store.apply(KEY, wire_rows(make_frame(200, 1)), LA)
    assert store.apply(KEY, wire_rows(make_frame(202, 1)), LA) == Missing(KEY, 3)
    assert store.apply(KEY, wire_rows(make_frame(201, 2)), LA).rows == 203


def test_it_stores_now_when_last_analyzed_is_missing():
    store = FrameStore()
    before = datetime.now(UTC)
    store.apply(KEY, make_frame(0, 10), None)
    assert store.get(KEY)[1] >= before


def test_it_measures_gaps_in_calendar_months_and_years():
    jan, mar = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    assert candle_steps(jan, datetime(2026, 2, 1, tzinfo=UTC), "1M") == 1
    assert candle_steps(jan, mar, "1M") == 2
    assert candle_steps(jan, datetime(2026, 4, 1, tzinfo=UTC), "3M") == 1
    assert candle_steps(jan, datetime(2028, 1, 1, tzinfo=UTC), "1y") == 2
    assert candle_steps(jan, datetime(2026, 1, 8, tzinfo=UTC), "1w") == 1
    assert candle_steps(jan, datetime(2026, 1, 2, tzinfo=UTC), "1d") == 1
    assert candle_close(datetime(2026, 2, 1, tzinfo=UTC), "1M") == pd.Timestamp(
        "2026-03-01", tz="UTC"
    )


def test_it_appends_and_detects_holes_on_monthly_frames():
    """FreqTrade's to_timedelta('1M') raises, so its monthly updates all fail."""
    key = ("BTC/USDT", "1M", "spot")
    months = pd.date_range("2024-01-01", periods=30, freq="MS", tz="UTC")
    frame = pd.DataFrame({"date": months, "close": np.arange(30.0)})
    store = FrameStore()
    store.apply(key, frame.iloc[:20], LA)
    assert store.apply(key, frame.iloc[20:21], LA).new_candle
    assert store.apply(key, frame.iloc[22:23], LA) == Missing(key, 3)
    assert store.outstanding() == [Missing(key, 3)]


def test_it_keeps_missing_requests_until_a_frame_fills_them():
    store = FrameStore()
    other = ("ETH/USDT", "5m", "spot")
    store.apply(KEY, make_frame(0, 200), LA)
    store.apply(KEY, make_frame(205, 1), LA)
    store.apply(KEY, make_frame(206, 1), LA)  # still a hole: the newer request wins
    store.apply(other, make_frame(0, 1), LA, full=False)
    assert store.outstanding() == [Missing(KEY, 8), Missing(other, 1500)]
    store.apply(KEY, make_frame(199, 8), LA)
    assert store.outstanding() == [Missing(other, 1500)]
    store.remove(other)
    assert store.outstanding() == []


def test_it_removes_and_clears_keys():
    store = FrameStore()
    other = ("ETH/USDT", "5m", "spot")
    store.apply(KEY, make_frame(0, 10), LA)
    store.apply(other, make_frame(0, 10), LA)
    store.remove(KEY)
    assert store.get(KEY) is None and store.keys() == [other]
    store.clear()
    assert store.keys() == []


def test_it_keeps_a_copy_of_the_whitelist():
    store = FrameStore()
    pairs = ["BTC/USDT", "ETH/USDT"]
    store.set_whitelist(pairs)
    pairs.append("XRP/USDT")
    assert store.whitelist == ["BTC/USDT", "ETH/USDT"]
    store.whitelist.append("DOGE/USDT")
    assert store.whitelist == ["BTC/USDT", "ETH/USDT"]


def test_it_never_changes_a_frame_it_handed_out():
    store = FrameStore()
    store.apply(KEY, make_frame(0, 120), LA)
    handed_out = stored_frame(store)
    snapshot = handed_out.copy()
    store.apply(KEY, make_frame(120, 1), LA)
    store.apply(KEY, make_frame(100, 1), LA)
    assert_frame_equal(handed_out, snapshot)


def test_it_serves_readers_while_a_writer_appends():
    store = FrameStore(max_rows=300)
    store.apply(KEY, make_frame(0, 300), LA)
    done, errors = threading.Event(), []

    def read():
        while not done.is_set():
            frame = stored_frame(store)
            if len(frame) != 300 or not frame["date"].is_monotonic_increasing:
                errors.append(len(frame))
            # A strategy reads now and then; a reader spinning without a pause
            # would take the GIL from the writer for a switch interval each time.
            time.sleep(0.0002)

    reader = threading.Thread(target=read)
    reader.start()
    for n in range(300, 500):
        store.apply(KEY, make_frame(n, 1), LA)
    done.set()
    reader.join()
    assert errors == []


def test_it_keeps_each_text_column_in_one_piece_as_candles_append():
    """pd.concat appends an Arrow column as one more chunk: a long-lived frame
    would hold one chunk per candle (and every array they slice)."""
    store = FrameStore()
    store.apply(KEY, make_frame(0, 300), LA)
    for n in range(300, 340):
        store.apply(KEY, make_frame(n, 1), LA)
        stored_frame(store)  # joined on each read
    frame = stored_frame(store)
    chunks = frame["enter_tag"].array.__arrow_array__().num_chunks
    assert chunks == 1
    assert list(frame["enter_tag"].unique()) == ["breakout"]
    assert frame["date"].iloc[-1] == candle(339)
