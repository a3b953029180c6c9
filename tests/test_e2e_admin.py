"""End to end in a real browser: what a new user does first in the admin, on a real
hub with a real producer worker publishing to it.

- A newly issued feed token is shown once, and reloading that page issues nothing.
- The consumer page fits a 1366 px window, and a follow shows only its kind's fields.
- Revoking a producer key in its list closes the worker's live publish socket at once.
"""

from __future__ import annotations

import pytest

from tests.browser import chromium, errors_of, playwright_or_skip, save

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PASSWORD = "admin-e2e-password"
SETUP = f"""
import json
from django.contrib.auth import get_user_model
from consumers.models import Consumer, Follow
from producers.models import FeedToken, Producer
producer = Producer.objects.create(
    name="e2e", pairs=["BTC/USDT", "ETH/USDT"], timeframe="5m", history=200,
    source_options={{"seed": 5, "seconds_per_candle": 2}},
)
consumer = Consumer.objects.create(name="follower")
Follow.objects.create(consumer=consumer, name="default", producer=producer)
get_user_model().objects.create_superuser("ada", "", {PASSWORD!r})
print(json.dumps({{
    "producer_key": producer.issue_key(), "consumer": consumer.pk,
    "key_prefix": producer.current_key().prefix,
}}))
"""
LIST_OF = "document.querySelectorAll('#result_list tbody tr').length"


def log_in(page, base: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")


def visible(page, selector: str) -> bool:
    return page.locator(selector).first.is_visible()


def test_it_takes_a_new_user_through_the_admin(stack, tmp_path):
    playwright_or_skip()
    rows = stack.setup(SETUP)
    stack.hub()
    stack.producer("e2e", rows["producer_key"], history=True)
    base = f"http://127.0.0.1:{stack.port}"
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        errors = errors_of(page)
        log_in(page, base)
        issue_a_token_and_reload(page, base, tmp_path)
        edit_the_consumer_s_follows(page, base, rows["consumer"], tmp_path)
        revoke_the_producer_key(page, base, stack, rows["key_prefix"], tmp_path)
        # The one console error: the shown-once page's reload answers 410 by design.
        gone = "Failed to load resource: the server responded with a status of 410"
        assert errors == [f"{gone} (Gone)"], errors


def issue_a_token_and_reload(page, base: str, tmp_path) -> None:
    page.goto(f"{base}/admin/producers/feedtoken/add/")
    page.select_option("#id_producer", label="e2e")
    page.fill("#id_label", "bot one")
    page.click("input[name=_save]")
    secret = page.text_content("code.secret")
    assert secret.startswith("ccf_")
    assert "/admin/shown-once/" in page.url, "the POST answered with a redirect"
    save(page, tmp_path, "admin-token-shown-once.png")
    page.reload()
    assert "This page was shown once already" in page.content()
    assert secret not in page.content()
    page.goto(f"{base}/admin/producers/feedtoken/?q=bot+one")
    assert page.evaluate(LIST_OF) == 1, "reloading issued a second token"


def edit_the_consumer_s_follows(page, base: str, consumer: int, tmp_path) -> None:
    page.goto(f"{base}/admin/consumers/consumer/{consumer}/change/")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1366, f"the consumer page is {width} px wide in a 1366 px window"
    # follows-0 follows our producer: no bot address; follows-1 is the blank row.
    assert not visible(page, "#follows-0 .form-row.field-host")
    assert not visible(page, "#follows-0 .form-row.field-ws_token")
    assert visible(page, "#follows-1 .form-row.field-host")
    save(page, tmp_path, "admin-consumer-follows.png")
    page.select_option("#id_follows-1-producer", label="e2e")
    assert not visible(page, "#follows-1 .form-row.field-host")
    page.select_option("#id_follows-1-producer", value="")
    assert visible(page, "#follows-1 .form-row.field-ws_token")
    page.click("text=Add another Follow")
    assert visible(page, "#follows-2 .form-row.field-host")
    page.select_option("#id_follows-0-producer", value="")  # it may change kind
    assert visible(page, "#follows-0 .form-row.field-host")


def revoke_the_producer_key(page, base: str, stack, prefix: str, tmp_path) -> None:
    page.goto(f"{base}/admin/producers/producerkey/")
    page.check("#result_list tbody tr:first-child input.action-select")
    page.select_option("select[name=action]", "revoke")
    page.click("button[name=index]")
    message = page.text_content("ul.messagelist")
    assert "1 producer key(s) revoked" in message
    assert "the publish connection using it is closed at once" in message
    save(page, tmp_path, "admin-producer-key-revoked.png")
    assert stack.wait_exit("producer", 15) == 2
    assert (
        f"the hub closed the publish socket: producer key {prefix}… was revoked"
        in stack.log("producer")
    )
