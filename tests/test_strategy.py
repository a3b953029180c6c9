"""The strategy interface: analyze's steps and defaults, its checks, loading by path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from producers.sources import SyntheticSource
from producers.strategies.sample import SampleStrategy
from producers.strategy import IStrategy, StrategyError, load_strategy

META = {"pair": "BTC/USDT", "timeframe": "5m", "candle_type": "spot"}
SIGNALS = ["enter_long", "enter_short", "exit_long", "exit_short"]


def make_candles(rows: int = 50) -> pd.DataFrame:
    dates = pd.date_range("2026-01-01", periods=rows, freq="5min", tz="UTC")
    close = 100 + np.sin(np.arange(rows) / 3)
    return pd.DataFrame(
        {
            "date": dates.as_unit("ms"),
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume": np.full(rows, 10.0),
        }
    )


def synthetic_candles(pair: str = "BTC/USDT", rows: int = 1500) -> pd.DataFrame:
    source = SyntheticSource("5m", seed=1, clock=lambda: 1_800_000_000.0)
    return source.history(pair, rows)


class Recorder(IStrategy):
    """Notes what each step saw, and marks rows 3 and 5."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, list[str]]] = []

    def populate_indicators(self, dataframe, metadata):
        self.seen.append(("indicators", list(dataframe.columns)))
        dataframe["double"] = dataframe["close"] * 2
        return dataframe

    def populate_entry_trend(self, dataframe, metadata):
        self.seen.append(("entry", list(dataframe.columns)))
        assert (dataframe["enter_tag"] == "").all()
        dataframe.loc[dataframe.index == 3, "enter_long"] = 1
        dataframe.loc[dataframe.index == 3, "enter_tag"] = "three"
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        self.seen.append(("exit", list(dataframe.columns)))
        dataframe.loc[dataframe.index == 5, "exit_long"] = 1
        return dataframe


def test_it_runs_the_steps_in_freqtrade_order_with_its_defaults() -> None:
    strategy = Recorder()
    result = strategy.analyze(make_candles(), META)
    steps = [name for name, _ in strategy.seen]
    assert steps == ["indicators", "entry", "exit"]
    entry_columns, exit_columns = strategy.seen[1][1], strategy.seen[2][1]
    assert "double" in entry_columns and "enter_tag" in entry_columns
    assert "exit_tag" not in entry_columns
    assert {"enter_long", "exit_tag"} <= set(exit_columns)
    assert result["enter_tag"].tolist()[2:5] == ["", "three", ""]
    assert (result["exit_tag"] == "").all()


def test_it_adds_all_four_signal_columns_as_float() -> None:
    result = Recorder().analyze(make_candles(), META)
    for column in SIGNALS:
        assert result[column].dtype == "float64"
    assert result["enter_long"].iloc[3] == 1.0
    assert np.isnan(result["enter_long"].iloc[4])
    assert result["exit_long"].iloc[5] == 1.0
    assert result["enter_short"].isna().all() and result["exit_short"].isna().all()


def test_it_keeps_the_candles_and_leaves_the_input_alone() -> None:
    candles = make_candles()
    before = candles.copy()
    result = Recorder().analyze(candles, META)
    pd.testing.assert_frame_equal(candles, before)
    pd.testing.assert_frame_equal(result[list(before.columns)], before)


def test_it_renames_freqtrade_legacy_buy_and_sell_columns() -> None:
    class Legacy(IStrategy):
        def populate_entry_trend(self, dataframe, metadata):
            dataframe["buy"] = 0
            dataframe.loc[dataframe.index == 1, ["buy", "buy_tag"]] = [1, "old"]
            return dataframe.drop(columns=["enter_tag"])

        def populate_exit_trend(self, dataframe, metadata):
            dataframe["sell"] = 0
            return dataframe

    result = Legacy().analyze(make_candles(), META)
    assert "buy" not in result.columns and "sell" not in result.columns
    assert result["enter_long"].iloc[1] == 1
    assert result["enter_tag"].iloc[1] == "old"
    assert (result["exit_long"] == 0).all()


