"""Routes of the consumer API at the contracts' paths, included by controlplane.urls."""

from __future__ import annotations

from django.urls import path

from consumers import views
from controlplane.lib.contracts import (
    CONSUMER_CONFIG,
    CONSUMER_FREQTRADE_CONFIG,
    CONSUMER_STATUS,
    route,
)

app_name = "consumers"

urlpatterns = [
    path(route(CONSUMER_CONFIG), views.config, name="config"),
    path(
        route(CONSUMER_FREQTRADE_CONFIG),
        views.freqtrade_config,
        name="freqtrade-config",
    ),
    path(route(CONSUMER_STATUS), views.status, name="status"),
]
