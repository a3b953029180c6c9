"""What producer and consumer workers share to talk to the hub over HTTP.

Pure module (no Django): workers run on other hosts and import no ORM. A refused
key is fatal (retrying cannot help); anything else is retried with backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from controlplane.lib.backoff import Backoff

logger = logging.getLogger(__name__)

HTTP_TIMEOUT = 10.0
T = TypeVar("T")


class FatalError(Exception):
    """Retrying cannot help: a refused key, an unknown name, a definition that
    cannot run. The worker logs it and exits with status 2."""


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True when stop was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0))
    except TimeoutError:
        return False
    return True


def call_api(
    url: str, key: str, body: bytes | None = None, *, who: str, key_name: str
) -> bytes:
    """GET (or POST ``body`` as JSON) with ``key`` as a bearer credential.

    Raises:
        FatalError: the key was refused (401/403).
        OSError: anything else (unreachable, 404, 5xx), with the server's words.
    """
    headers = {"Authorization": f"Bearer {key}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        detail = error_detail(exc)
        if exc.code in (401, 403):
            raise FatalError(
                f"{who} refused the {key_name} ({exc.code}): {detail}"
            ) from None
        if exc.code == 404:
            detail += "; is CANDLECAST_HUB_URL the address of a candlecast hub?"
        raise OSError(f"{who} answered {exc.code}: {detail}") from None


def error_detail(exc: urllib.error.HTTPError) -> str:
    """The hub's JSON {"error": ...} message, or the start of whatever came back."""
    text = exc.read().decode(errors="replace")[:300]
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return text.strip() or str(exc.reason)


async def until_reached(
    fetch: Callable[[], T],
    stop: asyncio.Event,
    *,
    who: str,
    url: str,
    backoff_initial: float,
    backoff_max: float,
) -> T | None:
    """``fetch()`` in a thread until it does not raise OSError; None when stopped."""
    backoff = Backoff(backoff_initial, backoff_max)
    while not stop.is_set():
        try:
            return await asyncio.to_thread(fetch)
        except OSError as exc:
            delay = backoff.next()
            logger.warning(
                "cannot reach %s at %s (%s); retrying in %.0f s", who, url, exc, delay
            )
        if await wait_or_stop(stop, delay):
            return None
    return None
