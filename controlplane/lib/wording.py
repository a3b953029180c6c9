"""Durations, sizes and times in words, for the status page and its reasons.

Pure module: the status page's JavaScript (static/controlplane/status.js) formats
the same way, so the server's first paint and the live updates read alike.
"""

from __future__ import annotations

from datetime import UTC, datetime


def duration(seconds: float) -> str:
    """``42 s``, ``3 min``, ``2 h 5 min``, ``3 d 4 h``: two units at most."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {seconds} s" if seconds and minutes < 5 else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} d" + (f" {hours} h" if hours else "")


def interval_words(seconds: float) -> str:
    """How often a candle is due: ``every 5 s``, ``every 5 min``."""
    if seconds < 60 and seconds != int(seconds):
        return f"every {seconds:g} s"
    return f"every {duration(seconds)}"


def size(count: float) -> str:
    """Bytes in binary units: ``512 B``, ``12.3 KiB``, ``4.0 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def candle_time(iso: str | None) -> str:
    """A candle's open time as the page shows it: ``2026-11-25 10:35``."""
    return iso[:16].replace("T", " ") if iso else "—"


def clock(epoch: float | None) -> str:
    """An instant as ``10:35:02`` UTC (the page says UTC once, in its header)."""
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S")


def iso_ms(ms: int | float | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def parse_iso(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
