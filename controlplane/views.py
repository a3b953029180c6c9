"""The status page, status.json, the chart data and /metrics.

The page and the chart data are for staff sessions. status.json and /metrics also
take `Authorization: Bearer <CANDLECAST_STATUS_TOKEN>` when that setting is set, for
scripts and Prometheus; failed tokens count towards the address's throttle.
"""

from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse

from controlplane import chart, metrics
from controlplane.lib.auth import bearer, throttle
from controlplane.overview import build_status_snapshot
from producers.models import Producer
from producers.snapshots import SnapshotStoreUnavailable, get_store

logger = logging.getLogger(__name__)

CHART_ROWS = 300


def error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def refuse_reader(request: HttpRequest) -> JsonResponse | None:
    """None when the request may read the status; else the response to send."""
    user = request.user
    if user.is_authenticated and user.is_active and user.is_staff:
        return None
    address = request.META.get("REMOTE_ADDR", "unknown")
    token = bearer(request.headers.get("Authorization"))
    expected = settings.CANDLECAST_STATUS_TOKEN
    if token and expected and hmac.compare_digest(token.encode(), expected.encode()):
        return None
    if token:
        if throttle.failed(address):  # logged once for the window
            return error(
                429, "too many failed attempts from this address: wait a minute"
            )
        logger.warning("status: refused a bearer token from %s", address)
        return error(403, "wrong status token: send CANDLECAST_STATUS_TOKEN's value")
    if user.is_authenticated:
        return error(403, f"{user.get_username()} is not a staff user")
    return error(
        401,
        "log in as a staff user, or send 'Authorization: Bearer <token>' with the "
        "hub's CANDLECAST_STATUS_TOKEN",
    )


@staff_member_required
def status_page(request: HttpRequest) -> HttpResponse:
    snapshot = build_status_snapshot()
    chosen = request.GET.get("producer"), request.GET.get("pair")
    return render(
        request,
        "status/page.html",
        {
            "snapshot": snapshot,
            "chosen_producer": chosen[0] or "",
            "chosen_pair": chosen[1] or "",
            "json_url": reverse("status-json"),
            "chart_url": reverse("status-chart"),
            "socket_path": "/ws/status",
        },
    )


def status_json(request: HttpRequest) -> JsonResponse:
    refused = refuse_reader(request)
    return refused or JsonResponse(build_status_snapshot())


def metrics_view(request: HttpRequest) -> HttpResponse:
    refused = refuse_reader(request)
    if refused:
        return refused
    text = metrics.render(build_status_snapshot())
    return HttpResponse(text, content_type=metrics.CONTENT_TYPE)


async def chart_json(request: HttpRequest) -> JsonResponse:
    """The newest rows of one producer's pair, shaped for the chart (staff only)."""
    user = await request.auser()
    if not (user.is_active and user.is_staff):
        return error(403, "the chart data is for staff users: log in to the admin")
    name, pair = request.GET.get("producer", ""), request.GET.get("pair", "")
    producer = await Producer.objects.filter(name=name).afirst()
    if producer is None:
        return error(404, f"no producer named {name!r}")
    try:
        limit = min(max(int(request.GET.get("limit", CHART_ROWS)), 10), 1500)
    except ValueError:
        return error(400, "limit must be a whole number of candles (10 to 1500)")
    key = (producer.name, pair, producer.timeframe, producer.candle_type)
    try:
        snapshot = await get_store().tail(key, limit)
    except SnapshotStoreUnavailable as exc:
        return error(503, str(exc))
    if snapshot is None:
        return error(
            404, f"the hub holds no candles of {pair} from {producer.name} yet"
        )
    try:
        data = chart.chart_data(snapshot.columns, chart.decode_rows(snapshot.rows))
    except ValueError as exc:
        return error(422, str(exc))
    return JsonResponse(
        {
            "producer": producer.name,
            "pair": pair,
            "timeframe": producer.timeframe,
            "la": snapshot.la.isoformat(),
            **data,
        }
    )
