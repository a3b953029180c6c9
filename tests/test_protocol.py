"""The wire protocol: FreqTrade frames, feed requests and the hub's publish messages.

Round trips say which dtypes each path keeps: ours keeps float64 / int64 / str / bool
and full float precision; FreqTrade's read_json turns inf into NaN (so do we: JSON has
no inf) and whole-number float columns into int64.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from io import StringIO

import msgpack
import numpy as np
import orjson
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from controlplane.lib.wire import freqtrade, publish
from controlplane.lib.wire.columns import (
    EPOCH,
    ProtocolError,
    encode_row_json,
    format_datetime,
)
from controlplane.lib.wire.freqtrade import EMPTY_SPLIT, MESSAGE_TYPES, Request
from tests.feeds import json_rows

KEY = ("BTC/USDT", "5m", "spot")
LA = datetime(2026, 11, 25, 10, 16, 1, 715292, tzinfo=UTC)


def make_frame(rows: int = 6) -> pd.DataFrame:
    """A small analysed frame with the shapes a strategy produces."""
    dates = pd.to_datetime(
        1795601700000 + 300_000 * np.arange(rows), unit="ms", utc=True
    )
    close = 35355.9678394565 + np.arange(rows) * 1.25
    signal = np.full(rows, np.nan)
    signal[1] = 1.0
    return pd.DataFrame(
        {
            "date": dates,
            "close": close,
            "tiny": np.resize([1e-11, 0.000012345678912, 3.0], rows),
            "rsi": np.resize([40.7515069966, np.nan, 55.5], rows),
            "volume": np.arange(rows, dtype=np.int64) * 10,
            "enter_long": signal,
            "enter_tag": pd.Series(np.resize(["", "rsi_cross"], rows), dtype="str"),
            "flag": np.resize([True, False], rows),
        }
    )


def feed_text(df: pd.DataFrame, first_index: int = 0, la: datetime = LA) -> str:
    columns, rows = json_rows(df)
    doc = freqtrade.split_document(
        columns, [encode_row_json(r) for r in rows], first_index
    )
    return freqtrade.analyzed_df_message(KEY, doc, la)


def split_value(text: str) -> str:
    return orjson.loads(text)["data"]["df"]["__value__"]


### Frames: encode, decode, FreqTrade compatibility


def test_it_round_trips_a_strategy_frame_exactly():
    df = make_frame()
    data = freqtrade.decode_message(feed_text(df))["data"]
    assert data["key"] == list(KEY)
    assert data["la"] == LA
    assert_frame_equal(data["df"], df, check_exact=True)
    assert data["df"]["tiny"].iloc[0] == 1e-11  # FreqTrade's to_json would send 0.0


def test_it_sends_inf_as_null_which_comes_back_as_nan():
    """Lossy like FreqTrade's format: JSON has no infinity."""
    df = make_frame(3)
    df["rsi"] = [np.inf, -np.inf, 1.5]
    assert "[1795601700000,35355.9678394565,1e-11,null," in split_value(feed_text(df))
    decoded = freqtrade.decode_message(feed_text(df))["data"]["df"]
    assert decoded["rsi"].isna().tolist() == [True, True, False]


def test_it_is_read_by_freqtrades_own_decoding():
    """What a real FreqTrade consumer runs on our __value__ gives the same values."""
    df = make_frame(120)
    value = split_value(feed_text(df, first_index=1380))
    theirs = pd.read_json(StringIO(value), orient="split")
    theirs["date"] = pd.to_datetime(theirs["date"], unit="ms", utc=True)
    assert theirs.index.tolist() == list(range(1380, 1500))
    expected = df.set_axis(pd.RangeIndex(1380, 1500))
    # read_json parses floats within ~1 ulp unless precise_float=True
    assert_frame_equal(theirs, expected, check_exact=False, rtol=1e-15, atol=0)
    precise = pd.read_json(StringIO(value), orient="split", precise_float=True)
    assert precise["tiny"].tolist() == df["tiny"].tolist()


def test_it_turns_whole_number_floats_to_int_only_on_freqtrades_path():
    df = pd.DataFrame({"date": make_frame(2)["date"], "volume": [100.0, 200.0]})
    value = split_value(feed_text(df))
    assert pd.read_json(StringIO(value), orient="split")["volume"].dtype == "int64"
    assert freqtrade.decode_rows(value).frame()["volume"].dtype == "float64"


