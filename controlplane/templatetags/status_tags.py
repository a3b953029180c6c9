"""Filters for the status page's first paint; static/controlplane/status.js formats
the live updates the same way (controlplane.lib.wording holds the rules).

Every filter shows "—" for a missing value: the page's row templates are rendered
with empty rows for the script to fill.
"""

from __future__ import annotations

from typing import TypeGuard

from django import template

from controlplane.lib import wording

register = template.Library()
BLANK = "—"


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


@register.filter
def candle(iso: str | None) -> str:
    return wording.candle_time(iso) if isinstance(iso, str) and iso else BLANK


@register.filter
def ago(epoch: float | None, now: float) -> str:
    if not _number(epoch):
        return BLANK
    return f"{wording.duration(now - epoch)} ago"


@register.filter
def clock(epoch: float | None) -> str:
    return wording.clock(epoch) if _number(epoch) else BLANK


@register.filter
def size(count: int | None) -> str:
    return wording.size(count) if _number(count) else BLANK


@register.filter
def every(seconds: float | None) -> str:
    return wording.interval_words(seconds) if _number(seconds) else BLANK


@register.filter
def count(value: int | None) -> str:
    return f"{value:,}".replace(",", " ") if _number(value) else BLANK


@register.filter
def lag(value: int | None) -> str:
    if not _number(value):
        return BLANK
    return "none" if value == 0 else f"{value} candle{'s' if value > 1 else ''}"


@register.filter
def link(connected: bool | None) -> str:
    words: dict[bool | None, str] = {True: "connected", False: "disconnected"}
    return words.get(connected, BLANK)


@register.filter
def orblank(value: object) -> str:
    return BLANK if value in (None, "") else str(value)


@register.filter
def worker(address: str | None) -> str:
    return address if isinstance(address, str) and address else "none connected"


@register.filter
def since(epoch: float | None, now: float) -> str:
    """`, connected 5 min ago`; nothing without a connection."""
    if not _number(epoch):
        return ""
    return f", connected {wording.duration(now - epoch)} ago"
