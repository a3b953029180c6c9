"""The producer worker: candles in, strategy run once, analysed rows out to the hub.

It reads its definition from the hub's HTTP API (so it can run on another host and
imports no ORM), publishes the whole history on every connection (a restarted hub
has lost nothing for long), then one tick message per new candle for all pairs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pandas as pd
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.client import process_exception as websockets_process_exception
from websockets.exceptions import ConnectionClosed, InvalidStatus

from controlplane.lib import contracts
from controlplane.lib.backoff import Backoff
from controlplane.lib.contracts import ProducerDefinition
from controlplane.lib.hubclient import FatalError, call_api, until_reached, wait_or_stop
from controlplane.lib.wire import publish
from controlplane.lib.wire.columns import Key, ProtocolError
from producers.sources import CandleSource, SourceError, build_source
from producers.strategy import IStrategy, StrategyError, load_strategy

logger = logging.getLogger(__name__)

CONFIG_REFRESH_SECONDS = 30.0
# The hub's close codes for a producer key it revoked or that expired
# (producers/publish.py).
CLOSE_KEY_ENDED = (4001, 4002)
# A publish connection that lived this long was healthy: backoff starts over.
STABLE_SECONDS = 60.0
ACK_TIMEOUT = 60.0


@dataclass(frozen=True)
class WorkerConfig:
    name: str
    hub_url: str  # http(s)://host:port of any hub process
    key: str
    message_size_limit: int = 8 << 20
    backoff_initial: float = 1.0
    backoff_max: float = 60.0

    @property
    def config_url(self) -> str:
        return contracts.url(self.hub_url, contracts.PRODUCER_CONFIG, name=self.name)

    @property
    def publish_url(self) -> str:
        hub = self.hub_url.replace("http", "ws", 1)
        return contracts.url(hub, contracts.PUBLISH_PATH)

    @property
    def status_url(self) -> str:
        return contracts.url(self.hub_url, contracts.PRODUCER_STATUS, name=self.name)


### The control plane


def fetch_definition(config: WorkerConfig) -> ProducerDefinition:
    """GET the producer's definition (FatalError when the key is refused).

    Raises:
        OSError: the hub is unreachable, or sent a malformed definition (a hub of
            another version during an upgrade): retried.
    """
    body = call_api(
        config.config_url, config.key, who="the hub", key_name="producer key"
    )
    try:
        return ProducerDefinition.from_document(json.loads(body))
    except ValueError as exc:  # ContractError, or not JSON at all
        raise OSError(f"the hub sent a malformed definition ({exc})") from None


async def definition_with_retry(
    config: WorkerConfig, stop: asyncio.Event
) -> ProducerDefinition | None:
    return await until_reached(
        lambda: fetch_definition(config),
        stop,
        who="the hub",
        url=config.hub_url,
        backoff_initial=config.backoff_initial,
        backoff_max=config.backoff_max,
    )


### Analysis


class Analysis:
    """The producer's candles and analysed frames, per pair."""

    def __init__(self, definition: ProducerDefinition) -> None:
        self.definition = definition
        self.timeframe = definition.timeframe
        self.candle_type = definition.candle_type
        self.history = definition.history
        self.strategy: IStrategy = load_strategy(definition.strategy)
        self.source: CandleSource = build_source(
            definition.source,
            self.timeframe,
            definition.source_options,
            list(definition.pairs),
            self.candle_type,
        )
        self.candles: dict[str, pd.DataFrame] = {}
        self.analysed: dict[str, pd.DataFrame] = {}
        self.la: dict[str, datetime] = {}
        if definition.resume is not None:
            self._resume(definition.resume)

    def _resume(self, resume: contracts.Resume) -> None:
        # A fast clock restarted from the wall clock would run hours behind the
        # history the hub holds (issue 15): continue it from there instead.
        if self.source.resume(resume.candle, resume.at):
            logger.info(
                "the hub holds candles up to %s: the source clock runs on from "
                "there (now %s), so the candles closed meanwhile are filled",
                _minute(resume.candle),
                self.source.now().strftime("%Y-%m-%d %H:%M"),
            )

    @property
    def pairs(self) -> list[str]:
        return list(self.definition.pairs)

    def key(self, pair: str) -> Key:
        return (pair, self.timeframe, self.candle_type)

    def keep(self) -> int:
        return self.history + self.strategy.startup_candle_count

    def advance(self, pair: str) -> pd.DataFrame | None:
        """Fetch closed candles after the last one; return their analysed rows.

        Only the new rows are taken from the new analysis: rows already published
        stay as they were sent. Re-analysing a sliding window shifts indicators
        with memory (EMA, RSI) on older rows, and a republished history must equal
        what consumers already hold, or they would disagree with every new joiner.
        """
        candles = self.candles[pair]
        after = candles["date"].iloc[-1] if len(candles) else pd.Timestamp(0, tz="UTC")
        new = self.source.candles_after(pair, after)
        if new.empty:
            return None
        merged = pd.concat([candles, new], ignore_index=True)
        self.candles[pair] = merged.iloc[-self.keep() :].reset_index(drop=True)
        fresh = self._analyse(pair).iloc[-len(new) :]
        published = pd.concat([self.analysed[pair], fresh], ignore_index=True)
        self.analysed[pair] = published.iloc[-self.history :].reset_index(drop=True)
        return fresh

    def load(self, pair: str) -> None:
        self.candles[pair] = self.source.history(pair, self.keep())
        frame = self._analyse(pair)
        self.analysed[pair] = frame.iloc[-self.history :].reset_index(drop=True)

    def load_pairs(self, pairs: list[str]) -> None:
        for pair in pairs:
            self.load(pair)

    def _analyse(self, pair: str) -> pd.DataFrame:
        metadata = {
            "pair": pair,
            "timeframe": self.timeframe,
            "candle_type": self.candle_type,
        }
        frame = self.strategy.analyze(self.candles[pair], metadata)
        self.la[pair] = datetime.now(UTC)
        return frame

    def full_frame(self, pair: str) -> publish.PublishFrame:
        return publish.publish_frame(
            self.key(pair),
            self.analysed[pair],
            self.la[pair],
            full=True,
            new_candle=False,
        )


