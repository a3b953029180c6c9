from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

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
]
