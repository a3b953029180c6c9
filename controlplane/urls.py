from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from controlplane import views as status_views
from controlplane.lib.contracts import PRODUCER_CONFIG, PRODUCER_STATUS, route
from producers import views as producer_views
from producers.credential_admin import secrets_shown_once

# The admin is candlecast's: its name, and "View site" opens the status page.
admin.site.site_header = admin.site.site_title = "candlecast"
admin.site.index_title = "candlecast administration"
admin.site.site_url = "/status/"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    # Browsers ask for /favicon.ico whatever the page links.
    path(
        "favicon.ico",
        RedirectView.as_view(url=static("controlplane/favicon.svg"), permanent=True),
    ),
    path(
        "admin/shown-once/<str:page_id>/",
        admin.site.admin_view(secrets_shown_once),
        name="secrets-shown-once",
    ),
    path("admin/", admin.site.urls),
    path("", include("consumers.urls")),
    path(
        route(PRODUCER_CONFIG), producer_views.producer_config, name="producer-config"
    ),
    path(
        route(PRODUCER_STATUS), producer_views.producer_status, name="producer-status"
    ),
    path("status/", status_views.status_page, name="status"),
    path("status.json", status_views.status_json, name="status-json"),
    path("status/chart.json", status_views.chart_json, name="status-chart"),
    path("metrics", status_views.metrics_view, name="metrics"),
]
