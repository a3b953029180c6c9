"""The admin is candlecast's: its name, the status page linked, a favicon, and times
that say their zone."""

from __future__ import annotations

import datetime as dt

from django.utils import formats


def test_the_admin_index_shows_the_brand_and_links_the_status_page(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "<title>candlecast administration | candlecast</title>" in page
    assert '<a href="/admin/">candlecast</a>' in page
    assert '<a href="/status/">View site</a>' in page
    assert "Django administration" not in page


def test_the_admin_pages_link_the_favicon(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert (
        '<link rel="icon" type="image/svg+xml" href="/static/controlplane/favicon.svg">'
        in page
    )


def test_favicon_ico_leads_to_the_svg(client):
    response = client.get("/favicon.ico")
    assert (response.status_code, response["Location"]) == (
        301,
        "/static/controlplane/favicon.svg",
    )


def test_datetimes_are_shown_with_their_zone(settings):
    moment = dt.datetime(2026, 12, 7, 10, 5, tzinfo=dt.UTC)
    assert formats.date_format(moment, "DATETIME_FORMAT") == "Dec. 7, 2026, 10:05 UTC"
