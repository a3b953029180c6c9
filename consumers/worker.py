"""The consumer worker: follows its producers, keeps their frames, runs its strategy.

It reads its settings and feed tokens from the control plane's HTTP API (so it can run
on another host and imports no ORM), re-reads them every CONFIG_POLL_SECONDS and
applies changes without a restart, and reports its state back every STATUS_SECONDS.
On a clean stop it can write the frames it holds to a directory (runconsumer --dump).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from websockets.frames import CloseCode

from consumers.dataprovider import DataProvider
from consumers.strategy import StrategyRunner, load_consumer_strategy
from controlplane.lib import contracts, hubclient
from controlplane.lib.contracts import (
    ConsumerConfig,
    ConsumerSettings,
    ConsumerStatus,
    Follow,
    FollowStatus,
)
from controlplane.lib.feedclient.client import ProducerClient
from controlplane.lib.feedclient.framestore import FrameStore, Key, Stored
from controlplane.lib.hubclient import FatalError, wait_or_stop
from producers.strategy import StrategyError

logger = logging.getLogger(__name__)

# How often the worker re-reads its config: admin edits and rotated tokens reach it
# within this many seconds.
CONFIG_POLL_SECONDS = 10.0
STATUS_SECONDS = 10.0
DEFAULT_STRATEGY = "consumers.strategies.sample.SampleConsumerStrategy"
STOP_TIMEOUT = 3.0


@dataclass(frozen=True)
class WorkerConfig:
    name: str
    hub_url: str  # http(s)://host:port of the control plane (any hub process)
    key: str  # the consumer key
    strategy: str = DEFAULT_STRATEGY
    config_poll: float = CONFIG_POLL_SECONDS
    status_interval: float = STATUS_SECONDS
    backoff_initial: float = 1.0  # while the control plane is unreachable at start
    backoff_max: float = 60.0
    dump: Path | None = None  # write the frames held at a clean stop here

    @property
    def config_url(self) -> str:
        return contracts.url(self.hub_url, contracts.CONSUMER_CONFIG)

    @property
    def status_url(self) -> str:
        return contracts.url(self.hub_url, contracts.CONSUMER_STATUS)


### The control plane


def call_api(config: WorkerConfig, url: str, body: bytes | None = None) -> bytes:
    return hubclient.call_api(
        url, config.key, body, who="the control plane", key_name="consumer key"
    )


def fetch_config(config: WorkerConfig) -> dict:
    document = json.loads(call_api(config, config.config_url))
    if not isinstance(document, dict):
        raise OSError("the control plane sent a config that is not a JSON object")
    return document


def post_status(config: WorkerConfig, report: ConsumerStatus) -> None:
    call_api(config, config.status_url, json.dumps(report).encode())


async def config_with_retry(config: WorkerConfig, stop: asyncio.Event) -> dict | None:
    """The config document; waits out an unreachable control plane. None: stopped."""
    return await hubclient.until_reached(
        lambda: fetch_config(config),
        stop,
        who="the control plane",
        url=config.hub_url,
        backoff_initial=config.backoff_initial,
        backoff_max=config.backoff_max,
    )


def parse_config(document: dict, name: str) -> ConsumerConfig:
    """Check the config document (CONSUMER-API) and turn it into typed settings.

    Raises:
        FatalError: the key belongs to another consumer.
        ValueError: the document is malformed; the message names the field.
    """
    if document.get("name") != name:
        raise FatalError(
            f"the consumer key belongs to consumer {document.get('name')!r}, not "
            f"{name!r}: run the worker with that name or use {name}'s key"
        )
    try:
        return ConsumerConfig.from_document(document)
    except contracts.ContractError as exc:
        raise ValueError(f"the config document is malformed ({exc})") from None


### The followed producers


class Fleet:
    """One FrameStore and one ProducerClient task per followed producer."""

    def __init__(self, dp: DataProvider, runner: StrategyRunner) -> None:
        self.dp, self.runner = dp, runner
        self.clients: dict[str, ProducerClient] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.stores: dict[str, FrameStore] = {}

    async def apply(self, config: ConsumerConfig) -> None:
        """Follow exactly ``config.follows``, with ``config.settings``."""
        self.dp.max_signal_age = config.settings.max_signal_age
        for name in [n for n in self.clients if n not in config.follows]:
            logger.info("no longer following %s", name)
            await self._stop(name, CloseCode.NORMAL_CLOSURE)
            self.dp.attach(name, FrameStore())  # forget its frames
            del self.stores[name]
        for name, follow in config.follows.items():
            client = self.clients.get(name)
            if client is None:
                self._start(follow, config.settings)
            else:
                _log_change(client, follow, config.settings)
                await client.update(follow, config.settings)
        self.runner.follow_names(list(config.follows))

    def _start(self, follow: Follow, settings: ConsumerSettings) -> None:
        logger.info(
            "following %s (%s) at %s", follow.name, follow.kind, follow.display_url
        )
        store = FrameStore(remove_entry_exit_signals=settings.remove_entry_exit_signals)
        self.dp.attach(follow.name, store)
        self.stores[follow.name] = store
        client = ProducerClient(follow, settings, store, self._stored)
        self.clients[follow.name] = client
        self.tasks[follow.name] = asyncio.create_task(
            client.run(), name=f"consumer link {follow.name}"
        )

    def _stored(self, name: str, stored: Stored) -> None:
        self.runner.notify(name, stored)

    async def _stop(self, name: str, code: int) -> None:
        client, task = self.clients.pop(name), self.tasks.pop(name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.close(code), STOP_TIMEOUT)
        with contextlib.suppress(TimeoutError):
            # Cancels it on timeout: stuck in a handshake, nothing to close cleanly.
            await asyncio.wait_for(task, STOP_TIMEOUT)

    async def close(self) -> None:
        await asyncio.gather(
            *(self._stop(name, CloseCode.GOING_AWAY) for name in list(self.clients))
        )

    def status(self) -> dict[str, FollowStatus]:
        return {name: client.status() for name, client in self.clients.items()}


def _log_change(
    client: ProducerClient, follow: Follow, settings: ConsumerSettings
) -> None:
    if follow.endpoint != client.follow.endpoint:
        logger.info(
            "%s moved to %s (%s): reconnecting",
            follow.name,
            follow.display_url,
            follow.kind,
        )
    elif settings.link != client.settings.link:
        logger.info("%s: settings changed: reconnecting", follow.name)
    elif follow.ws_token != client.follow.ws_token:
        logger.info("%s: feed token changed; the next connection uses it", follow.name)


### The dump (a debugging aid)


def dump_frames(stores: Mapping[str, FrameStore], out: Path) -> int:
    """Write each producer's frames and whitelist under ``out``; returns the count.

    ``out/<producer>/<pair>.parquet`` (``/`` and ``:`` in the pair become ``_``; the
    timeframe and candle type are added when a pair has several) and
    ``out/<producer>/whitelist.json``.
    """
    written = 0
    for name, store in stores.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "whitelist.json").write_text(json.dumps(store.whitelist))
        keys = store.keys()
        for key in keys:
            entry = store.get(key)
            if entry is not None:
                entry[0].to_parquet(folder / f"{_file_stem(key, keys)}.parquet")
                written += 1
    return written


def _file_stem(key: Key, keys: list[Key]) -> str:
    pair = key[0]
    if sum(1 for other in keys if other[0] == pair) > 1:
        pair = "_".join(key)
    return pair.replace("/", "_").replace(":", "_")


async def _dump(fleet: Fleet, out: Path) -> int:
    """Run dump_frames; the exit status (1: the dump that was asked for is missing)."""
    try:
        count = await asyncio.to_thread(dump_frames, fleet.stores, out)
    except (OSError, ValueError, ImportError) as exc:  # disk full, pyarrow missing
        logger.error("cannot write the frames to %s: %s", out, exc)
        return 1
    logger.info(
        "wrote %d frame(s) of %d producer(s) to %s", count, len(fleet.stores), out
    )
    return 0


### The loop


class Supervisor:
    """Polls the config and reports the status while the clients run."""

    def __init__(
        self, config: WorkerConfig, fleet: Fleet, current: ConsumerConfig
    ) -> None:
        self.config, self.fleet, self.current = config, fleet, current
        self.started = datetime.now(UTC).isoformat()
        self._poll_failing = False
        self._status_failing = False

    async def refresh(self) -> None:
        try:
            document = await asyncio.to_thread(fetch_config, self.config)
        except OSError as exc:
            if not self._poll_failing:
                logger.warning(
                    "cannot read the config from %s (%s); keeping the current one",
                    self.config.hub_url,
                    exc,
                )
            self._poll_failing = True
            return
        if self._poll_failing:
            logger.info("the control plane answers again")
        self._poll_failing = False
        if self.current.version and document.get("version") == self.current.version:
            return
        try:
            fresh = parse_config(document, self.config.name)
        except ValueError as exc:
            logger.error("ignoring a config update: %s", exc)
            return
        if fresh != self.current:
            logger.info("config changed; applying it")
            await self.fleet.apply(fresh)
        self.current = fresh

    async def report(self) -> None:
        report: ConsumerStatus = {
            "producers": self.fleet.status(),
            "started": self.started,
            # A copy taken here: the strategy thread adds to it meanwhile.
            "signals": dict(self.fleet.runner.signals),
        }
        try:
            await asyncio.to_thread(post_status, self.config, report)
        except (OSError, FatalError) as exc:
            if not self._status_failing:
                logger.warning(
                    "cannot report the status to %s (%s); will keep trying",
                    self.config.hub_url,
                    exc,
                )
            self._status_failing = True
            return
        if self._status_failing:
            logger.info("status reports reach the control plane again")
        self._status_failing = False

    async def loop(self, stop: asyncio.Event) -> None:
        clock = asyncio.get_running_loop().time
        next_poll = clock() + self.config.config_poll
        next_status = clock() + min(1.0, self.config.status_interval)
        while not stop.is_set():
            if await wait_or_stop(stop, min(next_poll, next_status) - clock()):
                return
            if clock() >= next_status:
                next_status = clock() + self.config.status_interval
                await self.report()
            if clock() >= next_poll:
                await self.refresh()
                next_poll = clock() + self.config.config_poll


async def run(config: WorkerConfig, stop: asyncio.Event) -> int:
    """Run until ``stop`` is set; returns the process exit status."""
    try:
        return await _run(config, stop)
    except FatalError as exc:
        logger.error("consumer worker %s stopped: %s", config.name, exc)
        return 2


async def _run(config: WorkerConfig, stop: asyncio.Event) -> int:
    logger.info(
        "consumer worker %s starting; control plane %s, strategy %s",
        config.name,
        config.hub_url,
        config.strategy,
    )
    document = await config_with_retry(config, stop)
    if document is None:
        return 0
    try:
        consumer = parse_config(document, config.name)
        strategy = load_consumer_strategy(config.strategy)
        # The strategy's timeframe and candle type are get_producer_df's defaults.
        candle_type = getattr(strategy, "candle_type", "spot")
        dp = DataProvider(
            strategy.timeframe, candle_type, consumer.settings.max_signal_age
        )
    except (ValueError, StrategyError) as exc:
        raise FatalError(str(exc)) from exc
    strategy.dp = dp
    runner = StrategyRunner(strategy, dp)
    fleet = Fleet(dp, runner)
    _log_settings(consumer)
    runner_task = asyncio.create_task(runner.run(), name="consumer strategy")
    try:
        await fleet.apply(consumer)
        await Supervisor(config, fleet, consumer).loop(stop)
    finally:
        logger.info("consumer worker %s stopping", config.name)
        await fleet.close()
        runner_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner_task
    status = 0 if config.dump is None else await _dump(fleet, config.dump)
    logger.info("consumer worker %s stopped", config.name)
    return status


def _log_settings(consumer: ConsumerConfig) -> None:
    s = consumer.settings
    logger.info(
        "consumer %s: %d producer(s); wait_timeout %g s, ping_timeout %g s, "
        "sleep_time %g s, initial_candle_limit %d, message_size_limit %d MiB, "
        "max_signal_age %s",
        consumer.name,
        len(consumer.follows),
        s.wait_timeout,
        s.ping_timeout,
        s.sleep_time,
        s.initial_candle_limit,
        s.message_size_limit,
        "off" if s.max_signal_age is None else f"{s.max_signal_age:g} s",
    )
