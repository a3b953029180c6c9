"""End to end in a real browser: the status page follows a hub, a producer worker and a
consumer worker (real processes) without reloading, in headless Chromium driven by
Playwright.

Chromium comes from Debian (`apt-get install chromium`, done by .ci/run); Playwright
never downloads a browser here. Outside CI the test is skipped when either is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import chromium, errors_of, playwright_or_skip, save
from tests.processes import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

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


def test_it_shows_the_system_live_in_a_real_browser(stack, tmp_path):
    playwright_or_skip()
    start(stack)
    base = f"http://127.0.0.1:{stack.port}"
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        errors = errors_of(page)
        log_in(page, base)
        follow_the_page(page, stack, tmp_path)
        assert errors == [], errors


def test_it_fits_a_phone_and_keeps_the_chart_in_sight(stack, tmp_path):
    """At 420 px nothing scrolls sideways; a click on a pair brings the chart up
    below the sticky bar, its selectors visible, its lower pane named."""
    playwright_or_skip()
    start(stack)
    base = f"http://127.0.0.1:{stack.port}"
    with chromium() as browser:
        for width in (420, 1360):
            page = browser.new_page(viewport={"width": width, "height": 800})
            errors = errors_of(page)
            log_in(page, base)
            page.wait_for_function(
                f"document.querySelector('{BTC}').textContent.startsWith('20')",
                timeout=30_000,
            )
            assert page.evaluate(
                "document.documentElement.scrollWidth"
            ) == page.evaluate("window.innerWidth"), f"sideways scroll at {width} px"
            page.click('article[data-key="e2e"] tr[data-key="ETH/USDT"]')
            page.wait_for_function(
                "document.getElementById('chart-pair').value === 'ETH/USDT'"
            )
            page.wait_for_timeout(1200)  # the smooth scroll
            bar = page.evaluate(
                "document.querySelector('.topbar').getBoundingClientRect().bottom"
            )
            picker = page.evaluate(
                "document.getElementById('chart-pick').getBoundingClientRect().top"
            )
            assert picker >= bar, (
                f"the chart's selectors are under the bar ({width} px); bar text "
                f"{page.text_content('#live-text')!r}, page errors {errors}"
            )
            label = page.locator("#chart-lower-label")
            label.wait_for(state="visible", timeout=10_000)
            assert label.text_content() == page.input_value("#chart-lower")
            save(page, tmp_path, f"status-pair-click-{width}.png")
            assert errors == [], errors
            page.close()


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
