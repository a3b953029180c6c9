"""The relay: a producer worker whose frames come from an existing FreqTrade bot.

`runproducer NAME` for a producer whose source is "FreqTrade bot (upstream)" follows
that bot with the consumer worker's client (one connection, whatever the number of
consumers), keeps its whitelist and analysed frames, and publishes them to the hub
as any producer worker does. No strategy runs here: the bot's columns, values and
dtypes pass through as its own consumers would decode them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from controlplane.lib.contracts import (
    ConsumerSettings,
    Follow,
    ProducerDefinition,
    UpstreamStatus,
)
from controlplane.lib.feedclient.client import ProducerClient
from controlplane.lib.feedclient.framestore import FrameStore, Key, Stored
from controlplane.lib.hubclient import FatalError, call_api
from controlplane.lib.wire import freqtrade
from controlplane.lib.wire.publish import PublishFrame, publish_frame
from producers.worker import (
    CONFIG_REFRESH_SECONDS,
    Publisher,
    WorkerConfig,
    definition_with_retry,
    hub_connections,
    log_lost_hub,
    wait_while_open,
)

logger = logging.getLogger(__name__)

# A FreqTrade bot analyses its pairs one after the other and broadcasts each pair's
# new row as soon as it is analysed: one candle close arrives as N messages spread
# over the bot's analysis time (the interop harness, 3 pairs on a busy 2-core
# machine: 58-937 ms from the first row to the last, median 316 ms). Each publish
# costs the hub one store and one broadcast to every subscriber (100 pairs x 100
# consumers: 10,000 deliveries instead of 100), so the rows of one close go out as
# one publish message, as a producer worker's tick does. The tick closes as soon as
# every relayed pair has its row; else QUIET_SECONDS after the last row arrived (a
# pair the bot skipped), and at the latest GATHER_MAX_SECONDS after the first. So
# the latency added is the bot's own spread between its first and last pair.
QUIET_SECONDS = 0.5
GATHER_MAX_SECONDS = 2.0
STATUS_SECONDS = 5.0
WATCH_SECONDS = 1.0  # with a standby bot: how often the failover is checked
FULL = None  # a change that replaced the whole frame


class RelayStore(FrameStore):
    """A FrameStore that also notes what each stored frame changed, for publishing.

    ``apply`` may run in a thread (the client decodes big frames off the loop), so
    the notes have their own lock and ``wake`` must be thread-safe.
    """

    def __init__(self, max_rows: int, wake: Callable[[], None]) -> None:
        super().__init__(max_rows)
        self.wake = wake
        self._notes_lock = threading.Lock()
        self._changed: dict[Key, pd.Timestamp | None] = {}  # key -> first changed
        self._since: float | None = None  # when the oldest unpublished change came
        self._whitelist_changed = False

    def apply(self, key, df, la, *, full=None):
        result = super().apply(key, df, la, full=full)
        if isinstance(result, Stored):
            first = FULL if result.replaced else result.first
            with self._notes_lock:
                if key in self._changed and first is not FULL:
                    before = self._changed[key]
                    first = FULL if before is FULL else min(before, first)
                self._changed[key] = first
                self._since = self._since or time.monotonic()
            self.wake()
        return result

    def set_whitelist(self, pairs: list[str]) -> None:
        if list(pairs) == self.whitelist:
            return
        super().set_whitelist(pairs)
        with self._notes_lock:
            self._whitelist_changed = True
            self._since = self._since or time.monotonic()
        self.wake()

    def take_changes(self) -> tuple[dict[Key, pd.Timestamp | None], bool, float]:
        """The changes since the last call; and how long the oldest has waited."""
        with self._notes_lock:
            changed, self._changed = self._changed, {}
            listed, self._whitelist_changed = self._whitelist_changed, False
            since, self._since = self._since, None
        return changed, listed, 0.0 if since is None else time.monotonic() - since

    def pending(self) -> bool:
        with self._notes_lock:
            return bool(self._changed) or self._whitelist_changed

    def changed_keys(self) -> set[Key]:
        with self._notes_lock:
            return set(self._changed)


class Link:
    """One FreqTrade bot followed: its client and the frames it holds."""

    def __init__(
        self,
        role: str,
        follow: Follow,
        config: WorkerConfig,
        definition: ProducerDefinition,
        wake: Callable[[], None],
    ) -> None:
        self.role, self.follow = role, follow
        self.store = RelayStore(definition.history, wake)
        self.client = make_client(follow, self.store, config, definition)
        self.since = time.time()  # connected since, or down since
        self.up = False
        self.trouble_since: float | None = None  # down or behind, since (monotonic)

    def connected(self) -> bool:
        connected = self.client.connected
        if connected != self.up:
            self.up, self.since = connected, time.time()
        return connected

    def newest(self, keys: list[Key]) -> pd.Timestamp | None:
        held = (self.store.newest(k) for k in keys)
        return max((h[0] for h in held if h is not None), default=None)


class Relay:
    """A FreqTrade bot followed, its frames published to the hub; with a standby
    bot, both are followed and the frames of one of them are published."""

    def __init__(self, config: WorkerConfig, definition: ProducerDefinition) -> None:
        self.config = config
        self.definition = definition
        self.loop = asyncio.get_running_loop()
        self.woken = asyncio.Event()
        self.primary = Link(
            "primary", upstream_follow(definition), config, definition, self._wake
        )
        self.standby: Link | None = None
        self.failover_seconds = 0
        if definition.standby is not None:
            follow = definition.standby.follow(f"{definition.name} (standby)")
            self.standby = Link("standby", follow, config, definition, self._wake)
            self.failover_seconds = definition.standby.failover_seconds or 60
        self.active = self.primary
        self.switches = 0
        self.switched_at: float | None = None
        self.published_last: dict[Key, pd.Timestamp] = {}
        self.mismatch: str | None = None

    @property
    def links(self) -> list[Link]:
        return [self.primary] if self.standby is None else [self.primary, self.standby]

    # What is relayed comes from the bot followed now.
    @property
    def store(self) -> RelayStore:
        return self.active.store

    @property
    def client(self) -> ProducerClient:
        return self.active.client

    @property
    def follow(self) -> Follow:
        return self.active.follow

    ### Waking the publisher from the client (maybe from a thread)

    def _wake(self) -> None:
        try:
            if asyncio.get_running_loop() is self.loop:
                self.woken.set()
                return
        except RuntimeError:
            pass
        self.loop.call_soon_threadsafe(self.woken.set)

    ### What is relayed

    @property
    def filter(self) -> list[str]:
        return list(self.definition.pairs)

    def whitelist(self, link: Link | None = None) -> list[str]:
        """The bot's whitelist, narrowed to the producer's pairs when it has some
        (the bot followed now, unless ``link`` names the other)."""
        wanted = set(self.filter)
        store = (link or self.active).store
        return [p for p in store.whitelist if not wanted or p in wanted]

    def relayed(self, key: Key, link: Link | None = None) -> bool:
        expected = (self.definition.timeframe, self.definition.candle_type)
        if tuple(key[1:]) != expected:
            self._mismatch(key)
            return False
        return key[0] in self.whitelist(link)

    def _mismatch(self, key: Key) -> None:
        text = (
            f"the bot sends {key[1]} {key[2]}; the producer is defined as "
            f"{self.definition.timeframe} {self.definition.candle_type}: "
            "edit the producer"
        )
        if text != self.mismatch:
            logger.error("producer %s: %s", self.definition.name, text)
        self.mismatch = text

    def keys(self, link: Link | None = None) -> list[Key]:
        link = link or self.active
        order = {pair: i for i, pair in enumerate(self.whitelist(link))}
        held = [k for k in link.store.keys() if self.relayed(k, link)]
        return sorted(held, key=lambda k: order[k[0]])

    ### Failover, with a standby bot

    def choose(self) -> str | None:
        """Follow the other bot when this one has been down or behind for the
        failover time, or back to the primary once it has caught up; the reason
        when it switched."""
        if self.standby is None:
            return None
        other = self.standby if self.active is self.primary else self.primary
        now = time.monotonic()
        keys, their_keys = self.keys(), self.keys(other)
        mine, theirs = self.active.newest(keys), other.newest(their_keys)
        if self.active is self.standby:
            # Back to the primary as soon as it is up and holds what we relay.
            if not other.connected() or theirs is None or mine is None:
                return None
            if theirs < mine or len(their_keys) < len(keys):
                return None
            return self._switch(other, f"{other.follow.display_url} has caught up")
        down = not self.active.connected()
        behind = theirs is not None and (mine is None or mine < theirs)
        if not (down or behind) or not other.connected() or theirs is None:
            self.active.trouble_since = None
            return None
        if self.active.trouble_since is None:
            self.active.trouble_since = now
        waited = now - self.active.trouble_since
        if waited < self.failover_seconds:
            return None
        if down:
            error = self.active.client.last_error or "not connected"
            why = f"unreachable for {waited:.0f} s ({error})"
        else:
            why = (
                f"behind the standby for {waited:.0f} s (newest candle "
                f"{_iso(mine)}, the standby's {_iso(theirs)})"
            )
        return self._switch(other, f"{self.active.follow.display_url} {why}")

    def _switch(self, to: Link, why: str) -> str:
        logger.warning(
            "producer %s: %s; following the %s bot at %s",
            self.definition.name,
            why,
            to.role,
            to.follow.display_url,
        )
        self.active.trouble_since = to.trouble_since = None
        self.active = to
        self.switches += 1
        self.switched_at = time.time()
        self.published_last = {}  # the new bot's whole frames replace the hub's
        return why

    ### Frames to publish

    def full_frame(self, key: Key) -> PublishFrame | None:
        entry = self.store.get(key)
        if entry is None or entry[0].empty:
            return None
        df, la = entry
        self.published_last[key] = df["date"].iloc[-1]
        return publish_frame(key, df, la, full=True, new_candle=False)

    def partial_frame(self, key: Key, first: pd.Timestamp) -> PublishFrame | None:
        """The rows from ``first`` on, upserted by date by the hub."""
        entry = self.store.get(key)
        if entry is None or entry[0].empty:
            return None
        df, la = entry
        rows = df[df["date"] >= first]
        if rows.empty:
            return None
        last = df["date"].iloc[-1]
        before = self.published_last.get(key)
        self.published_last[key] = last
        new_candle = before is None or last > before
        return publish_frame(key, rows, la, full=False, new_candle=new_candle)

    ### Publishing

    async def publish_history(self, publisher: Publisher) -> None:
        """Every relayed pair's whole frame, one message each, whitelist first."""
        self.store.take_changes()  # the history includes them
        if self.store.whitelist:  # else it goes out with the tick that brings it
            await publisher.publish([], whitelist=self.whitelist())
        count = 0
        for key in self.keys():
            frame = self.full_frame(key)
            if frame is not None:
                await publisher.publish([frame])
                count += 1
        logger.info("published the history of %d pairs to the hub", count)

    async def tick(self, publisher: Publisher) -> None:
        """Publish what changed since the last tick, gathered into one message."""
        for link in self.links:
            if link is not self.active:
                link.store.take_changes()  # its frames are kept, not published
        changed, listed, waited = self.store.take_changes()
        if listed:  # pairs new to the whitelist whose frames came before it
            for key in self.keys():
                if key not in self.published_last:
                    changed.setdefault(key, FULL)
        fulls, partial = [], []
        for key, first in changed.items():
            if not self.relayed(key):
                continue
            if first is FULL:
                frame = self.full_frame(key)
                if frame is not None:
                    fulls.append(frame)
            else:
                frame = self.partial_frame(key, first)
                if frame is not None:
                    partial.append(frame)
        whitelist = self.whitelist() if listed else None
        if partial or whitelist is not None:
            await publisher.publish(partial, whitelist=whitelist)
        for frame in fulls:  # each whole frame alone: it stays under the size limit
            await publisher.publish([frame])
        if partial or fulls:
            logger.debug(
                "relayed %d updates and %d whole frames (oldest waited %.0f ms)",
                len(partial),
                len(fulls),
                waited * 1000,
            )

    async def gather(self, ws: ClientConnection, stop: asyncio.Event) -> bool:
        """Wait for a change, then for the tick to close; True when stopping.

        Returns False, with nothing pending, when it is time to refresh the
        definition or (with a standby) to check the failover: whatever the other
        bot's frames wake it for meanwhile.
        """
        wait = CONFIG_REFRESH_SECONDS if self.standby is None else WATCH_SECONDS
        until = time.monotonic() + wait
        while not self.store.pending():
            self.woken.clear()
            if self.store.pending():
                break
            left = until - time.monotonic()
            if left <= 0:
                return False
            woken = asyncio.ensure_future(self.woken.wait())
            try:
                if await wait_while_open_or(ws, stop, woken, left):
                    return True
            finally:
                woken.cancel()
            if not woken.done():
                return False  # timed out: time to refresh the definition
        deadline = time.monotonic() + GATHER_MAX_SECONDS
        while not self.complete() and time.monotonic() < deadline:
            self.woken.clear()
            if self.complete():
                break
            wait = min(QUIET_SECONDS, deadline - time.monotonic())
            try:
                await asyncio.wait_for(self.woken.wait(), max(wait, 0))
            except TimeoutError:
                break
        return stop.is_set()

    def complete(self) -> bool:
        """Every relayed pair has a change waiting: the tick is whole."""
        changed = {key[0] for key in self.store.changed_keys()}
        return set(self.whitelist()) <= changed

    async def serve(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        publisher = Publisher(ws)
        await self.publish_history(publisher)
        refreshed = time.monotonic()
        while not stop.is_set():
            if await self.gather(ws, stop):
                break
            if self.choose() is not None:
                await self.publish_history(publisher)
            await self.tick(publisher)
            if time.monotonic() - refreshed >= CONFIG_REFRESH_SECONDS:
                refreshed = time.monotonic()
                if await self.refresh(stop):
                    await self.publish_history(publisher)

    ### Admin edits

    async def refresh(self, stop: asyncio.Event) -> bool:
        """Pick up admin edits; True when the relayed pairs changed.

        Raises:
            Restart: the bot, timeframe, candle type or history changed.
        """
        definition = await definition_with_retry(self.config, stop)
        if definition is None or definition == self.definition:
            return False
        if not definition.relays or _core(definition) != _core(self.definition):
            raise Restart("the producer's definition changed")
        logger.info(
            "producer %s: relayed pairs changed to %s",
            definition.name,
            ", ".join(definition.pairs) or "every pair the bot whitelists",
        )
        self.definition = definition
        return True

    ### Status, reported to the hub

    def status(self) -> UpstreamStatus:
        """The bot followed now; with a standby, which one it is and the other's
        state."""
        connected = self.active.connected()
        keys = self.keys()
        newest = self.active.newest(keys)
        error = self.client.last_error
        report: UpstreamStatus = {
            "url": self.follow.display_url,
            "connected": connected,
            "since": datetime.fromtimestamp(self.active.since, UTC).isoformat(),
            "reconnects": self.client.reconnects,
            "last_error": error,
            "refused": bool(error and "refused our token" in error and not connected),
            "mismatch": self.mismatch,
            "whitelist": self.whitelist(),
            "pairs_held": len(keys),
            "newest_candle": _iso(newest),
        }
        if self.standby is not None:
            other = self.standby if self.active is self.primary else self.primary
            report["following"] = self.active.role
            report["switches"] = self.switches
            report["switched_at"] = (
                None
                if self.switched_at is None
                else datetime.fromtimestamp(self.switched_at, UTC).isoformat()
            )
            report["other"] = {
                "url": other.follow.display_url,
                "connected": other.connected(),
                "last_error": other.client.last_error,
                "newest_candle": _iso(other.newest(self.keys(other))),
            }
        return report

    async def report(self, stop: asyncio.Event) -> None:
        """POST the upstream's state to the hub every STATUS_SECONDS, and at once
        when the link goes up or down."""
        url = self.config.status_url
        sent, failing = None, False
        last = 0.0
        while not stop.is_set():
            report = self.status()
            if report != sent or time.monotonic() - last >= STATUS_SECONDS:
                try:
                    body = json.dumps(report).encode()
                    await asyncio.to_thread(
                        call_api,
                        url,
                        self.config.key,
                        body,
                        who="the hub",
                        key_name="producer key",
                    )
                except (OSError, FatalError) as exc:
                    if not failing:
                        logger.warning("cannot report the upstream's state: %s", exc)
                    failing = True
                else:
                    sent, last, failing = report, time.monotonic(), False
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass


def _iso(when: pd.Timestamp | None) -> str | None:
    return None if when is None else when.isoformat()


class Restart(Exception):
    """The definition changed in a way the running relay cannot follow."""


async def wait_while_open_or(
    ws: ClientConnection, stop: asyncio.Event, woken: asyncio.Future, seconds: float
) -> bool:
    """wait_while_open, ended early by ``woken``; True when stop was set."""
    waiter = asyncio.ensure_future(wait_while_open(ws, stop, seconds))
    try:
        await asyncio.wait({waiter, woken}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not waiter.done():
            waiter.cancel()
    if waiter.done() and not waiter.cancelled():
        return waiter.result()  # raises ConnectionError when the hub went away
    return stop.is_set()


def upstream_follow(definition: ProducerDefinition) -> Follow:
    if definition.upstream is None:
        raise FatalError(
            f"producer {definition.name}'s source is a FreqTrade bot but the hub "
            "sent no upstream: give the bot's host and ws_token in the admin"
        )
    return definition.upstream.follow(definition.name)


def make_client(
    follow: Follow,
    store: RelayStore,
    config: WorkerConfig,
    definition: ProducerDefinition,
) -> ProducerClient:
    settings = ConsumerSettings(
        sleep_time=config.backoff_initial,
        initial_candle_limit=min(definition.history, freqtrade.MAX_LIMIT),
        message_size_limit=max(1, config.message_size_limit >> 20),
    )
    # A FreqTrade bot speaks FreqTrade's protocol only: offer nothing else.
    return ProducerClient(follow, settings, store, native=False)


def _core(definition: ProducerDefinition) -> tuple:
    """What a running relay cannot follow: a change restarts it."""
    d = definition
    return (d.timeframe, d.candle_type, d.history, d.upstream, d.standby)


async def run(
    config: WorkerConfig, definition: ProducerDefinition, stop: asyncio.Event
) -> int:
    """Relay until ``stop`` is set; returns the process exit status."""
    while True:
        relay = Relay(config, definition)
        logger.info(
            "producer %s relays the FreqTrade bot at %s (%s %s, %s)%s",
            config.name,
            relay.follow.display_url,
            definition.timeframe,
            definition.candle_type,
            ", ".join(definition.pairs) or "every pair it whitelists",
            ""
            if relay.standby is None
            else f"; standby bot at {relay.standby.follow.display_url}, followed "
            f"after {relay.failover_seconds} s of trouble",
        )
        following = [
            asyncio.create_task(link.client.run(), name=f"upstream {link.role}")
            for link in relay.links
        ]
        reporting = asyncio.create_task(relay.report(stop), name="upstream status")
        try:
            await publish(relay, stop)
            return 0
        except Restart as exc:
            logger.info("restarting the relay: %s", exc)
        finally:
            for link in relay.links:
                await link.client.close()
            await asyncio.wait_for(asyncio.gather(*following), 10)
            reporting.cancel()
        fresh = await definition_with_retry(config, stop)
        if fresh is None:
            return 0
        definition = fresh
        if not definition.relays:
            raise FatalError(
                "the producer's source is no longer a FreqTrade bot: restart the "
                "producer worker"
            )


async def publish(relay: Relay, stop: asyncio.Event) -> None:
    """Keep the publish socket to the hub; serve the relay on each connection."""
    config = relay.config
    async for ws in hub_connections(config, stop):
        try:
            await relay.serve(ws, stop)
        except (ConnectionClosed, ConnectionError, TimeoutError) as exc:
            log_lost_hub(exc)
            continue
        except Restart:
            await ws.close(1001, "producer worker restarting")
            raise
        await ws.close(1001, "producer worker stopping")
        break
