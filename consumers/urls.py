"""Routes of the consumer API, mounted at /api/v1/consumer/ by controlplane.urls."""

from __future__ import annotations

from django.urls import path

from consumers import views

app_name = "consumers"

urlpatterns = [
    path("config", views.config, name="config"),
    path("freqtrade-config", views.freqtrade_config, name="freqtrade-config"),
    path("status", views.status, name="status"),
]
