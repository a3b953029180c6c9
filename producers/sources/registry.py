"""The registry of candle sources: what producers.models and the admin offer.

Adding a candle source is one module (a ``CandleSource`` and a ``build``) and one
entry here. Entries name their module instead of importing it: producers.models
imports this registry, and the hub process never loads pandas.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controlplane.lib.candles import CANDLE_TYPES, timeframe_seconds

if TYPE_CHECKING:
    from producers.sources.base import CandleSource, Clock


@dataclass(frozen=True)
class SourceKind:
    name: str  # Producer.source
    label: str  # in the admin's choices
    options: tuple[str, ...]  # the valid keys of Producer.source_options
    example: str  # help for source_options: an example, in JSON
    module: str  # has build(timeframe, options, pairs, candle_type, clock)

    @property
    def help(self) -> str:
        return f"{self.name.capitalize()}: {self.example}."


SOURCES = {
    kind.name: kind
    for kind in (
        SourceKind(
            "synthetic",
            "Synthetic random walk",
            ("seed", "seconds_per_candle", "start_price", "volatility", "skip_every"),
            '{"seed": 1, "seconds_per_candle": 5} (fast clock for demos)',
            "producers.sources.synthetic",
        ),
        SourceKind(
            "files",
            "FreqTrade data files (download-data)",
            ("datadir", "seconds_per_candle", "start"),
            '{"datadir": "/path/to/user_data/data/binance"}',
            "producers.sources.files",
        ),
    )
}
SOURCE_KINDS = tuple(SOURCES)


def source_choices() -> list[tuple[str, str]]:
    return [(kind.name, kind.label) for kind in SOURCES.values()]


def options_help() -> str:
    return " ".join(kind.help for kind in SOURCES.values())


def build_source(
    kind: str,
    timeframe: str,
    options: dict[str, Any],
    pairs: list[str],
    candle_type: str = "spot",
    *,
    clock: Clock = time.time,
) -> CandleSource:
    """The source a producer's ``source`` and ``source_options`` describe.

    Raises:
        SourceError: unknown kind, timeframe, candle type or option, a bad option
            value, or (files) a pair without a readable file.
    """
    from producers.sources.base import SourceError
    from producers.sources.options import OptionReader

    try:
        timeframe_seconds(timeframe)
    except ValueError as exc:
        raise SourceError(str(exc)) from exc
    if candle_type not in CANDLE_TYPES:
        raise SourceError(
            f"Unknown candle type {candle_type!r}; "
            f"use one of {', '.join(CANDLE_TYPES)}."
        )
    if kind not in SOURCES:
        raise SourceError(
            f"Unknown candle source {kind!r}; use one of {', '.join(SOURCE_KINDS)}."
        )
    entry = SOURCES[kind]
    reader = OptionReader(kind, {} if options is None else options, entry.options)
    module = importlib.import_module(entry.module)
    return module.build(timeframe, reader, list(pairs), candle_type, clock)