def test_it_passes_metadata_to_every_step() -> None:
    seen: list[dict] = []

    class Spy(IStrategy):
        def populate_indicators(self, dataframe, metadata):
            seen.append(metadata)
            return dataframe

    Spy().analyze(make_candles(), META)
    assert seen == [META]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda df: None, "returned NoneType, not a DataFrame"),
        (lambda df: df.iloc[:-1], "changed the row count from 50 to 49"),
        (lambda df: df.drop(columns=["volume"]), "dropped the column"),
        (lambda df: df.assign(date=df["date"] + pd.Timedelta("1min")), "'date'"),
        (lambda df: df.iloc[::-1], "'date'"),
    ],
)
def test_it_refuses_a_step_that_breaks_the_frame(change, message) -> None:
    class Broken(IStrategy):
        def populate_entry_trend(self, dataframe, metadata):
            return change(dataframe)

    with pytest.raises(StrategyError, match=message) as info:
        Broken().analyze(make_candles(), META)
    assert "Broken.populate_entry_trend()" in str(info.value)


def test_it_turns_an_exception_in_a_step_into_a_strategy_error() -> None:
    class Crashing(IStrategy):
        def populate_exit_trend(self, dataframe, metadata):
            return dataframe["no_such_column"]

    with pytest.raises(StrategyError) as info:
        Crashing().analyze(make_candles(), META)
    assert "Crashing.populate_exit_trend() failed: KeyError" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)


def test_it_refuses_to_analyse_no_candles() -> None:
    with pytest.raises(StrategyError, match="got no candles"):
        SampleStrategy().analyze(make_candles().iloc[:0], META)


@pytest.mark.parametrize("rows", [1, 5, 40])
def test_it_runs_the_sample_on_short_histories(rows: int) -> None:
    result = SampleStrategy().analyze(synthetic_candles(rows=rows), META)
    assert len(result) == rows
    assert result["rsi"].notna().sum() == max(0, rows - 14)


def test_it_loads_a_strategy_by_dotted_path() -> None:
    strategy = load_strategy("producers.strategies.sample.SampleStrategy")
    assert isinstance(strategy, SampleStrategy)
    configured = load_strategy(
        "producers.strategies.sample.SampleStrategy", {"stake": 1}
    )
    assert configured.config == {"stake": 1}


@pytest.fixture
def strategy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path holding small strategy modules written by each test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    files = {
        "needs_dep.py": "import surely_not_installed_pkg\n",
        "broken_syntax.py": "def oops(:\n",
        "odd.py": """
            from producers.strategy import IStrategy
            class NotAStrategy:
                pass
            class Fussy(IStrategy):
                def __init__(self):
                    raise RuntimeError("needs an API key")
            class Fine(IStrategy):
                pass
        """,
    }
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("SampleStrategy", "not a dotted path"),
        ("nowhere_pkg.mod.Cls", "no module named 'nowhere_pkg'"),
        ("needs_dep.Cls", "imports 'surely_not_installed_pkg', which is not installed"),
        ("broken_syntax.Cls", "Cannot import module broken_syntax.*SyntaxError"),
        ("odd.Missing", "odd has no class Missing. Strategies it defines: Fine, Fussy"),
        ("odd.NotAStrategy", "derived from producers.strategy.IStrategy"),
        ("odd.Fussy", "Could not create odd.Fussy: RuntimeError: needs an API key"),
    ],
)
def test_it_explains_why_a_strategy_cannot_be_loaded(
    strategy_dir: Path, path: str, message: str
) -> None:
    with pytest.raises(StrategyError, match=message):
        load_strategy(path)


def test_it_gives_the_sample_strategy_fifteen_float_indicators() -> None:
    candles = synthetic_candles()
    result = SampleStrategy().analyze(candles, META)
    added = [c for c in result.columns if c not in candles.columns]
    indicators = [c for c in added if c not in SIGNALS + ["enter_tag", "exit_tag"]]
    assert 14 <= len(indicators) <= 16
    assert all(result[c].dtype == "float64" for c in indicators)
    startup = SampleStrategy.startup_candle_count
    assert result[indicators].iloc[startup:].notna().all().all()
    assert result[indicators].iloc[startup - 1].isna().any()


def test_it_finds_entries_and_exits_on_synthetic_candles() -> None:
    for pair in ("BTC/USDT", "ETH/USDT", "SOL/USDT"):
        result = SampleStrategy().analyze(synthetic_candles(pair), META)
        entries = result[result["enter_long"] == 1]
        exits = result[result["exit_long"] == 1]
        assert len(entries) >= 3 and len(exits) >= 3, pair
        assert (entries["enter_tag"] == "rsi_cross").all()
        assert (exits["exit_tag"] == "rsi_high").all()
        assert (entries["rsi"] > 30).all() and (exits["rsi"] < 70).all()
        before = result["rsi"].shift(1)
        assert (before[entries.index] <= 30).all()
        assert (entries["close"] > entries["bb_lower"]).all()
        assert set(result["enter_long"].dropna()) == {1.0}