def test_it_does_not_modify_the_frame_it_encodes():
    df = make_frame()
    before = df.copy()
    json_rows(df)
    assert_frame_equal(df, before, check_exact=True)


def test_it_encodes_every_datetime_column_as_utc_milliseconds():
    df = pd.DataFrame(
        {
            "naive": pd.to_datetime(["2026-01-01 00:00:00.0019", None]),
            "berlin": pd.to_datetime(
                ["2026-01-01 01:00:00.0019+01:00", None], utc=True
            ).tz_convert("Europe/Berlin"),
            "ns": np.array(["1969-12-31T23:59:59.9995", "NaT"], dtype="datetime64[ns]"),
            "close_time": pd.to_timedelta(["1.5s", None]),
        }
    )
    assert json_rows(df)[1] == [
        [1767225600001, 1767225600001, -1, 1500],  # sub-ms floored, like // 1e6
        [None, None, None, None],
    ]


def test_it_encodes_numpy_and_extension_values_as_plain_python():
    df = pd.DataFrame(
        {
            "Int64": pd.array([1, None], dtype="Int64"),
            "boolean": pd.array([True, None], dtype="boolean"),
            "cat": pd.Categorical(["a", None]),
            "obj": pd.Series([np.float64(np.inf), np.int32(7)], dtype=object),
            "when": pd.Series(
                [datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))), None],
                dtype=object,
            ),
            "u8": np.array([1, 2], dtype=np.uint8),
        }
    )
    columns, rows = json_rows(df)
    assert rows == [
        [1, True, "a", None, 1767225600000, 1],
        [None, None, None, 7, None, 2],
    ]
    plain = {type(None), bool, int, str}
    assert {type(value) for row in rows for value in row} == plain  # no numpy scalars


def test_it_refuses_values_that_have_no_json_form():
    df = pd.DataFrame({"price": pd.Series([Decimal("1.5")], dtype=object)})
    with pytest.raises(ValueError, match="column 'price' holds a Decimal"):
        json_rows(df)


def test_it_builds_the_split_document_from_row_bytes():
    rows = [b"[1,2.5]", b'[2,"x"]']
    doc = freqtrade.split_document(["date", "v"], rows, 1498)
    assert (
        doc == b'{"columns":["date","v"],"index":[1498,1499],"data":[[1,2.5],[2,"x"]]}'
    )
    assert freqtrade.split_document([], [], 0) == EMPTY_SPLIT


def test_it_writes_freqtrades_analyzed_df_frame():
    text = freqtrade.analyzed_df_message(
        KEY, b'{"columns":["date"],"index":[7],"data":[[1]]}', LA
    )
    assert text == (
        '{"type":"analyzed_df","data":{"key":["BTC/USDT","5m","spot"],'
        '"df":{"__type__":"dataframe","__value__":'
        '"{\\"columns\\":[\\"date\\"],\\"index\\":[7],\\"data\\":[[1]]}"},'
        '"la":"2026-11-25T10:16:01.715292+00:00"}}'
    )


def test_it_answers_an_unknown_pair_like_freqtrade():
    text = freqtrade.analyzed_df_message(
        ("NOPE/USDT", "5m", "spot"), EMPTY_SPLIT, EPOCH
    )
    assert text == (
        '{"type":"analyzed_df","data":{"key":["NOPE/USDT","5m","spot"],"df":{"__type__"'
        ':"dataframe","__value__":"{\\"columns\\":[],\\"index\\":[],\\"data\\":[]}"},'
        '"la":"1970-01-01T00:00:00+00:00"}}'
    )
    decoded = freqtrade.decode_message(text)["data"]
    assert decoded["df"].empty and decoded["la"] == EPOCH


