"""What every worker command shares: reading its credential, the hub URL, and
running an async worker until SIGINT/SIGTERM.

Credentials come from an environment variable or a key file, never from the command
line, where `ps` would show them.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from django.core.management.base import CommandError


def read_secret(name: str) -> str:
    """The secret in $NAME_FILE (preferred) or $NAME."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise CommandError(
                f"{name}_FILE={path}: cannot read it ({exc.strerror})"
            ) from exc
        if not value:
            raise CommandError(f"{name}_FILE={path} is empty")
        return value
    value = os.environ.get(name, "").strip()
    if not value:
        raise CommandError(
            f"set {name} or {name}_FILE (a file holding it); it is shown once in the "
            "admin when issued"
        )
    return value


def hub_url() -> str:
    default = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"
    return os.environ.get("CANDLECAST_HUB_URL", default)


def run_until_signalled(worker: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run ``worker(stop)``; SIGINT and SIGTERM set ``stop`` for a clean close."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await worker(stop)

    return asyncio.run(main())
