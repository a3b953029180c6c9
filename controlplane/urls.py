from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from controlplane import views as status_views
from producers import views as producer_views

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/consumer/", include("consumers.urls")),
    path(
        "api/v1/producers/<slug:name>/config",
        producer_views.producer_config,
        name="producer-config",
    ),
    path(
        "api/v1/producers/<slug:name>/status",
        producer_views.producer_status,
        name="producer-status",
    ),
    path("status/", status_views.status_page, name="status"),
    path("status.json", status_views.status_json, name="status-json"),
    path("status/chart.json", status_views.chart_json, name="status-chart"),
    path("metrics", status_views.metrics_view, name="metrics"),
]