def test_it_writes_la_in_utc_with_an_offset():
    naive = datetime(2026, 1, 1, 12, 0, 0, 5)
    berlin = datetime(2026, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert format_datetime(naive) == "2026-01-01T12:00:00.000005+00:00"
    assert format_datetime(berlin) == "2026-01-01T12:00:00+00:00"
    assert format_datetime(pd.Timestamp(berlin)) == "2026-01-01T12:00:00+00:00"


def test_it_writes_the_small_server_messages():
    assert freqtrade.whitelist_message(["BTC/USDT", "ETH/USDT"]) == (
        '{"type":"whitelist","data":["BTC/USDT","ETH/USDT"]}'
    )
    assert freqtrade.new_candle_message(KEY) == (
        '{"type":"new_candle","data":["BTC/USDT","5m","spot"]}'
    )
    assert freqtrade.exception_message("Invalid request type: x") == (
        '{"type":"exception","data":"Invalid request type: x"}'
    )


### Decoding


def test_it_decodes_freqtrades_own_broadcast():
    """The 1-row frame observed from a real FreqTrade producer (PROTOCOL §12)."""
    text = (
        '{"type":"analyzed_df","data":{"key":["BTC/USDT","5m","spot"],"df":{"__type__":'
        '"dataframe","__value__":"{\\"columns\\":[\\"date\\",\\"open\\",\\"rsi\\",'
        '\\"enter_tag\\",\\"enter_long\\"],\\"index\\":[1499],\\"data\\":[[1795601700000,'
        '35355.9678394565,40.7515069966,\\"\\",null]]}"},'
        '"la":"2026-11-25T10:16:03.725171+00:00"}}'
    )
    data = freqtrade.decode_message(text)["data"]
    df = data["df"]
    assert df.index.tolist() == [1499]
    assert df["date"].iloc[0] == pd.Timestamp("2026-11-25 10:15:00", tz="UTC")
    assert str(df["date"].dtype) == "datetime64[us, UTC]"
    assert df["open"].iloc[0] == 35355.9678394565
    assert df["enter_tag"].iloc[0] == "" and df["enter_tag"].dtype == "str"
    assert np.isnan(df["enter_long"].iloc[0]) and df["enter_long"].dtype == "float64"
    assert data["la"] == datetime(2026, 11, 25, 10, 16, 3, 725171, tzinfo=UTC)


def test_it_picks_dtypes_from_the_json_values_not_the_names():
    value = orjson.dumps(
        {
            "columns": ["close_time", "n", "f", "nulls", "s", "b", "mixed"],
            "index": [0, 1],
            "data": [
                [1795601700000, 1, 1, None, "a", True, "x"],
                [1795602000000, 2, 2.5, None, None, False, 1],
            ],
        }
    )
    df = freqtrade.decode_rows(value).frame()
    assert df.dtypes.astype(str).tolist() == [
        "int64",
        "int64",
        "float64",
        "float64",
        "str",
        "bool",
        "object",
    ]
    assert df["s"].isna().tolist() == [False, True]


def test_it_decodes_an_empty_split_document_to_an_empty_frame():
    assert freqtrade.decode_rows(EMPTY_SPLIT).frame().shape == (0, 0)


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("[1]", "must be a JSON object"),
        ('{"type":1}', "message type must be a string"),
        ('{"type":"analyzed_df","data":[]}', "data must be an object"),
        ('{"type":"analyzed_df","data":{"key":["a","5m"],"df":{}}}', "key must be"),
        ('{"type":"analyzed_df","data":{"key":["a","5m","spot"],"df":{}}}', "__type__"),
        (
            '{"type":"analyzed_df","data":{"key":["a","5m","spot"],'
            '"df":{"__type__":"dataframe","__value__":{"columns":[]}}}}',
            "as a JSON string",
        ),
        (
            '{"type":"analyzed_df","data":{"key":["a","5m","spot"],'
            '"df":{"__type__":"dataframe","__value__":"{\\"columns\\":[\\"date\\"],'
            '\\"index\\":[0],\\"data\\":[[1,2]]}"}}}',
            "row 0 must be a list of 1 values",
        ),
        (
            '{"type":"analyzed_df","data":{"key":["a","5m","spot"],'
            '"df":{"__type__":"dataframe","__value__":"{\\"columns\\":[\\"date\\"],'
            '\\"index\\":[0],\\"data\\":[[\\"2026-01-01\\"]]}"}}}',
            "date column must hold int epoch milliseconds",
        ),
        (
            '{"type":"analyzed_df","data":{"key":["a","5m","spot"],'
            '"df":{"__type__":"dataframe","__value__":"{}"},"la":"yesterday"}}',
            "la must be an RFC 3339 datetime",
        ),
        ('{"type":"whitelist","data":"BTC/USDT"}', "whitelist data must be a list"),
        ('{"type":"new_candle","data":["BTC/USDT"]}', "new_candle data must be"),
    ],
)
def test_it_refuses_malformed_server_messages(text, complaint):
    with pytest.raises(ProtocolError, match=complaint):
        freqtrade.decode_message(text)


