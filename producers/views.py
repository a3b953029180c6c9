"""HTTP API for producer workers: their definition, and their status (a relay's
upstream bot, or a producer worker's analysis processes).

Both are authenticated by the producer key. Workers import no ORM and may run on
another host, so they read what to run here, and a relay reports its FreqTrade bot's
state here for the status page.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from controlplane.lib import contracts, counters
from controlplane.lib.auth import bearer, throttle
from producers.models import Producer

logger = logging.getLogger(__name__)

STATUS_BODY_LIMIT = 64 * 1024


def error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def authenticate(request: HttpRequest, name: str, what: str) -> Producer | JsonResponse:
    """Producer ``name`` if the request carries its key, else the error to send."""
    key = bearer(request.headers.get("Authorization"))
    if not key:
        return error(401, "send the producer key as 'Authorization: Bearer <key>'")
    producer = Producer.for_key(key)
    if producer is None or producer.name != name:
        address = request.META.get("REMOTE_ADDR", "unknown")
        if throttle.failed(address):  # logged once for the window
            return error(
                429, "too many failed attempts from this address: wait a minute"
            )
        logger.warning("producer %s: refused a key for %s from %s", what, name, address)
        return error(403, f"this key is not producer {name}'s key")
    if not producer.enabled:
        return error(403, f"producer {name} is disabled: enable it in the admin")
    return producer


@require_GET
def producer_config(request: HttpRequest, name: str) -> JsonResponse:
    producer = authenticate(request, name, "config")
    if isinstance(producer, JsonResponse):
        return producer
    try:
        definition = producer.definition()
    except ValueError as exc:  # the bot's ws_token cannot be decrypted
        return error(409, f"producer {name}: {exc} (enter the bot's ws_token again)")
    resume = published_until(producer.name)
    return JsonResponse(replace(definition, resume=resume).document())


def published_until(name: str) -> contracts.Resume | None:
    """The newest candle the hub holds for producer ``name`` (None: none yet)."""
    doc = counters.read_state()["producers"].get(name)
    pairs = doc["pairs"] if doc else {}
    if not pairs:
        return None
    newest = max(pairs.values(), key=lambda doc: (doc["last"], doc["received"]))
    return contracts.Resume(candle=newest["last"], at=newest["received"])


@csrf_exempt  # key-authenticated from a worker, not cookie-authenticated
@require_POST
def producer_status(request: HttpRequest, name: str) -> HttpResponse:
    producer = authenticate(request, name, "status")
    if isinstance(producer, JsonResponse):
        return producer
    if len(request.body) > STATUS_BODY_LIMIT:
        return error(413, f"the status report is over {STATUS_BODY_LIMIT} bytes")
    if contracts.is_analysis_status(request.body):
        try:
            analysis = contracts.parse_analysis_status(request.body)
        except contracts.ContractError as exc:
            return error(400, f"{exc}; send the analysis processes' status")
        producer.record_analysis_status(analysis)
        counters.mark_changed()
        return HttpResponse(status=204)
    try:
        report = contracts.parse_upstream_status(request.body)
    except contracts.ContractError as exc:
        return error(400, f"{exc}; send the relay's upstream status as documented")
    producer.record_upstream_status(report)
    counters.mark_changed()
    return HttpResponse(status=204)
