"""The chart's data (controlplane.chart): candles, indicators by scale, markers."""

from __future__ import annotations

import pytest

from controlplane.chart import chart_data, decode_rows

COLUMNS = [
    "date",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "ema_fast",
    "rsi",
    "enter_long",
    "enter_tag",
    "exit_long",
    "exit_tag",
]
MINUTE = 60_000


def rows() -> list[list]:
    return [
        [0, 100.0, 101.0, 99.0, 100.5, 10.0, 100.2, 55.0, None, None, None, None],
        [
            MINUTE,
            100.5,
            102.0,
            100.0,
            101.5,
            12.0,
            100.9,
            61.0,
            1,
            "rsi_cross",
            None,
            None,
        ],
        [
            2 * MINUTE,
            101.5,
            101.6,
            98.0,
            98.5,
            30.0,
            None,
            35.0,
            None,
            None,
            1,
            "rsi_high",
        ],
    ]


def test_it_turns_rows_into_candles_in_seconds():
    data = chart_data(COLUMNS, rows())
    assert data["candles"] == [
        (0, 100.0, 101.0, 99.0, 100.5),
        (60, 100.5, 102.0, 100.0, 101.5),
        (120, 101.5, 101.6, 98.0, 98.5),
    ]
    assert data["volume"] == [(0, 10.0), (60, 12.0), (120, 30.0)]


def test_it_draws_price_like_indicators_over_the_candles_and_others_below():
    data = chart_data(COLUMNS, rows())
    assert data["overlays"] == {"ema_fast": [(0, 100.2), (60, 100.9)]}, "nulls skipped"
    assert data["oscillators"] == {"rsi": [(0, 55.0), (60, 61.0), (120, 35.0)]}


def test_it_marks_entries_and_exits_with_their_tags():
    assert chart_data(COLUMNS, rows())["markers"] == [
        {"time": 60, "kind": "enter_long", "text": "rsi_cross"},
        {"time": 120, "kind": "exit_long", "text": "rsi_high"},
    ]


def test_it_skips_rows_without_prices():
    data = chart_data(
        COLUMNS,
        [
            *rows(),
            [
                3 * MINUTE,
                None,
                None,
                None,
                None,
                0.0,
                None,
                None,
                None,
                None,
                None,
                None,
            ],
        ],
    )
    assert len(data["candles"]) == 3


def test_it_says_what_is_missing_for_a_frame_without_prices():
    with pytest.raises(ValueError, match="no date/open/high/low/close columns"):
        chart_data(["date", "rsi"], [[0, 50.0]])


def test_it_decodes_the_store_s_rows_in_one_parse():
    assert decode_rows([b"[1,2.5,null]", b'[2,3.5,"x"]']) == [
        [1, 2.5, None],
        [2, 3.5, "x"],
    ]
