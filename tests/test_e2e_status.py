"""End to end in a real browser: the status page follows a hub, a producer worker and a
consumer worker (real processes) without reloading, in headless Chromium driven by
Playwright.

Chromium comes from Debian (`apt-get install chromium`, done by .ci/run); Playwright
never downloads a browser here. Outside CI the test is skipped when either is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.processes import ROOT, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

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
PASSWORD = "status-page-e2e-password"
SETUP = f"""
import json
from django.contrib.auth import get_user_model
from consumers.models import Consumer, Follow
from producers.models import Producer
producer = Producer.objects.create(
    name="e2e", pairs=["BTC/USDT", "ETH/USDT", "SOL/USDT"], timeframe="5m",
    history=300, source_options={{"seed": 3, "seconds_per_candle": 2}},
)
consumer = Consumer.objects.create(name="follower", sleep_time=1)
Follow.objects.create(consumer=consumer, name="default", producer=producer)
get_user_model().objects.create_user("ada", password={PASSWORD!r}, is_staff=True)
print(json.dumps({{
    "producer_key": producer.issue_key(), "consumer_key": consumer.issue_key(),
}}))
"""
BTC = 'article[data-key="e2e"] tr[data-key="BTC/USDT"] [data-field="last_candle"]'
CONSUMER_STATE = 'article[data-key="follower"] .card-head [data-field="state"]'


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


def start(stack: Stack) -> None:
    """The hub and both workers, on the rows of SETUP."""
    # Without the feed socket's own signal, a stopped consumer shows offline once
    # its reports stop: 15 s here instead of 30 s.
    stack.env["CANDLECAST_CONSUMER_OFFLINE_SECONDS"] = "15"
    secrets = stack.setup(SETUP)
    stack.hub()
    stack.producer("e2e", secrets["producer_key"])
    stack.consumer("follower", secrets["consumer_key"])


def log_in(page, base: str) -> None:
    page.goto(f"{base}/admin/login/?next=/status/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/status/")


def save(page, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot in the test's directory, copied to var/screenshots/."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    kept = ROOT / "var" / "screenshots" / name
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, kept)
    print(f"screenshot: {shot} (copied to {kept})")
    return kept


def test_it_shows_the_system_live_in_a_real_browser(stack, tmp_path):
    sync_playwright = playwright_or_skip()
    start(stack)
    base = f"http://127.0.0.1:{stack.port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            log_in(page, base)
            follow_the_page(page, stack, tmp_path)
            assert errors == [], errors
        finally:
            browser.close()


def follow_the_page(page, stack: Stack, tmp_path: Path) -> None:
    page.wait_for_selector('#live[data-state="live"]', timeout=10_000)
    # Marks this document: a reload would lose it.
    page.evaluate("window.__sameDocument = true")
    page.wait_for_function(
        f"document.querySelector('{BTC}').textContent.startsWith('20')",
        timeout=30_000,
    )
    first = page.text_content(BTC)
    page.wait_for_function(
        f"document.querySelector('{BTC}').textContent !== {first!r}", timeout=30_000
    )
    assert page.text_content(BTC) > first, "a newer candle"
    assert page.evaluate("window.__sameDocument === true"), "updated without a reload"
    page.wait_for_function(
        f"document.querySelector('{CONSUMER_STATE}')?.textContent === 'online'",
        timeout=30_000,
    )
    page.wait_for_selector("#chart canvas", timeout=10_000)
    page.wait_for_function(
        "!document.getElementById('chart').hasAttribute('data-empty')", timeout=10_000
    )
    save(page, tmp_path, "status.png")
    assert stack.stop("consumer") == 0
    page.wait_for_function(
        f"document.querySelector('{CONSUMER_STATE}').textContent === 'offline'",
        timeout=30_000,
    )
    reason = page.text_content('article[data-key="follower"] .card-head .reason')
    assert "no status report" in reason
    assert page.evaluate("window.__sameDocument === true")
    save(page, tmp_path, "status-consumer-offline.png")
