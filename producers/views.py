"""HTTP API for producer workers: their definition, and a relay's upstream status.

Both are authenticated by the producer key. Workers import no ORM and may run on
another host, so they read what to run here, and a relay reports its FreqTrade bot's
state here for the status page.
"""

from __future__ import annotations

import json
import logging
from typing import TypedDict

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from controlplane.lib import counters
from controlplane.lib.auth import bearer
from producers.models import Producer

logger = logging.getLogger(__name__)

STATUS_BODY_LIMIT = 64 * 1024


class UpstreamDocument(TypedDict):
    host: str
    port: int
    secure: bool
    ws_token: str


class UpstreamReport(TypedDict):
    """What a relay reports about the FreqTrade bot it follows."""

    url: str  # the bot's feed URL, without the token
    connected: bool
    since: str | None  # ISO 8601: connected since, or down since
    reconnects: int
    last_error: str | None
    refused: bool  # the bot refused the ws_token
    mismatch: str | None  # the bot's keys do not match the definition
    whitelist: list[str]  # the relayed pairs
    pairs_held: int
    newest_candle: str | None  # ISO 8601


def error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def authenticate(request: HttpRequest, name: str, what: str) -> Producer | JsonResponse:
    """Producer ``name`` if the request carries its key, else the error to send."""
    key = bearer(request.headers.get("Authorization"))
    if not key:
        return error(401, "send the producer key as 'Authorization: Bearer <key>'")
    producer = Producer.for_key(key)
    if producer is None or producer.name != name:
        logger.warning(
            "producer %s: refused a key for %s from %s",
            what,
            name,
            request.META.get("REMOTE_ADDR"),
        )
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
        return JsonResponse(producer_definition(producer))
    except ValueError as exc:  # the bot's ws_token cannot be decrypted
        return error(409, f"producer {name}: {exc} (enter the bot's ws_token again)")


def producer_definition(producer: Producer) -> dict:
    definition = {
        "name": producer.name,
        "timeframe": producer.timeframe,
        "candle_type": producer.candle_type,
        "pairs": list(producer.pairs),
        "strategy": producer.strategy,
        "source": producer.source,
        "source_options": producer.source_options,
        "history": producer.history,
    }
    if producer.relays:
        # The only place the bot's ws_token leaves the database: to the worker
        # that holds this producer's key.
        upstream: UpstreamDocument = {
            "host": producer.upstream_host,
            "port": producer.upstream_port,
            "secure": producer.upstream_secure,
            "ws_token": producer.upstream_token(),
        }
        definition["upstream"] = upstream
    return definition


@csrf_exempt  # key-authenticated from a worker, not cookie-authenticated
@require_POST
def producer_status(request: HttpRequest, name: str) -> HttpResponse:
    producer = authenticate(request, name, "status")
    if isinstance(producer, JsonResponse):
        return producer
    if len(request.body) > STATUS_BODY_LIMIT:
        return error(413, f"the status report is over {STATUS_BODY_LIMIT} bytes")
    try:
        report = parse_upstream(request.body)
    except ValueError as exc:
        return error(400, f"{exc}; send the relay's upstream status as documented")
    producer.record_upstream_status(report)
    counters.mark_changed()
    return HttpResponse(status=204)


def parse_upstream(body: bytes) -> UpstreamReport:
    """The relay's report, checked; raises ValueError naming the fault."""
    try:
        report = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the body is not JSON ({exc})") from None
    if not isinstance(report, dict):
        raise ValueError("the body must be a JSON object")
    checks = {
        "url": (str,),
        "connected": (bool,),
        "since": (str, type(None)),
        "reconnects": (int,),
        "last_error": (str, type(None)),
        "refused": (bool,),
        "mismatch": (str, type(None)),
        "pairs_held": (int,),
        "newest_candle": (str, type(None)),
    }
    for field, types in checks.items():
        value = report.get(field)
        if not isinstance(value, types) or (types == (int,) and value < 0):
            names = " or ".join(
                "null" if t is type(None) else t.__name__ for t in types
            )
            raise ValueError(f"'{field}' must be {names.replace('int', 'a count')}")
    pairs = report.get("whitelist")
    if not isinstance(pairs, list) or not all(isinstance(p, str) for p in pairs):
        raise ValueError("'whitelist' must be a list of pairs")
    return {field: report[field] for field in (*checks, "whitelist")}  # type: ignore