### The publish connection


class Publisher:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seq = 0

    async def publish(self, frames: list, whitelist: list[str] | None = None) -> None:
        self.seq += 1
        await self.ws.send(publish.publish_message(self.seq, frames, whitelist))
        try:
            reply = publish.parse_hub_reply(
                await asyncio.wait_for(self.ws.recv(), ACK_TIMEOUT)
            )
        except ProtocolError as exc:
            raise ConnectionError(str(exc)) from exc
        if reply["type"] == "error":
            # The hub kept serving; this message was refused (logged there too).
            logger.error("the hub refused publish %s: %s", self.seq, reply["data"])
        elif reply["seq"] != self.seq:
            raise ConnectionError(f"the hub acked {reply['seq']}, expected {self.seq}")


async def publish_history(publisher: Publisher, analysis: Analysis) -> None:
    """All pairs' full frames, one message each (each stays under the size limit)."""
    pairs = analysis.pairs
    for index, pair in enumerate(pairs):
        await publisher.publish(
            [analysis.full_frame(pair)], whitelist=pairs if index == 0 else None
        )
    newest = max(
        (
            analysis.analysed[p]["date"].iloc[-1]
            for p in pairs
            if len(analysis.analysed[p])
        ),
        default=None,
    )
    logger.info(
        "published %d rows of history for %d pairs, up to %s",
        analysis.history,
        len(pairs),
        "no candle" if newest is None else newest.strftime("%Y-%m-%d %H:%M"),
    )


