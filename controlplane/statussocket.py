"""StatusSocket: live updates of the status page, for staff sessions only.

Each socket joins the "status" group, where every hub process's counters flusher says
"status.changed" (a publish, a feed socket, a consumer report). The socket then sends
the new snapshot if it differs from the last one it sent, at most once a second; a
periodic rebuild catches what no event announces, such as a worker going quiet.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from controlplane.lib import counters
from controlplane.overview import StatusSnapshot, build_status_snapshot

logger = logging.getLogger(__name__)

MIN_INTERVAL = 1.0  # seconds between two updates of one socket
PERIODIC = 5.0  # rebuild at least this often, changed or not
SHARED_FOR = 0.5  # the sockets of a process share a snapshot this young


class _Shared:
    """One snapshot build shared by every socket of the process (per event loop)."""

    def __init__(self) -> None:
        self.built = 0.0  # time.time() when the build started
        self.snapshot: StatusSnapshot | None = None
        self.lock = asyncio.Lock()


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Shared] = (
    weakref.WeakKeyDictionary()
)


async def shared_snapshot(newer_than: float = 0.0) -> StatusSnapshot:
    """A snapshot built after ``newer_than`` (epoch s) and at most SHARED_FOR old."""
    loop = asyncio.get_running_loop()
    shared = _shared.setdefault(loop, _Shared())
    async with shared.lock:
        now = time.time()
        fresh = now - shared.built < SHARED_FOR and shared.built > newer_than
        if shared.snapshot is None or not fresh:
            shared.snapshot = await database_sync_to_async(build_status_snapshot)(now)
            shared.built = now
        return shared.snapshot


def _comparable(snapshot: StatusSnapshot) -> dict:
    return {k: v for k, v in snapshot.items() if k != "generated"}


class StatusSocket(AsyncWebsocketConsumer):
    pump: asyncio.Task | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not (user.is_active and user.is_staff):
            # Before accept: Daphne answers HTTP 403 and the page falls back to
            # polling, which the login redirect then explains.
            await self.close()
            return
        self.sent: dict | None = None
        self.wake = asyncio.Event()
        self.woken_at = 0.0
        await self.channel_layer.group_add(counters.STATUS_GROUP, self.channel_name)
        await self.accept()
        counters.ensure_flusher()
        self.pump = asyncio.create_task(self._pump(), name="status socket")

    async def disconnect(self, code: int) -> None:
        if self.pump is None:
            return
        self.pump.cancel()
        await self.channel_layer.group_discard(counters.STATUS_GROUP, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        pass  # the page only listens

    async def status_changed(self, event: dict) -> None:
        # The change happened before now: the next snapshot must be built after it.
        self.woken_at = time.time()
        self.wake.set()

    async def _pump(self) -> None:
        failing = False
        joined = time.monotonic()
        while True:
            started = time.monotonic()
            if started - joined > settings.CHANNEL_GROUP_EXPIRY / 4:
                # Layer groups expire: a page left open for days keeps its pushes.
                await self.channel_layer.group_add(
                    counters.STATUS_GROUP, self.channel_name
                )
                joined = started
            self.wake.clear()
            try:
                await self._push()
            except Exception:
                if not failing:
                    logger.exception("status: cannot build the status snapshot")
                failing = True
            else:
                failing = False
            try:
                await asyncio.wait_for(self.wake.wait(), PERIODIC)
            except TimeoutError:
                pass
            await asyncio.sleep(max(0.0, MIN_INTERVAL - (time.monotonic() - started)))

    async def _push(self) -> None:
        snapshot = await shared_snapshot(self.woken_at)
        comparable = _comparable(snapshot)
        if comparable == self.sent:
            return
        self.sent = comparable
        await self.send(orjson.dumps({"type": "snapshot", "data": snapshot}).decode())