### Feed requests


@pytest.mark.parametrize(
    "text, request_",
    [
        ('{"type":"whitelist"}', Request("whitelist")),
        ('{"type":"whitelist","data":[1],"extra":2}', Request("whitelist")),
        (
            '{"type":"subscribe","data":["whitelist","analyzed_df"]}',
            Request("subscribe", topics=("whitelist", "analyzed_df")),
        ),
        (
            '{"type":"subscribe","data":["nonsense"]}',
            Request("subscribe", ("nonsense",)),
        ),
        ('{"type":"subscribe","data":[]}', Request("subscribe")),
        ('{"type":"subscribe"}', Request("subscribe")),
        ('{"type":"analyzed_df"}', Request("analyzed_df")),
        ('{"type":"analyzed_df","data":null}', Request("analyzed_df")),
        ('{"type":"analyzed_df","data":{}}', Request("analyzed_df")),
        (
            '{"type":"analyzed_df","data":{"limit":1500,"pair":null}}',
            Request("analyzed_df", limit=1500),
        ),
        (
            '{"type":"analyzed_df","data":{"pair":"ETH/USDT"}}',
            Request("analyzed_df", limit=1500, pair="ETH/USDT"),
        ),
        ('{"type":"analyzed_df","data":{"limit":0}}', Request("analyzed_df")),
        ('{"type":"analyzed_df","data":{"limit":3}}', Request("analyzed_df", limit=3)),
        (
            '{"type":"analyzed_df","data":{"limit":2.9}}',
            Request("analyzed_df", limit=2),
        ),
        (
            '{"type":"analyzed_df","data":{"limit":99999}}',
            Request("analyzed_df", limit=1500),
        ),
    ],
)
def test_it_reads_requests_as_freqtrade_does(text, request_):
    assert freqtrade.parse_request(text) == request_


@pytest.mark.parametrize(
    "text, message",
    [
        (b'{"type":"whitelist"}', "binary frames are not supported: send text JSON"),
        (None, "empty message"),
        ("{nope", "invalid JSON"),
        ('"whitelist"', "must be a JSON object, got str"),
        ('{"data":[]}', "request type must be a string, one of subscribe, whitelist"),
        ('{"type":"nonsense"}', "^Invalid request type: nonsense$"),
        ('{"type":"subscribe","data":"whitelist"}', "subscribe data must be a list"),
        (
            '{"type":"subscribe","data":["whitelist",1]}',
            "subscribe data must be a list",
        ),
        ('{"type":"analyzed_df","data":[3]}', "analyzed_df data must be an object"),
        ('{"type":"analyzed_df","data":{"pair":5}}', "must be a pair like BTC/USDT"),
        (
            '{"type":"analyzed_df","data":{"pair":"<script>x</script>/USDT"}}',
            'must be a pair like BTC/USDT .*got "<script>',
        ),
        ('{"type":"analyzed_df","data":{"pair":"../../etc/passwd"}}', "a pair like"),
        ('{"type":"analyzed_df","data":{"pair":"BTC/USDT\\n"}}', "a pair like"),
        ('{"type":"analyzed_df","data":{"pair":"A/B\'; DROP"}}', "a pair like"),
        ('{"type":"analyzed_df","data":{"limit":-1e300}}', "from 0 to 1500"),
        ("[" * 2000 + "]" * 2000, "invalid JSON .*depth"),
        ('{"type":"' + "x" * 100_000 + '"}', r"^Invalid request type: x{77}\.\.\.$"),
        ('{"type":"a\\nb"}', r"^Invalid request type: a\\nb$"),
        (
            '{"type":"analyzed_df","data":{"limit":-5}}',
            "^analyzed_df limit must be a number from 0 to 1500, got -5$",
        ),
        ('{"type":"analyzed_df","data":{"limit":"5"}}', 'from 0 to 1500, got "5"'),
        ('{"type":"analyzed_df","data":{"limit":true}}', "from 0 to 1500, got true"),
    ],
)
def test_it_explains_what_is_wrong_with_a_request(text, message):
    with pytest.raises(ProtocolError, match=message):
        freqtrade.parse_request(text)


