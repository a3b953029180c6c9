"""The producer worker: candles in, strategy run once, analysed rows out to the hub.

It reads its definition from the hub's HTTP API (so it can run on another host and
imports no ORM), publishes the whole history on every connection (a restarted hub
has lost nothing for long), then one tick message per new candle for all pairs.

A worker with a name (``--worker-name``, by default host:pid) is one of its
producer's pool: it publishes only the pairs the hub assigns it, and takes over a
lost worker's pairs when the hub says so, their history first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pandas as pd
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.client import process_exception as websockets_process_exception
from websockets.exceptions import ConnectionClosed, InvalidStatus

from controlplane.lib import contracts
from controlplane.lib.backoff import Backoff
from controlplane.lib.contracts import AnalysisProcess, ProducerDefinition
from controlplane.lib.frames import compacted
from controlplane.lib.hubclient import FatalError, call_api, until_reached, wait_or_stop
from controlplane.lib.wire import publish
from controlplane.lib.wire.columns import Key, ProtocolError
from producers.analyser import Analysed, AnalyserSpec, PairAnalyser
from producers.pool import AnalysisPool
from producers.sources import CandleSource, Clock, SourceError, build_source
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
    workers: int = 1  # analysis processes; 1: in the worker's own process
    backoff_max: float = 60.0
    worker_name: str | None = None  # one of the producer's pool; None: all pairs

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


class InProcess:
    """The analysis in the worker's own process (``--workers 1``), as a pool's
    stand-in: one analyser for all pairs, run in a thread."""

    def __init__(self, analyser: PairAnalyser) -> None:
        self.analyser = analyser
        self.pairs: list[str] = []
        self.seconds: float | None = None

    def assign(self, pairs: list[str]) -> None:
        for gone in set(self.analyser.candles) - set(pairs):
            self.analyser.drop(gone)
        self.pairs = list(pairs)

    async def run(self, kind: str, batch: dict[str, pd.DataFrame]) -> list[Analysed]:
        done = await asyncio.to_thread(self.analyser.run, kind, batch)
        if kind == "advance":
            self.seconds = done.seconds
        return done.outcomes

    def status(self) -> list[AnalysisProcess]:
        return [
            {
                "index": 0,
                "pid": os.getpid(),
                "pairs": list(self.pairs),
                "seconds": self.seconds,
                "restarts": 0,
                "state": "running",
            }
        ]

    def close(self) -> None:
        pass


class Analysis:
    """The producer's analysed frames per pair, and what computes them.

    The source (and its clock) lives here; the candle windows live with the
    analyser, in this process or in the pool's processes.
    """

    def __init__(
        self,
        definition: ProducerDefinition,
        workers: int = 1,
        clock: Clock = time.time,
    ) -> None:
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
            clock=clock,
        )
        self.analysed: dict[str, pd.DataFrame] = {}
        self.la: dict[str, datetime] = {}
        # A pool worker's share of the pairs, as the hub last said (None: all).
        self.assigned: list[str] | None = None
        # The newest candle handed to the analyser, per pair.
        self.last: dict[str, pd.Timestamp] = {}
        self.tick_seconds: float | None = None
        if definition.resume is not None:
            self._resume(definition.resume)
        spec = AnalyserSpec(
            definition.strategy, self.timeframe, self.candle_type, self.history
        )
        self.runner: InProcess | AnalysisPool
        if workers > 1:
            self.runner = AnalysisPool(spec, workers, self.windows)
            self.runner.start()
        else:
            self.runner = InProcess(PairAnalyser(spec, self.strategy))

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
        """The pairs this worker analyses: the definition's, or its share of them."""
        if self.assigned is None:
            return list(self.definition.pairs)
        mine = set(self.assigned)
        return [pair for pair in self.definition.pairs if pair in mine]

    def key(self, pair: str) -> Key:
        return (pair, self.timeframe, self.candle_type)

    def keep(self) -> int:
        return self.history + self.strategy.startup_candle_count

    def windows(self, pairs: list[str]) -> dict[str, pd.DataFrame]:
        """The pairs' whole candle windows from the source, up to the newest
        candle already handed to the analyser (as of now for a new pair).

        A replaced analysis process gets the very window the dead one held, so
        it computes the rows the dead one would have, bit for bit; candles that
        closed meanwhile come with the next candle, as for every other pair.
        """
        return {pair: self._window(pair) for pair in pairs}

    def _window(self, pair: str) -> pd.DataFrame:
        last = self.last.get(pair)
        if last is None:
            return self.source.history(pair, self.keep())
        later = len(self.source.candles_after(pair, last))
        window = self.source.history(pair, self.keep() + later)
        window = window[window["date"] <= last]
        return window.iloc[-self.keep() :].reset_index(drop=True)

    def new_candles(self) -> dict[str, pd.DataFrame]:
        """Every pair's closed candles after the last one analysed."""
        batch = {}
        for pair in self.pairs:
            after = self.last.get(pair, pd.Timestamp(0, tz="UTC"))
            new = self.source.candles_after(pair, after)
            if not new.empty:
                batch[pair] = new
                self.last[pair] = new["date"].iloc[-1]
        return batch

    async def load_pairs(self, pairs: list[str]) -> None:
        """Analyse the pairs' windows whole.

        Raises:
            StrategyError: the strategy failed on one of them.
        """
        self.runner.assign(self.pairs)
        if not pairs:
            return
        windows = await asyncio.to_thread(self.windows, pairs)
        for outcome in await self.runner.run("load", windows):
            if outcome.error is not None:
                raise StrategyError(f"{outcome.pair}: {outcome.error}")
            self._keep_full(outcome)

    def forget(self, pairs: set[str]) -> None:
        for pair in pairs:
            del self.analysed[pair], self.la[pair]
            self.last.pop(pair, None)
        self.runner.assign(self.pairs)

    async def advance(self) -> dict[str, pd.DataFrame]:
        """Analyse every pair's new candles; their new rows, in the pairs' order.

        One pair's failure does not stop the others; it is logged and the pair
        goes on with the next candle.
        """
        started = time.perf_counter()
        batch = await asyncio.to_thread(self.new_candles)
        fresh: dict[str, pd.DataFrame] = {}
        for outcome in await self.runner.run("advance", batch) if batch else []:
            if outcome.error is not None:
                logger.error("%s: %s", outcome.pair, outcome.error)
            elif outcome.full:
                rows = self._new_rows(outcome)
                if len(rows):
                    fresh[outcome.pair] = rows
            else:
                assert outcome.rows is not None and outcome.la is not None
                self._append(outcome.pair, outcome.rows, outcome.la)
                fresh[outcome.pair] = outcome.rows
        if batch:
            self.tick_seconds = time.perf_counter() - started
        return {pair: fresh[pair] for pair in self.pairs if pair in fresh}

    def _keep_full(self, outcome: Analysed) -> None:
        assert outcome.rows is not None and outcome.la is not None
        self.analysed[outcome.pair] = outcome.rows
        self.la[outcome.pair] = outcome.la
        if len(outcome.rows):
            self.last[outcome.pair] = outcome.rows["date"].iloc[-1]

    def _new_rows(self, outcome: Analysed) -> pd.DataFrame:
        """From a re-analysed window, the rows after those already published: the
        published ones stay as consumers hold them."""
        assert outcome.rows is not None and outcome.la is not None
        pair, rows = outcome.pair, outcome.rows
        published = self.analysed.get(pair)
        if published is not None and len(published):
            newer = rows["date"] > published["date"].iloc[-1]
            rows = rows[newer].reset_index(drop=True)
        if len(outcome.rows):
            self.last[pair] = outcome.rows["date"].iloc[-1]
        if len(rows):
            self._append(pair, rows, outcome.la)
        return rows

    def _append(self, pair: str, rows: pd.DataFrame, la: datetime) -> None:
        published = pd.concat([self.analysed[pair], rows], ignore_index=True)
        kept = published.iloc[-self.history :].reset_index(drop=True)
        self.analysed[pair] = compacted(kept)
        self.la[pair] = la

    def processes(self) -> list[AnalysisProcess]:
        return self.runner.status()

    def close(self) -> None:
        self.runner.close()

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
    """The publish socket's two directions: ``publish`` sends and awaits its answer;
    one reader task takes every message of the hub's, answers and assign messages
    (which come at any time, to a pool worker) alike."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seq = 0
        self.answer: asyncio.Future | None = None  # of the publish in flight
        self.assigned: list[str] | None = None  # the newest assign not yet applied
        self.assign_came = asyncio.Event()
        self.failure: Exception | None = None
        self.reader = asyncio.create_task(self._read())

    async def publish(self, frames: list, whitelist: list[str] | None = None) -> None:
        self.raise_failure()
        self.seq += 1
        self.answer = asyncio.get_running_loop().create_future()
        await self.ws.send(publish.publish_message(self.seq, frames, whitelist))
        try:
            reply = await asyncio.wait_for(asyncio.shield(self.answer), ACK_TIMEOUT)
        finally:
            self.answer = None
        if reply["type"] == "error":
            # The hub kept serving; this message (or part of it) was refused.
            logger.error("the hub refused publish %s: %s", self.seq, reply["data"])
        elif reply["seq"] != self.seq:
            raise ConnectionError(f"the hub acked {reply['seq']}, expected {self.seq}")

    def take_assignment(self) -> list[str] | None:
        """The pairs of the newest assign message since the last call, if any."""
        pairs, self.assigned = self.assigned, None
        self.assign_came.clear()
        return pairs

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                reply = publish.parse_hub_reply(text)
                if reply["type"] == "assign":
                    self.assigned = reply["data"]["pairs"]
                    self.assign_came.set()
                elif self.answer is not None and not self.answer.done():
                    self.answer.set_result(reply)
                elif reply["type"] == "error":  # a refusal the hub closes after
                    logger.error("the hub says: %s", reply["data"])
                else:
                    raise ProtocolError(f"the hub acked {reply['seq']} unasked")
            self._fail(self.ws.protocol.close_exc)
        except ProtocolError as exc:
            self._fail(ConnectionError(str(exc)))
        except ConnectionClosed as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.failure = exc
        self.assign_came.set()  # a waiting loop wakes, and raises
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def close(self) -> None:
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


async def publish_history(
    publisher: Publisher, analysis: Analysis, pairs: list[str] | None = None
) -> None:
    """The pairs' full frames (all of this worker's by default), one message each
    (each stays under the size limit); the first carries the definition's
    whitelist (a pool worker's too: the feed's whitelist is the whole producer's)."""
    pairs = analysis.pairs if pairs is None else pairs
    whitelist = list(analysis.definition.pairs)
    sent: list[str] = []
    for pair in pairs:
        if publisher.assigned is not None and pair not in publisher.assigned:
            continue  # the hub moved it meanwhile: it would refuse the frame
        await publisher.publish(
            [analysis.full_frame(pair)], whitelist=None if sent else whitelist
        )
        sent.append(pair)
    pairs = sent
    newest = max(
        (
            analysis.analysed[p]["date"].iloc[-1]
            for p in pairs
            if len(analysis.analysed[p])
        ),
        default=None,
    )
    if not pairs:
        return
    logger.info(
        "published %d rows of history for %d pairs, up to %s",
        analysis.history,
        len(pairs),
        "no candle" if newest is None else newest.strftime("%Y-%m-%d %H:%M"),
    )


async def tick(
    publisher: Publisher, analysis: Analysis, closed_at: float | None = None
) -> None:
    """Analyse every pair's new candles; publish them as one message.

    ``closed_at``: the wall time the candle closed, for the log line.

    One message per candle rather than one per pair as each is analysed: the hub
    then sends each consumer one message per candle, not one per pair.
    """
    fresh = await analysis.advance()
    frames = [
        publish.publish_frame(
            analysis.key(pair),
            rows,
            analysis.la[pair],
            full=False,
            new_candle=True,
        )
        for pair, rows in fresh.items()
    ]
    if frames:
        await publisher.publish(frames)
        at = frames[0]["columns"].index("date")
        newest = max(frame["rows"][-1][at] for frame in frames)
        timing = ""
        if closed_at is not None and analysis.tick_seconds is not None:
            timing = (
                f", {time.time() - closed_at:.3f} s after the close "
                f"(analysis {analysis.tick_seconds:.3f} s)"
            )
        logger.info(
            "candle %s closed: published %d of %d pairs%s",
            _minute(newest),
            len(frames),
            len(analysis.pairs),
            timing,
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
            "the producer key, that the producer is enabled, and the worker name"
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
        workers = min(config.workers, max(1, len(definition.pairs)))
        fresh = await asyncio.to_thread(Analysis, definition, workers)
        if config.worker_name is not None:
            # A pool worker's share comes from the hub; until then, no pair.
            fresh.assigned = [] if analysis is None else analysis.assigned
        try:
            await fresh.load_pairs(fresh.pairs)
        except BaseException:
            fresh.close()
            raise
        logger.info(
            "analysing %s %s",
            f"{len(fresh.pairs)} pairs"
            if fresh.assigned is None
            else f"the pairs the hub assigns worker {config.worker_name}",
            f"on {workers} processes" if workers > 1 else "in this process",
        )
        if analysis is not None:
            analysis.close()
        return fresh, True
    analysis.definition = definition
    added = [p for p in analysis.pairs if p not in analysis.analysed]
    logger.info(
        "producer %s: pairs changed (%d now, %d new here)",
        definition.name,
        len(definition.pairs),
        len(added),
    )
    analysis.forget(set(analysis.analysed) - set(analysis.pairs))
    await analysis.load_pairs(added)
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

        # A relay follows one bot and publishes every pair it whitelists: it has
        # no share to be assigned, so it never joins the pool.
        return await relay.run(replace(config, worker_name=None), definition, stop)
    try:
        analysis, _ = await sync_definition(config, None, stop)
    except (StrategyError, SourceError) as exc:  # the user must fix the definition
        raise FatalError(str(exc)) from exc
    if analysis is None:
        return 0
    reporter = StatusReporter(config)
    running = Running(analysis)
    try:
        async for ws in hub_connections(config, stop):
            try:
                await serve(ws, config, running, stop, reporter)
            except (ConnectionClosed, ConnectionError, TimeoutError) as exc:
                replaced_by_namesake(exc)
                log_lost_hub(exc)
                continue
            await ws.close(1001, "producer worker stopping")
            break
    finally:
        await reporter.close()
        running.analysis.close()
    logger.info("producer worker %s stopped", config.name)
    return 0


def replaced_by_namesake(exc: Exception) -> None:
    """A live worker replaced by a newer socket of its name shares its name with
    another worker: reconnecting would take the name back and forth for good.

    Raises:
        FatalError: the hub closed this worker's socket with publish.CLOSE_REPLACED.
    """
    closed = exc.rcvd if isinstance(exc, ConnectionClosed) else None
    if closed is not None and closed.code == publish.CLOSE_REPLACED:
        raise FatalError(
            f"{closed.reason}. Another producer worker runs with this worker's name: "
            "give each worker of the pool its own --worker-name"
        )


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
    headers = {"Authorization": f"Bearer {config.key}"}
    if config.worker_name is not None:
        headers[publish.WORKER_HEADER] = config.worker_name
    attempts = aiter(
        connect(
            config.publish_url,
            additional_headers=headers,
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
    ws: ClientConnection,
    stop: asyncio.Event,
    seconds: float,
    woken: asyncio.Event | None = None,
) -> bool:
    """Sleep up to ``seconds``, or until ``woken`` is set; True when stop was set.

    Raises ConnectionClosed as soon as the hub goes away, so a restarted hub gets
    the history back at once rather than at the next candle close (up to a whole
    timeframe later).
    """
    stopped = asyncio.ensure_future(stop.wait())
    closed = asyncio.ensure_future(ws.wait_closed())
    waiters = {stopped, closed}
    if woken is not None:
        waiters.add(asyncio.ensure_future(woken.wait()))
    try:
        await asyncio.wait(
            waiters, timeout=max(seconds, 0), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for waiter in waiters:
            waiter.cancel()
    if stop.is_set():
        return True
    if closed.done() and not closed.cancelled():
        raise ws.protocol.close_exc  # with the hub's close code and reason
    return False


async def wait_for_work(
    publisher: Publisher, stop: asyncio.Event, seconds: float
) -> bool:
    """``wait_while_open``, also ended by an assign message; True when stop was set.

    Raises:
        ConnectionClosed, ConnectionError: the hub went away, or broke the protocol.
    """
    try:
        stopped = await wait_while_open(
            publisher.ws, stop, seconds, publisher.assign_came
        )
    except ConnectionClosed:
        publisher.raise_failure()  # the reader's own words, when it has some
        raise
    if not stopped:
        publisher.raise_failure()
    return stopped


async def take_share(
    publisher: Publisher, analysis: Analysis, pairs: list[str], *, whole: bool
) -> None:
    """Apply the hub's assign: forget the pairs this worker lost, load the ones it
    gained and publish their history at once, before their next candle (with
    ``whole``, the first assign on a connection: the history of all its pairs).

    Raises:
        FatalError: the strategy fails on a new pair (as it would at start).
    """
    before = set(analysis.pairs)
    analysis.assigned = list(pairs)
    lost = before - set(analysis.pairs)
    analysis.forget(lost & set(analysis.analysed))
    gained = [p for p in analysis.pairs if p not in analysis.analysed]
    try:
        await analysis.load_pairs(gained)
    except StrategyError as exc:
        raise FatalError(str(exc)) from exc
    logger.info(
        "the hub assigns this worker %d of %d pairs (%d new, %d given up)",
        len(analysis.pairs),
        len(analysis.definition.pairs),
        len(gained),
        len(lost),
    )
    await publish_history(publisher, analysis, analysis.pairs if whole else gained)


@dataclass
class Running:
    """The analysis in use: a refresh may replace it while a connection serves."""

    analysis: Analysis


async def serve(
    ws,
    config: WorkerConfig,
    running: Running,
    stop: asyncio.Event,
    reporter: StatusReporter,
) -> None:
    publisher = Publisher(ws)
    try:
        await _serve(publisher, config, running, stop, reporter)
    finally:
        await publisher.close()


async def _serve(
    publisher: Publisher,
    config: WorkerConfig,
    running: Running,
    stop: asyncio.Event,
    reporter: StatusReporter,
) -> None:
    # A pool worker publishes nothing before the hub's first assign on this
    # connection; then the whole history of its share (a restarted hub lost it).
    waiting = config.worker_name is not None
    if not waiting:
        await publish_history(publisher, running.analysis)
        reporter.report(running.analysis)
    refreshed = asyncio.get_running_loop().time()
    while not stop.is_set():
        # A little past the close, so the source's clock has surely passed it.
        wait = running.analysis.source.seconds_until_next_close() + 0.02
        closes = wait <= CONFIG_REFRESH_SECONDS
        closed_at = time.time() + wait - 0.02 if closes else None
        if await wait_for_work(publisher, stop, min(wait, CONFIG_REFRESH_SECONDS)):
            break
        pairs = publisher.take_assignment()
        if pairs is not None:
            await take_share(publisher, running.analysis, pairs, whole=waiting)
            waiting, closed_at = False, None
        if waiting:
            continue
        # Right after an assign too: a close that passed while the new pairs
        # loaded is published now, not a whole candle later.
        await tick(publisher, running.analysis, closed_at)
        reporter.report(running.analysis)
        if asyncio.get_running_loop().time() - refreshed >= CONFIG_REFRESH_SECONDS:
            refreshed = asyncio.get_running_loop().time()
            running.analysis, changed = await refresh(config, running.analysis, stop)
            if changed:
                await publish_history(publisher, running.analysis)


class StatusReporter:
    """POSTs the analysis processes' state to the hub after each candle, in the
    background so that no publish waits for it; one report in flight at most."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.task: asyncio.Task | None = None
        self.failing = False

    def report(self, analysis: Analysis) -> None:
        if self.task is not None and not self.task.done():
            return  # the hub is slow: the next candle's report says it all
        status: contracts.AnalysisStatus = {
            "workers": len(analysis.processes()),
            "candle_seconds": analysis.tick_seconds,
            "processes": analysis.processes(),
        }
        if self.config.worker_name is not None:
            status["worker"] = self.config.worker_name
        self.task = asyncio.create_task(self._send(json.dumps(status).encode()))

    async def _send(self, body: bytes) -> None:
        try:
            await asyncio.to_thread(
                call_api,
                self.config.status_url,
                self.config.key,
                body,
                who="the hub",
                key_name="producer key",
            )
        except (OSError, FatalError) as exc:
            if not self.failing:
                logger.warning("cannot report the analysis processes: %s", exc)
            self.failing = True
        else:
            if self.failing:
                logger.info("the hub takes the analysis processes' reports again")
            self.failing = False

    async def close(self) -> None:
        if self.task is not None:
            await asyncio.wait({self.task}, timeout=2)
