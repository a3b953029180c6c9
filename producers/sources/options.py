"""Checking a source's ``source_options`` (JSON typed into the admin)."""

from __future__ import annotations

import math
from typing import Any

from producers.sources.base import SourceError


class OptionReader:
    """Checks a source's options (JSON from the admin) and names the valid ones."""

    def __init__(self, kind: str, options: object, valid: tuple[str, ...]) -> None:
        self.kind = kind
        if not isinstance(options, dict):
            raise SourceError(f"{kind} source options must be a JSON object.")
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise SourceError(
                f"Unknown {kind} source option(s) {', '.join(unknown)}; "
                f"valid options are {', '.join(valid)}."
            )
        self.options = options

    def number(
        self, name: str, default: Any, *, integer: bool = False, positive: bool = True
    ) -> Any:
        value = self.options.get(name, default)
        if value is None:
            return None
        kinds = (int,) if integer else (int, float)
        wrong = isinstance(value, bool) or not isinstance(value, kinds)
        if wrong or (positive and not value > 0) or not math.isfinite(value):
            need = "a whole number" if integer else "a number"
            raise SourceError(
                f"Option {name} of the {self.kind} source must be {need}"
                f"{' above 0' if positive else ''}, not {value!r}."
            )
        return value