def test_it_quotes_a_deeply_nested_value_without_recursing():
    """orjson encodes 254 levels; the error path must not raise past them."""
    nested = "[" * 1000 + "]" * 1000
    with pytest.raises(ProtocolError, match="a list too deep or too odd to quote"):
        freqtrade.parse_request('{"type":"subscribe","data":[' + nested + "]}")


def test_it_refuses_a_nan_limit():
    with pytest.raises(ProtocolError, match="limit must be a number"):
        freqtrade._limit(float("nan"))


def test_it_lists_freqtrades_17_message_types():
    assert len(MESSAGE_TYPES) == len(set(MESSAGE_TYPES)) == 17
    assert {"whitelist", "analyzed_df", "new_candle", "exception"} <= set(MESSAGE_TYPES)


### Publish messages


def make_publish(**changes) -> dict:
    frame = {
        "key": ["BTC/USDT", "5m", "spot"],
        "columns": ["date", "close"],
        "dtypes": ["M8", "<f8"],
        "rows": [[1000, 1.5], [2000, None]],
        "la": "2026-11-25T10:16:01+00:00",
        "full": True,
        "new_candle": False,
    }
    frame.update(changes)
    return {"type": "publish", "seq": 1, "data": {"whitelist": None, "frames": [frame]}}


def test_it_round_trips_a_publish_message():
    df = make_frame(4)
    frame = publish.publish_frame(KEY, df, LA, full=False, new_candle=True)
    text = publish.publish_message(7, [frame], whitelist=["BTC/USDT"])
    message = publish.parse_publish(text)
    assert message["seq"] == 7
    assert message["data"]["whitelist"] == ["BTC/USDT"]
    parsed = message["data"]["frames"][0]
    assert (parsed["full"], parsed["new_candle"], parsed["la"]) == (
        False,
        True,
        "2026-11-25T10:16:01.715292+00:00",
    )
    rows, dates = publish.frame_rows(parsed)
    assert dates == [1795601700000 + 300_000 * i for i in range(4)]
    doc = freqtrade.split_document(parsed["columns"], rows, 0)
    decoded = freqtrade.decode_rows(doc).frame()
    assert_frame_equal(decoded, df, check_exact=True)


def test_it_accepts_a_publish_with_only_a_whitelist():
    text = msgpack.packb({"type": "publish", "seq": 0, "data": {"whitelist": ["A/B"]}})
    message = publish.parse_publish(text)
    assert message["data"] == {"whitelist": ["A/B"], "frames": []}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"rows": [[1000, 1.5, 3]]}, "frame 0 row 0 has 3 values for 2 columns"),
        ({"rows": [[1000, 1.5], 5]}, "frame 0 row 1 has no values for 2 columns"),
        ({"columns": ["time", "close"]}, "frame 0 has no 'date' column"),
        ({"columns": ["date", "date"]}, "columns must be a list of distinct names"),
        ({"rows": [[1000.5, 1.5]]}, "row 0: date must be int epoch ms .*got 1000.5"),
        ({"rows": [[-1, 1.5]]}, r"row 0: date must be int epoch ms from 0 \(1970\)"),
        ({"rows": [[2**63, 1.5]]}, "to 9223372036854 .*got 9223372036854775808"),
        ({"rows": [[2000, 1.5], [1000, 1.5]]}, "dates must increase, 1000 follows"),
        ({"rows": [[2000, 1.5], [2000, 1.5]]}, "dates must increase, 2000 follows"),
        ({"key": ["BTC/USDT", "5m"]}, r"frame 0 key must be \[pair, timeframe"),
        ({"key": ["BTC/USDT", "5m", "margin"]}, 'candle type "margin" is not one of'),
        ({"key": ["BTC/USDT", "5x", "spot"]}, 'timeframe "5x" is not one like 5m'),
        ({"key": ["BTC/USDT", "5" * 500, "spot"]}, 'timeframe "5{76}\\.\\.\\. is'),
        (
            {"key": ["", "5m", "spot"]},
            'the pair must be a pair like BTC/USDT .*got ""$',
        ),
        ({"key": ["<b>x</b>/USDT", "5m", "spot"]}, "the pair must be a pair like"),
        ({"key": ["../x/USDT", "5m", "spot"]}, "the pair must be a pair like"),
        ({"key": ["BTC/USDT; DROP TABLE", "5m", "spot"]}, "must be a pair like"),
        ({"key": ["B" * 60 + "/USDT", "5m", "spot"]}, "at most 64 characters"),
        ({"columns": ["date"] + [f"c{i}" for i in range(3000)]}, "at most 2048"),
        ({"columns": ["date", "c" * 300]}, "each name at most 256 characters"),
        ({"la": "0001-01-01T00:00:00+05:00"}, "out of range once taken to UTC"),
        ({"la": "x" * 10_000}, 'got "x{76}\\.\\.\\.$'),
        ({"la": "soon"}, "frame 0 la must be an RFC 3339 datetime"),
        ({"full": 1}, "frame 0 full must be true or false, got 1"),
        ({"new_candle": None}, "new_candle must be true or false"),
    ],
)
def test_it_explains_what_is_wrong_with_a_frame(changes, message):
    with pytest.raises(ProtocolError, match=message):
        publish.parse_publish(msgpack.packb(make_publish(**changes)))


