"""Headless Chromium for the browser tests, driven by Playwright.

Chromium comes from Debian (`apt-get install chromium`, done by .ci/run); Playwright
never downloads a browser here. Outside CI a test is skipped when either is missing;
in CI it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ROOT

CHROMIUM = Path(os.environ.get("CANDLECAST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def playwright_or_skip():
    """Playwright's sync API; in CI a missing browser fails the test, never skips it."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package (pip install -e '.[test]')")
        sync_playwright = None
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing and os.environ.get("CI"):
        pytest.fail(f"the browser test needs {' and '.join(missing)}")
    if missing:
        pytest.skip(f"the browser test needs {' and '.join(missing)}")
    return sync_playwright


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Chromium (a Playwright Browser), closed at the end."""
    sync_playwright = playwright_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def errors_of(page) -> list[str]:
    """The page's uncaught script errors and console errors (a failed WebSocket,
    say "Invalid frame header", a resource that did not load), from now on."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda message: message.type == "error" and errors.append(message.text),
    )
    return errors


def save(page, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot in the test's directory, copied to var/screenshots/."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    kept = ROOT / "var" / "screenshots" / name
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, kept)
    print(f"screenshot: {shot} (copied to {kept})")
    return kept
