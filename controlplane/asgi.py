"""The hub's ASGI application: Django over HTTP, the feed and publish sockets.

Worker routes (feed, publish) authenticate by token and accept requests without an
Origin header, as FreqTrade's consumer sends none; a browser's Origin is still checked.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from controlplane.auth import OptionalOriginValidator  # noqa: E402
from producers.feed import FeedSocket  # noqa: E402
from producers.publish import PublishSocket  # noqa: E402

websocket_urlpatterns = [
    path("api/v1/message/ws", FeedSocket.as_asgi()),
    path("api/v1/publish/ws", PublishSocket.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OptionalOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)
