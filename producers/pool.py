"""Analysis processes for the producer worker (``runproducer --workers N``, N > 1).

Each process owns a fixed set of pairs and keeps their candles, so only the new
candles cross the process boundary and only the analysed new rows come back (a
pair's whole window crosses once, when it is loaded). A process that dies is
replaced and its pairs are analysed again from the source: nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import pandas as pd

from controlplane.lib.contracts import AnalysisProcess
from producers.analyser import Analysed, AnalyserSpec, Batch, PairAnalyser
from producers.strategy import StrategyError

logger = logging.getLogger(__name__)

# spawn: a child starts from a clean interpreter, never a copy of the worker's
# event loop, threads and sockets (which fork would duplicate).
CONTEXT = multiprocessing.get_context("spawn")
START_TIMEOUT = 120.0  # importing pandas and the strategy on a busy machine
STOP_TIMEOUT = 5.0
# A process that dies again while re-analysing its pairs is left for the next
# candle rather than restarted in a loop (a strategy that kills the interpreter).
RESTARTS_PER_RUN = 2

Reload = Callable[[list[str]], dict[str, pd.DataFrame]]


def pin(pairs: list[str], count: int, current: dict[str, int]) -> dict[str, int]:
    """Each pair's process: pairs keep theirs; new pairs go to the least loaded.

    A pair never moves while it stays in the definition, so its candles stay where
    they are; in the definition's order, new pairs fill up the processes evenly.
    """
    pinned = {p: current[p] for p in pairs if p in current and current[p] < count}
    load = [0] * count
    for index in pinned.values():
        load[index] += 1
    for pair in pairs:
        if pair not in pinned:
            index = min(range(count), key=lambda i: (load[i], i))
            pinned[pair] = index
            load[index] += 1
    return pinned


def _serve(conn: Connection, spec: AnalyserSpec) -> None:
    """An analysis process: answer batches until the worker closes the pipe."""
    # Ctrl-C reaches the whole process group; the worker decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        analyser = PairAnalyser(spec)
    except StrategyError as exc:
        conn.send(("error", str(exc)))
        return
    conn.send(("ready", None))
    while True:
        try:
            kind, batch = conn.recv()
        except (EOFError, OSError):
            return  # the worker stopped or died
        if kind == "drop":
            for pair in batch:
                analyser.drop(pair)
            continue
        conn.send(analyser.run(kind, batch))


class Child:
    """The worker's end of one analysis process."""

    def __init__(self, index: int, spec: AnalyserSpec) -> None:
        self.index = index
        self.spec = spec
        self.pairs: list[str] = []
        self.seconds: float | None = None
        self.restarts = 0
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None

    def start(self) -> None:
        ours, theirs = CONTEXT.Pipe()
        self.process = CONTEXT.Process(
            target=_serve,
            args=(theirs, self.spec),
            name=f"candlecast-analysis-{self.index}",
            daemon=True,  # never outlives the worker
        )
        self.process.start()
        theirs.close()
        self.conn = ours

    def wait_ready(self) -> None:
        """Block until the process has loaded the strategy.

        Raises:
            StrategyError: the strategy cannot be loaded there.
            EOFError: the process died while starting.
        """
        assert self.conn is not None
        if not self.conn.poll(START_TIMEOUT):
            raise EOFError(f"it did not start within {START_TIMEOUT:.0f} s")
        kind, text = self.conn.recv()
        if kind == "error":
            raise StrategyError(text)

    def call(self, kind: str, batch: dict[str, pd.DataFrame]) -> Batch:
        """Send a batch and wait for its outcomes (in a thread of the worker).

        Raises:
            EOFError, OSError: the process died.
        """
        assert self.conn is not None
        self.conn.send((kind, batch))
        return self.conn.recv()

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def how_it_ended(self) -> str:
        if self.process is None:
            return "it never started"
        self.process.join(1.0)
        code = self.process.exitcode
        if code is None:
            return "its pipe broke while it still ran"
        if code < 0:
            try:
                return f"killed by signal {code * -1} ({signal.Signals(-code).name})"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with status {code}"

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()  # the process sees EOF and returns
            self.conn = None
        if self.process is not None:
            self.process.join(STOP_TIMEOUT)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(STOP_TIMEOUT)
            self.process.close()
            self.process = None

    def status(self) -> AnalysisProcess:
        return {
            "index": self.index,
            "pid": self.process.pid if self.alive() and self.process else None,
            "pairs": list(self.pairs),
            "seconds": self.seconds,
            "restarts": self.restarts,
            "state": "running" if self.alive() else "dead",
        }


