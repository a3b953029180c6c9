"""Helpers for the status page's tests: fresh hub counters, users, reports, sockets."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client

from controlplane.asgi import application
from controlplane.lib import counters

TIMEOUT = 2
ORIGIN = (b"origin", b"http://127.0.0.1:8000")

REPORT = {
    "producers": {
        "default": {
            "connected": True,
            "reconnects": 1,
            "last_error": None,
            "pairs": {
                "BTC/USDT": {"last_candle": "2026-11-01T10:00:00+00:00", "rows": 1500},
            },
        }
    },
    "started": "2026-11-01T09:00:00+00:00",
}


def fresh_counters() -> None:
    """Forget the hub's counts and every other hub process's document."""
    counters.reset()
    cache.delete(counters.REGISTRY_KEY)


def forget_reports(*names: str) -> None:
    cache.delete_many([f"consumer-status:{name}" for name in names])


def make_user(name: str, *, staff: bool):
    return get_user_model().objects.create_user(
        name, password="correct horse battery", is_staff=staff
    )


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def status_socket(user=None, *, origin: tuple[bytes, bytes] | None = ORIGIN):
    """A StatusSocket through the real ASGI stack, as ``user``'s browser."""
    headers = [origin] if origin else []
    if user is not None:
        headers.append((b"cookie", await sync_to_async(session_cookie)(user)))
    communicator = WebsocketCommunicator(application, "/ws/status", headers=headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    return communicator, connected
