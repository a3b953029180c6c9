"""Middleware that wakes the status page when a consumer worker reports its state.

The report view (consumers.views.status) stores the report in the cache; this marks
the hub's status as changed, so StatusSockets push it within a second instead of at
their next periodic refresh.
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.decorators import sync_and_async_middleware

from controlplane.lib import counters


def _reported(request: HttpRequest, response: HttpResponse) -> None:
    if (
        response.status_code == 204
        and request.method == "POST"
        and request.path == reverse("consumers:status")
    ):
        counters.mark_changed()


@sync_and_async_middleware
def status_reports(get_response):
    async def async_middleware(request: HttpRequest) -> HttpResponse:
        response = await get_response(request)
        _reported(request, response)
        return response

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        _reported(request, response)
        return response

    return async_middleware if iscoroutinefunction(get_response) else middleware
