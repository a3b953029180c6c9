"""HTTP API for producer workers: their definition, fetched with the producer key.

Workers import no ORM and may run on another host, so they read what to run here.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from controlplane.auth import bearer
from producers.models import Producer

logger = logging.getLogger(__name__)


def error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@require_GET
def producer_config(request: HttpRequest, name: str) -> JsonResponse:
    key = bearer(request.headers.get("Authorization"))
    if not key:
        return error(401, "send the producer key as 'Authorization: Bearer <key>'")
    producer = Producer.for_key(key)
    if producer is None or producer.name != name:
        logger.warning(
            "producer config: refused a key for %s from %s",
            name,
            request.META.get("REMOTE_ADDR"),
        )
        return error(403, f"this key is not producer {name}'s key")
    if not producer.enabled:
        return error(403, f"producer {name} is disabled: enable it in the admin")
    return JsonResponse(producer_definition(producer))


def producer_definition(producer: Producer) -> dict:
    return {
        "name": producer.name,
        "timeframe": producer.timeframe,
        "candle_type": producer.candle_type,
        "pairs": list(producer.pairs),
        "strategy": producer.strategy,
        "source": producer.source,
        "source_options": producer.source_options,
        "history": producer.history,
    }
