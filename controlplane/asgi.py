"""The hub's ASGI application: Django over HTTP, the feed, publish and status sockets.

Worker routes (feed, publish) authenticate by token and accept requests without an
Origin header, as FreqTrade's consumer sends none; a browser's Origin is still checked.
The status socket is a browser route: session auth, staff only, Origin required and
checked against ALLOWED_HOSTS.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from controlplane.lib.auth import OptionalOriginValidator  # noqa: E402
from controlplane.lib.contracts import FEED_PATH, PUBLISH_PATH, route  # noqa: E402
from controlplane.statussocket import StatusSocket  # noqa: E402
from producers.feed import FeedSocket  # noqa: E402
from producers.publish import PublishSocket  # noqa: E402

websocket_urlpatterns = [
    path(route(FEED_PATH), OptionalOriginValidator(FeedSocket.as_asgi())),
    path(route(PUBLISH_PATH), OptionalOriginValidator(PublishSocket.as_asgi())),
    path(
        "ws/status",
        AllowedHostsOriginValidator(AuthMiddlewareStack(StatusSocket.as_asgi())),
    ),
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
