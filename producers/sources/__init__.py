"""Candle sources the producer worker reads: a synthetic random walk and file replay.

One module per source (synthetic, files), the registry that lists them (registry),
and what they share (base, options). The names below are imported lazily, so that
importing the registry (as producers.models does) loads no pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from producers.sources.registry import (
    SOURCE_KINDS,
    SOURCES,
    SourceKind,
    build_source,
    options_help,
    source_choices,
)

if TYPE_CHECKING:
    from producers.sources.base import CandleSource, Clock, SourceError
    from producers.sources.files import (
        FileSource,
        candle_file_paths,
        pair_to_filename,
        read_candle_file,
    )
    from producers.sources.synthetic import SyntheticSource

_LAZY = {
    "CandleSource": "base",
    "Clock": "base",
    "SourceError": "base",
    "SyntheticSource": "synthetic",
    "FileSource": "files",
    "candle_file_paths": "files",
    "pair_to_filename": "files",
    "read_candle_file": "files",
}

__all__ = [
    "SOURCES",
    "SOURCE_KINDS",
    "CandleSource",
    "Clock",
    "FileSource",
    "SourceError",
    "SourceKind",
    "SyntheticSource",
    "build_source",
    "candle_file_paths",
    "options_help",
    "pair_to_filename",
    "read_candle_file",
    "source_choices",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
