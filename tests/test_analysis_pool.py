"""The producer worker's analysis on N processes (``--workers N``): each pair pinned
to one process, the same rows as the in-process analysis, and a killed process
replaced without losing a candle."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from controlplane.lib.contracts import ProducerDefinition
from producers.pool import pin
from producers.worker import Analysis

PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT")
FIVE_MINUTES = 300.0


class Clock:
    """A wall clock the test moves; the source's candles follow it."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def definition(pairs: tuple[str, ...] = PAIRS) -> ProducerDefinition:
    return ProducerDefinition(
        name="pool",
        timeframe="5m",
        candle_type="spot",
        pairs=pairs,
        strategy="producers.strategies.sample.SampleStrategy",
        source="synthetic",
        source_options={"seed": 7},
        history=300,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def in_process(clock):
    analysis = Analysis(definition(), workers=1, clock=clock)
    yield analysis
    analysis.close()


@pytest.fixture
def pooled(clock):
    analysis = Analysis(definition(), workers=2, clock=clock)
    yield analysis
    analysis.close()


def candles(clock: Clock, *analyses: Analysis) -> list[dict[str, pd.DataFrame]]:
    """Close one more candle and advance every analysis."""
    clock.now += FIVE_MINUTES

    async def advance():
        return [await analysis.advance() for analysis in analyses]

    return asyncio.run(advance())


def load(*analyses: Analysis) -> None:
    async def run():
        for analysis in analyses:
            await analysis.load_pairs(analysis.pairs)

    asyncio.run(run())


def test_it_pins_pairs_evenly_in_the_definition_s_order():
    assert pin(["a", "b", "c", "d", "e"], 2, {}) == {
        "a": 0,
        "b": 1,
        "c": 0,
        "d": 1,
        "e": 0,
    }


def test_it_keeps_a_pair_on_its_process_when_other_pairs_come_and_go():
    before = pin(["a", "b", "c", "d", "e"], 2, {})
    after = pin(["a", "c", "d", "e", "f", "g"], 2, before)
    assert {p: after[p] for p in ("a", "c", "d", "e")} == {
        p: before[p] for p in ("a", "c", "d", "e")
    }
    # b left process 1, which now has a, c, e against d: the new ones even it up.
    assert (after["f"], after["g"]) == (1, 1)


def test_it_analyses_on_the_pool_exactly_what_it_analyses_in_process(
    clock, in_process, pooled
):
    load(in_process, pooled)
    for pair in PAIRS:
        assert_frame_equal(
            pooled.analysed[pair], in_process.analysed[pair], check_exact=True
        )
    for _ in range(3):
        alone, parallel = candles(clock, in_process, pooled)
        assert list(parallel) == list(alone) == list(PAIRS)
        for pair in PAIRS:
            assert len(alone[pair]) == 1
            assert_frame_equal(parallel[pair], alone[pair], check_exact=True)
    for pair in PAIRS:
        assert_frame_equal(
            pooled.analysed[pair], in_process.analysed[pair], check_exact=True
        )


def test_it_reports_each_process_with_its_pairs_and_analysis_time(clock, pooled):
    load(pooled)
    candles(clock, pooled)
    processes = pooled.processes()
    assert [p["pairs"] for p in processes] == [
        ["BTC/USDT", "SOL/USDT", "ADA/USDT"],
        ["ETH/USDT", "XRP/USDT"],
    ]
    assert all(p["state"] == "running" and p["pid"] != os.getpid() for p in processes)
    assert all(p["seconds"] is not None and p["seconds"] > 0 for p in processes)
    assert pooled.tick_seconds is not None


def test_it_replaces_a_killed_process_and_loses_no_candle(
    clock, in_process, pooled, caplog
):
    load(in_process, pooled)
    candles(clock, in_process, pooled)
    victim = pooled.processes()[1]
    os.kill(victim["pid"], signal.SIGKILL)
    with caplog.at_level(logging.INFO, "producers.pool"):
        alone, parallel = candles(clock, in_process, pooled)
    assert list(parallel) == list(PAIRS)
    for pair in PAIRS:
        assert_frame_equal(parallel[pair], alone[pair], check_exact=True)
        assert_frame_equal(
            pooled.analysed[pair], in_process.analysed[pair], check_exact=True
        )
    replaced = pooled.processes()[1]
    assert replaced["restarts"] == 1 and replaced["pid"] not in (None, victim["pid"])
    assert "analysis process 1 (2 pairs) is gone: killed by signal 9 (SIGKILL)" in (
        caplog.text
    )
    # And it goes on analysing the next candle as before.
    alone, parallel = candles(clock, in_process, pooled)
    for pair in PAIRS:
        assert_frame_equal(parallel[pair], alone[pair], check_exact=True)


def test_it_follows_pairs_added_and_removed_without_moving_the_others(clock, pooled):
    load(pooled)
    first = {p["index"]: p["pairs"] for p in pooled.processes()}
    pooled.definition = definition(("BTC/USDT", "ETH/USDT", "SOL/USDT", "DOT/USDT"))
    pooled.forget({"XRP/USDT", "ADA/USDT"})
    asyncio.run(pooled.load_pairs(["DOT/USDT"]))
    now = {p["index"]: p["pairs"] for p in pooled.processes()}
    assert first == {
        0: ["BTC/USDT", "SOL/USDT", "ADA/USDT"],
        1: ["ETH/USDT", "XRP/USDT"],
    }
    assert now == {0: ["BTC/USDT", "SOL/USDT"], 1: ["ETH/USDT", "DOT/USDT"]}
    fresh = candles(clock, pooled)[0]
    assert list(fresh) == ["BTC/USDT", "ETH/USDT", "SOL/USDT", "DOT/USDT"]


def text_chunks(frame: pd.DataFrame) -> dict[str, int]:
    """How many Arrow chunks each text column is made of."""
    return {
        name: frame[name].array.__arrow_array__().num_chunks
        for name in frame.columns
        if isinstance(frame[name].array, pd.arrays.ArrowExtensionArray)
    }


def test_it_keeps_each_text_column_in_one_piece_as_candles_append(clock, in_process):
    """Appended as one more Arrow chunk per candle, each a slice holding the whole
    window the strategy analysed, the tags grew the worker without bound."""
    asyncio.run(in_process.load_pairs(in_process.pairs))
    for _ in range(30):
        candles(clock, in_process)
    for pair in PAIRS:
        frame = in_process.analysed[pair]
        assert text_chunks(frame) == {"enter_tag": 1, "exit_tag": 1}, pair
        assert len(frame) == 300
