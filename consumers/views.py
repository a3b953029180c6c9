"""HTTP API for consumer workers: their config, and the status they report back.

Workers never touch the database and may run on another host, so they read their
settings and feed tokens here with the consumer key (CONSUMER-API contract).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from consumers.models import ConfigError, Consumer, ConsumerKey
from controlplane.lib import contracts
from controlplane.lib.addresses import hub_address
from controlplane.lib.auth import bearer, throttle
from producers import tokens

logger = logging.getLogger(__name__)

STATUS_BODY_LIMIT = 256 * 1024
KEY_HINT = (
    "the admin shows a consumer key once, when the consumer is created or with the "
    "actions 'Rotate the consumer key' and 'Issue a new consumer key'"
)
TAKES_KEY = "the consumer API takes the consumer's own key (ccc_…)"


def error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def wrong_credential(key: str, reason: str = "") -> str:
    """Why a presented credential is refused, naming only public parts.

    ``reason``: ConsumerKey.objects.authenticate's, for a key of ours.
    """
    if tokens.prefix_of(key, tokens.PRODUCER_KEY):
        return f"this is a producer key; {TAKES_KEY}"
    if tokens.prefix_of(key, tokens.FEED_TOKEN):
        return f"this is a feed token; {TAKES_KEY}"
    if reason.startswith("not a candlecast"):  # its shape says what is wrong
        return f"{reason}: {KEY_HINT}"
    prefix = tokens.prefix_of(key, tokens.CONSUMER_KEY)
    if prefix and reason.endswith(ConsumerKey.State.REVOKED):
        return f"consumer key {prefix}… was revoked (or replaced): {KEY_HINT}"
    if prefix and reason.endswith(ConsumerKey.State.EXPIRED):
        return (
            f"consumer key {prefix}… expired (after a rotation: its grace period "
            f"ended; give the worker the newest key): {KEY_HINT}"
        )
    if prefix:
        return f"unknown consumer key {prefix}… (replaced or deleted?): {KEY_HINT}"
    return f"not a candlecast consumer key: {KEY_HINT}"


def authenticate(request: HttpRequest) -> Consumer | JsonResponse:
    """The consumer whose key the request carries, or the error response to send."""
    address = request.META.get("REMOTE_ADDR", "unknown")
    key = bearer(request.headers.get("Authorization"))
    if not key:
        return error(
            401, f"send the consumer key as 'Authorization: Bearer <key>'; {KEY_HINT}"
        )
    found, reason = ConsumerKey.objects.select_related("consumer").authenticate(key)
    if found is None:
        if throttle.failed(address):  # logged once for the window
            return error(
                429,
                "too many failed attempts from this address: wait a minute, "
                "then retry with the right consumer key",
            )
        logger.warning(
            "consumer API: refused a credential from %s: %s", address, reason
        )
        return error(403, wrong_credential(key, reason))
    found.record_use(address)
    consumer = found.consumer
    if not consumer.enabled:
        return error(
            403, f"consumer {consumer.name} is disabled: enable it in the admin"
        )
    return consumer


def serve_document(request: HttpRequest, build: Callable) -> JsonResponse:
    consumer = authenticate(request)
    if isinstance(consumer, JsonResponse):
        return consumer
    try:
        return JsonResponse(build(consumer, *hub_address(request)))
    except ConfigError as exc:
        logger.warning("consumer API: config of %s: %s", consumer.name, exc)
        return error(409, str(exc))


@require_GET
def config(request: HttpRequest) -> JsonResponse:
    return serve_document(request, Consumer.config_document)


@require_GET
def freqtrade_config(request: HttpRequest) -> JsonResponse:
    return serve_document(request, Consumer.freqtrade_config)


@csrf_exempt  # key-authenticated from a worker, not cookie-authenticated
@require_POST
def status(request: HttpRequest) -> HttpResponse:
    consumer = authenticate(request)
    if isinstance(consumer, JsonResponse):
        return consumer
    if too_large(request):
        return error(
            413,
            f"the status report is over {STATUS_BODY_LIMIT} bytes: "
            "report fewer pairs or shorter errors",
        )
    try:
        report = contracts.parse_consumer_status(request.body)
    except contracts.ContractError as exc:
        return error(
            400,
            f"{exc}; send the worker's status as documented in the "
            "consumer API contract",
        )
    consumer.record_status(report)
    return HttpResponse(status=204)


def too_large(request: HttpRequest) -> bool:
    # Refuse by the declared length before reading, so a huge body is never loaded.
    length = request.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > STATUS_BODY_LIMIT:
        return True
    return len(request.body) > STATUS_BODY_LIMIT