async def tick(publisher: Publisher, analysis: Analysis) -> None:
    """Analyse every pair's new candles; publish them as one message."""
    frames = []
    for pair in analysis.pairs:
        try:
            rows = await asyncio.to_thread(analysis.advance, pair)
        except StrategyError as exc:
            # One pair's failure must not stop the others; it is retried next tick.
            logger.error("%s: %s", pair, exc)
            continue
        if rows is not None:
            frames.append(
                publish.publish_frame(
                    analysis.key(pair),
                    rows,
                    analysis.la[pair],
                    full=False,
                    new_candle=True,
                )
            )
    if frames:
        await publisher.publish(frames)
        at = frames[0]["columns"].index("date")
        newest = max(frame["rows"][-1][at] for frame in frames)
        logger.info(
            "candle %s closed: published %d of %d pairs",
            _minute(newest),
            len(frames),
            len(analysis.pairs),
        )


def _minute(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def process_exception(exc: Exception) -> Exception | None:
    """Our reconnect rule: a refused handshake (401/403/404) is fatal; everything
    websockets deems transient (refused or reset connections, a hub that closes
    while starting, 5xx) is retried with its backoff."""
    if isinstance(exc, InvalidStatus) and exc.response.status_code in (401, 403, 404):
        return FatalError(
            f"the hub refused the publish socket ({exc.response.status_code}): check "
            "the producer key and that the producer is enabled"
        )
    if isinstance(exc, ConnectionError):
        return None
    return websockets_process_exception(exc)


async def sync_definition(
    config: WorkerConfig, analysis: Analysis | None, stop: asyncio.Event
) -> tuple[Analysis | None, bool]:
    """Fetch the definition; rebuild or adjust the analysis when it changed.

    Returns the analysis and whether its pairs or frames changed.
    """
    definition = await definition_with_retry(config, stop)
    if definition is None or (analysis and definition == analysis.definition):
        return analysis, False
    if analysis is None or not same_but_pairs(definition, analysis.definition):
        logger.info(
            "producer %s: %s on %s, %d pairs, strategy %s, source %s",
            definition.name,
            definition.timeframe,
            definition.candle_type,
            len(definition.pairs),
            definition.strategy,
            definition.source,
        )
        fresh = await asyncio.to_thread(Analysis, definition)
        await asyncio.to_thread(fresh.load_pairs, fresh.pairs)
        return fresh, True
    added = [p for p in definition.pairs if p not in analysis.candles]
    logger.info(
        "producer %s: pairs changed (%d now, %d new)",
        definition.name,
        len(definition.pairs),
        len(added),
    )
    analysis.definition = definition
    for gone in set(analysis.candles) - set(definition.pairs):
        del analysis.candles[gone], analysis.analysed[gone], analysis.la[gone]
    await asyncio.to_thread(analysis.load_pairs, added)
    return analysis, True


async def refresh(
    config: WorkerConfig, analysis: Analysis, stop: asyncio.Event
) -> tuple[Analysis, bool]:
    """Pick up admin edits; a definition that cannot run keeps the running one."""
    try:
        fresh, changed = await sync_definition(config, analysis, stop)
    except (StrategyError, SourceError) as exc:
        logger.error("the new definition cannot run (%s); keeping the old one", exc)
        return analysis, False
    return fresh or analysis, changed


def same_but_pairs(one: ProducerDefinition, other: ProducerDefinition) -> bool:
    """Whether only the pairs differ: the running analysis can follow the change."""
    return replace(one, pairs=()) == replace(other, pairs=())


async def run(config: WorkerConfig, stop: asyncio.Event) -> int:
    """Run until ``stop`` is set; returns the process exit status."""
    try:
        return await _run(config, stop)
    except FatalError as exc:
        logger.error("producer worker %s stopped: %s", config.name, exc)
        return 2


async def _run(config: WorkerConfig, stop: asyncio.Event) -> int:
    logger.info("producer worker %s starting; hub %s", config.name, config.hub_url)
    definition = await definition_with_retry(config, stop)
    if definition is not None and definition.relays:
        from producers import relay  # it builds on this module

        return await relay.run(config, definition, stop)
    try:
        analysis, _ = await sync_definition(config, None, stop)
    except (StrategyError, SourceError) as exc:  # the user must fix the definition
        raise FatalError(str(exc)) from exc
    if analysis is None:
        return 0
    async for ws in hub_connections(config, stop):
        try:
            analysis = await serve(ws, config, analysis, stop)
        except (ConnectionClosed, ConnectionError, TimeoutError) as exc:
            log_lost_hub(exc)
            continue
        await ws.close(1001, "producer worker stopping")
        break
    logger.info("producer worker %s stopped", config.name)
    return 0


def log_lost_hub(exc: Exception) -> None:
    """Say why the publish socket ended; a key the hub ended is said in words."""
    closed = exc.rcvd if isinstance(exc, ConnectionClosed) else None
    if closed is not None and closed.code in CLOSE_KEY_ENDED:
        logger.error(
            "the hub closed the publish socket: %s. Issue a new producer key in the "
            "admin and restart this worker with it (a reconnect with this key is "
            "refused, which stops the worker)",
            closed.reason or f"code {closed.code}",
        )
        return
    logger.warning("lost the hub (%s); reconnecting", exc)


async def hub_connections(
    config: WorkerConfig, stop: asyncio.Event
) -> AsyncIterator[ClientConnection]:
    """Publish connections to the hub, one after another, until ``stop`` is set.

    websockets' own loop retries with a jittered backoff, but never looks at
    ``stop``: a SIGTERM while the hub is away would wait for the hub. Every wait for
    the next connection races the stop, so the worker always ends at once.
    """
    attempts = aiter(
        connect(
            config.publish_url,
            additional_headers={"Authorization": f"Bearer {config.key}"},
            max_size=config.message_size_limit,
            compression=None,  # frames go to one hub; deflate would only cost CPU
            process_exception=process_exception,
            open_timeout=10,
        )
    )
    loop = asyncio.get_running_loop()
    backoff = Backoff(config.backoff_initial, config.backoff_max)
    while not stop.is_set():
        attempt = asyncio.ensure_future(anext(attempts))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({attempt, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not attempt.done():
            attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)
            return
        ws = attempt.result()
        logger.info("connected to the hub at %s", config.publish_url)
        opened = loop.time()
        yield ws
        # websockets backs off only between failed attempts. A hub that accepts
        # and then drops the socket (its Redis is down) would get the whole
        # history again every second: back off after short-lived connections too.
        lived = loop.time() - opened
        if lived >= STABLE_SECONDS:
            backoff.reset()
            continue
        delay = backoff.next()
        logger.warning(
            "the hub dropped the connection after %.1f s; reconnecting in %.1f s",
            lived,
            delay,
        )
        if await wait_or_stop(stop, delay):
            return


async def wait_while_open(
    ws: ClientConnection, stop: asyncio.Event, seconds: float
) -> bool:
    """Sleep up to ``seconds``; True when stop was set.

    Raises ConnectionClosed as soon as the hub goes away, so a restarted hub gets
    the history back at once rather than at the next candle close (up to a whole
    timeframe later).
    """
    stopped = asyncio.ensure_future(stop.wait())
    closed = asyncio.ensure_future(ws.wait_closed())
    try:
        await asyncio.wait(
            {stopped, closed},
            timeout=max(seconds, 0),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        stopped.cancel()
        closed.cancel()
    if stop.is_set():
        return True
    if closed.done() and not closed.cancelled():
        raise ws.protocol.close_exc  # with the hub's close code and reason
    return False


async def serve(
    ws, config: WorkerConfig, analysis: Analysis, stop: asyncio.Event
) -> Analysis:
    publisher = Publisher(ws)
    await publish_history(publisher, analysis)
    refreshed = asyncio.get_running_loop().time()
    while not stop.is_set():
        # A little past the close, so the source's clock has surely passed it.
        wait = analysis.source.seconds_until_next_close() + 0.02
        if await wait_while_open(ws, stop, min(wait, CONFIG_REFRESH_SECONDS)):
            break
        await tick(publisher, analysis)
        if asyncio.get_running_loop().time() - refreshed >= CONFIG_REFRESH_SECONDS:
            refreshed = asyncio.get_running_loop().time()
            analysis, changed = await refresh(config, analysis, stop)
            if changed:
                await publish_history(publisher, analysis)
    return analysis
