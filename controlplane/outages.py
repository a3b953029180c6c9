"""The hub's words for a service it cannot reach: its database or its Redis.

A request that fails because PostgreSQL or Redis is down gets a retryable answer
and one line in the log, not Django's HTML error page and a traceback (issue 15,
fault 4): the HTTP API answers 503 with {"error": ...}, the status page a 503 in
plain words, and every worker logs the hub's sentence.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"


def unavailable(exc: BaseException | None) -> str | None:
    """ "the database" or "Redis" when ``exc``, or what caused it, says that the
    service cannot be reached; None for any other error."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OperationalError | InterfaceError):
            return "the database"
        if isinstance(exc, RedisConnectionError | RedisTimeoutError):
            return "Redis"
        exc = exc.__cause__ or exc.__context__
    return None


def in_words(service: str, exc: BaseException) -> str:
    """One line: the service, and the first line of the driver's own message."""
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"the hub's {service.removeprefix('the ')} is unavailable ({detail})"


class ServiceOutageMiddleware(MiddlewareMixin):
    """Answers 503 in words when a view fails because a service is down."""

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponse | None:
        service = unavailable(exception)
        if service is None:
            return None  # a bug: Django's own 500 and its traceback
        words = in_words(service, exception)
        logger.error("%s: answered %s %s with 503", words, request.method, request.path)
        message = f"{words}; retry in a few seconds"
        if request.path.startswith(API_PREFIX):
            return JsonResponse({"error": message}, status=503)
        return HttpResponse(message, status=503, content_type="text/plain")


class OutageFilter(logging.Filter):
    """Daphne reports an application that raised with its whole traceback. When a
    service outage caused it (a feed or publish handshake while Redis or the
    database is down: the client got HTTP 500 or 1011 and retries), one line in
    words instead; any other exception keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "daphne.server" or not record.exc_info:
            return True
        exc = record.exc_info[1]
        service = unavailable(exc)
        if exc is None or service is None:
            return True
        record.msg = "%s: a connection failed with an error; its client retries"
        record.args = (in_words(service, exc),)
        record.exc_info, record.exc_text = None, None
        return True