def test_it_refuses_a_whitelist_of_anything_but_pairs():
    message = make_publish()
    message["data"]["whitelist"] = ["BTC/USDT", "<img src=x>/USDT"]
    with pytest.raises(ProtocolError, match="whitelist item 1 must be a pair like"):
        publish.parse_publish(msgpack.packb(message))


@pytest.mark.parametrize(
    "data, error",
    [
        (b"\x91" * 5000 + b"\xc0", r"invalid msgpack \(StackError\)"),
        (b"\x81\x90\x01", "invalid msgpack .*unhashable"),
        (b"\xdd\xff\xff\xff\xff", "invalid msgpack .*exceeds max_array_len"),
        (b"\xc1", r"invalid msgpack \(FormatError\)"),
        (msgpack.packb({"type": "publish"}) + b"\x00", "invalid msgpack .*extra data"),
    ],
)
def test_it_refuses_hostile_msgpack_in_words(data, error):
    with pytest.raises(ProtocolError, match=error):
        publish.parse_publish(data)


@pytest.mark.parametrize(
    "message, complaint",
    [
        ({"type": "ack", "seq": 1}, 'expected type "publish", got "ack"'),
        ({"type": "publish", "seq": True, "data": {}}, "seq must be an int >= 0"),
        ({"type": "publish", "seq": -1, "data": {}}, "seq must be an int >= 0"),
        ({"type": "publish", "seq": 1, "data": []}, "publish data must be"),
        ({"type": "publish", "seq": 1, "data": {"whitelist": "A"}}, "whitelist must"),
        (
            {"type": "publish", "seq": 1, "data": {"frames": {}}},
            "frames must be a list",
        ),
    ],
)
def test_it_refuses_a_malformed_publish_envelope(message, complaint):
    with pytest.raises(ProtocolError, match=complaint):
        publish.parse_publish(msgpack.packb(message))


def test_it_writes_and_reads_the_hubs_replies():
    assert publish.ack_message(3) == '{"type":"ack","seq":3}'
    error = publish.error_message(None, "bad frame")
    assert error == '{"type":"error","seq":null,"data":"bad frame"}'
    assert publish.parse_hub_reply(publish.ack_message(3)) == {
        "type": "ack",
        "seq": 3,
    }
    assert publish.parse_hub_reply(error)["data"] == "bad frame"
    with pytest.raises(ProtocolError, match="expected an ack, an error or an assign"):
        publish.parse_hub_reply('{"type":"ack"}')


def test_it_encodes_missing_values_of_object_columns_as_null():
    column = [np.timedelta64("NaT"), np.datetime64("NaT"), pd.NA, None, float("nan")]
    df = pd.DataFrame({"o": pd.Series(column, dtype=object)})
    assert json_rows(df)[1] == [[None]] * 5
