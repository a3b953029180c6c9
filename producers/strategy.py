"""The producer's strategy interface: FreqTrade's IStrategy shape, minimal.

Pure module. The producer worker loads a strategy class by dotted path and calls
``analyze`` on each pair's candles; ``analyze`` runs the steps of FreqTrade's
``analyze_ticker`` in its order and with its column defaults, then checks the result.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from pandas import DataFrame

OHLCV_COLUMNS = ("date", "open", "high", "low", "close", "volume")
SIGNAL_COLUMNS = ("enter_long", "enter_short", "exit_long", "exit_short")


class StrategyError(Exception):
    """A strategy could not be loaded, or returned an unusable dataframe."""


class IStrategy:
    """Base class for producer strategies, shaped like FreqTrade's ``IStrategy``.

    Subclasses override the three ``populate_*`` methods; ``analyze`` is not meant to
    be overridden. Strategies set signals with ``dataframe.loc[cond, "enter_long"] = 1``
    and tags with ``dataframe.loc[cond, "enter_tag"] = "why"``.
    """

    timeframe: str = "5m"
    startup_candle_count: int = 0
    process_only_new_candles: bool = True
    # A consumer strategy's DataProvider (FreqTrade's name), set by the consumer worker.
    dp: Any = None

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = dict(config or {})

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe

    def analyze(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """Indicators, then entry, then exit signals, on a copy of ``dataframe``.

        Args:
            dataframe: OHLCV candles, one row per candle, oldest first.
            metadata: ``{"pair": ..., "timeframe": ..., "candle_type": ...}``.

        Raises:
            StrategyError: there are no candles, a ``populate_*`` method raised, or
                it returned something that is not a DataFrame or that changed the
                row count, the dates or the OHLCV columns.
        """
        check = _ResultCheck(dataframe, type(self).__name__)
        df = check.run(self.populate_indicators, dataframe.copy(), metadata)
        # FreqTrade fills each tag column with "" before the step that sets it.
        df["enter_tag"] = ""
        df = check.run(self.populate_entry_trend, df, metadata)
        df = _rename_legacy(df, {"buy": "enter_long", "buy_tag": "enter_tag"})
        df["exit_tag"] = ""
        df = check.run(self.populate_exit_trend, df, metadata)
        df = _rename_legacy(df, {"sell": "exit_long"})
        return _ensure_signal_columns(df)


def _rename_legacy(df: DataFrame, names: dict[str, str]) -> DataFrame:
    """FreqTrade's old names (buy, sell) renamed, unless the new column exists."""
    first_new = next(iter(names.values()))
    if first_new in df.columns:
        return df
    return df.rename(columns=names)


def _ensure_signal_columns(df: DataFrame) -> DataFrame:
    # FreqTrade 2026.9 leaves an unset signal column out; consumers of our feed can
    # rely on all four being there (NaN = no signal, as with .loc[cond, col] = 1).
    for column in SIGNAL_COLUMNS:
        if column not in df.columns:
            df[column] = float("nan")
    return df


class _ResultCheck:
    """Validates what each populate_* step returned against the input candles."""

    def __init__(self, original: DataFrame, strategy: str) -> None:
        if not isinstance(original, DataFrame) or "date" not in original.columns:
            raise StrategyError("analyze() needs a DataFrame with a 'date' column")
        if original.empty:
            # FreqTrade skips empty frames too; pandas' .loc idioms fail on them.
            raise StrategyError("analyze() got no candles: there is nothing to analyse")
        self.rows = len(original)
        self.dates = original["date"].reset_index(drop=True)
        self.columns = [c for c in OHLCV_COLUMNS if c in original.columns]
        self.strategy = strategy

    def run(
        self, step: Callable[[DataFrame, dict], object], df: DataFrame, metadata: dict
    ) -> DataFrame:
        where = f"{self.strategy}.{step.__name__}()"
        try:
            result = step(df, metadata)
        except Exception as exc:
            raise StrategyError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
        return self.check(result, where)

    def check(self, result: object, where: str) -> DataFrame:
        if not isinstance(result, DataFrame):
            raise StrategyError(
                f"{where} returned {type(result).__name__}, not a DataFrame: "
                "end it with 'return dataframe'."
            )
        if len(result) != self.rows:
            raise StrategyError(
                f"{where} changed the row count from {self.rows} to {len(result)}: "
                "add columns, never drop, filter or append rows."
            )
        missing = [c for c in self.columns if c not in result.columns]
        if missing:
            raise StrategyError(f"{where} dropped the column(s) {', '.join(missing)}.")
        if not result["date"].reset_index(drop=True).equals(self.dates):
            raise StrategyError(
                f"{where} changed the 'date' column: keep the candles' dates and order."
            )
        return result


def load_strategy(path: str, config: dict[str, Any] | None = None) -> IStrategy:
    """Import ``package.module.ClassName`` and return an instance of it.

    Raises:
        StrategyError: the module cannot be imported (the message says why), the
            class is missing or is not an ``IStrategy``, or its constructor failed.
    """
    module_name, _, class_name = (path or "").rpartition(".")
    if not module_name or not class_name:
        raise StrategyError(
            f"Strategy {path!r} is not a dotted path: write it as package.module."
            "ClassName, for example producers.strategies.sample.SampleStrategy."
        )
    module = _import_strategy_module(module_name, path)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise StrategyError(
            f"Module {module_name} has no class {class_name}. "
            f"Strategies it defines: {_strategies_in(module) or 'none'}."
        )
    if not (inspect.isclass(cls) and issubclass(cls, IStrategy)):
        raise StrategyError(
            f"{path} is not a strategy: it must be a class derived from "
            "producers.strategy.IStrategy."
        )
    try:
        return cls(config) if config is not None else cls()
    except Exception as exc:
        raise StrategyError(
            f"Could not create {path}: {type(exc).__name__}: {exc}"
        ) from exc


def _import_strategy_module(module_name: str, path: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            why = f"there is no module named {exc.name!r} on the Python path"
        else:
            why = f"it imports {exc.name!r}, which is not installed"
        raise StrategyError(
            f"Cannot import module {module_name} for strategy {path}: {why}."
        ) from exc
    except Exception as exc:
        raise StrategyError(
            f"Cannot import module {module_name} for strategy {path}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _strategies_in(module: Any) -> str:
    names = [
        name
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, IStrategy)
        and value is not IStrategy
    ]
    return ", ".join(sorted(names))