class AnalysisPool:
    """N analysis processes, each pair pinned to one of them.

    ``reload(pairs)`` returns those pairs' candle windows from the source; the
    pool calls it to refill a process that replaced a dead one.
    """

    def __init__(self, spec: AnalyserSpec, workers: int, reload: Reload) -> None:
        self.spec = spec
        self.reload = reload
        self.processes = [Child(i, spec) for i in range(workers)]
        self.pinned: dict[str, int] = {}
        self.threads = ThreadPoolExecutor(workers, "candlecast-analysis")

    def start(self) -> None:
        """Start every process and wait until each has loaded the strategy.

        Raises:
            StrategyError: the strategy cannot be loaded in an analysis process.
        """
        for process in self.processes:
            process.start()
        try:
            for process in self.processes:
                try:
                    process.wait_ready()
                except EOFError as exc:
                    raise StrategyError(
                        f"analysis process {process.index} failed to start "
                        f"({process.how_it_ended()}; {exc})"
                    ) from None
        except StrategyError:
            self.close()
            raise
        logger.info(
            "%d analysis processes started (pids %s)",
            len(self.processes),
            ", ".join(str(p.process.pid) for p in self.processes if p.process),
        )

    def assign(self, pairs: list[str]) -> None:
        """Pin ``pairs`` (the definition's, in order); pairs no longer there leave
        their process."""
        gone = [p for p in self.pinned if p not in pairs]
        self.pinned = pin(pairs, len(self.processes), self.pinned)
        for process in self.processes:
            process.pairs = [p for p in pairs if self.pinned[p] == process.index]
            leaving = [p for p in gone if p not in process.pairs]
            if leaving and process.alive() and process.conn is not None:
                try:
                    process.conn.send(("drop", leaving))
                except OSError:
                    pass  # found dead, and replaced, at its next batch

    async def run(self, kind: str, batch: dict[str, pd.DataFrame]) -> list[Analysed]:
        """``load`` or ``advance`` the batch's pairs on their processes at once.

        A process found dead is replaced first; one that dies on the batch is
        replaced and all its pairs are loaded again from the source, so its
        outcomes are whole windows (``Analysed.full``) rather than new rows.
        """
        parts: dict[int, dict[str, pd.DataFrame]] = {}
        for pair, candles in batch.items():
            parts.setdefault(self.pinned[pair], {})[pair] = candles
        results = await asyncio.gather(
            *(
                self._run_on(self.processes[index], kind, part)
                for index, part in parts.items()
            )
        )
        by_pair = {o.pair: o for outcomes in results for o in outcomes}
        return [by_pair[p] for p in self.pinned if p in by_pair]

    async def _run_on(
        self, process: Child, kind: str, part: dict[str, pd.DataFrame]
    ) -> list[Analysed]:
        loop = asyncio.get_running_loop()
        if not process.alive():
            return await self._replace(process, "it was found dead")
        try:
            batch = await loop.run_in_executor(self.threads, process.call, kind, part)
        except (EOFError, OSError):
            return await self._replace(process, "it died analysing")
        if kind == "advance":
            process.seconds = batch.seconds
        return batch.outcomes

    async def _replace(self, process: Child, when: str) -> list[Analysed]:
        loop = asyncio.get_running_loop()
        for attempt in range(RESTARTS_PER_RUN):
            logger.error(
                "analysis process %d (%d pairs) is gone: %s, %s; starting a new one "
                "and analysing its pairs again from the source",
                process.index,
                len(process.pairs),
                process.how_it_ended(),
                when,
            )
            process.stop()
            process.restarts += 1
            started = time.perf_counter()
            try:
                await loop.run_in_executor(self.threads, self._restart, process)
                windows = await asyncio.to_thread(self.reload, process.pairs)
                batch = await loop.run_in_executor(
                    self.threads, process.call, "load", windows
                )
            except (EOFError, OSError):
                when = f"it died again re-analysing (attempt {attempt + 1})"
                continue
            logger.info(
                "analysis process %d replaced (pid %s): %d pairs analysed again in "
                "%.1f s",
                process.index,
                process.process.pid if process.process else "?",
                len(process.pairs),
                time.perf_counter() - started,
            )
            for outcome in batch.outcomes:
                outcome.full = True
            return batch.outcomes
        why = f"analysis process {process.index} keeps dying; retried next candle"
        return [Analysed(p, None, None, why) for p in process.pairs]

    @staticmethod
    def _restart(process: Child) -> None:
        process.start()
        try:
            process.wait_ready()
        except StrategyError as exc:  # it loaded at start: the module changed
            raise OSError(str(exc)) from exc

    def status(self) -> list[AnalysisProcess]:
        return [p.status() for p in self.processes]

    def close(self) -> None:
        """Stop every process (each ends when its pipe closes)."""
        for process in self.processes:
            process.stop()
        self.threads.shutdown(wait=False, cancel_futures=True)
