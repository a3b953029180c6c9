"""Real processes for end-to-end tests: a Stack starts the hub, workers and FreqTrade
bots on free loopback ports with domain verbs, and ends only what it started.

Each Stack has its own database (an SQLite file, or a fresh PostgreSQL database
when DATABASE_URL points at PostgreSQL), its own Redis key prefix when it uses
Redis, and one log file per process, which a failing test prints (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
from websockets.asyncio.client import connect

from controlplane.lib.wire import freqtrade

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "interop"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _postgres_database(url: str) -> tuple[str, str]:
    """A new empty database beside the one in ``url``; returns its URL and name."""
    import psycopg

    name = f"candlecast_e2e_{secrets.token_hex(4)}"
    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}")), admin


def _options(options: dict[str, object]) -> list[str]:
    """Keyword arguments as a harness's flags: min_rows=3 -> --min-rows 3."""
    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value not in (None, False):
            args += [flag, str(value)]
    return args


class Stack:
    def __init__(self, tmp: Path, root: Path = ROOT) -> None:
        """``root``: the source tree whose manage.py runs (a benchmark can compare
        another commit's, extracted elsewhere)."""
        self.tmp = tmp
        self.root = root
        self.port = free_port()
        self.processes: dict[str, subprocess.Popen] = {}
        self._drop_database: tuple[str, str] | None = None
        self._migrated = False
        self.env = {
            **os.environ,
            "CANDLECAST_VAR_DIR": str(tmp / "var"),
            "CANDLECAST_HUB_URL": f"http://127.0.0.1:{self.port}",
            "PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "INFO",
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        }
        database = os.environ.get("DATABASE_URL", "")
        if database.startswith("postgres"):
            self.env["DATABASE_URL"], admin = _postgres_database(database)
            self._drop_database = (admin, self.env["DATABASE_URL"].rsplit("/", 1)[1])
        else:
            self.env["DATABASE_URL"] = f"sqlite:///{tmp / 'e2e.sqlite3'}"
        if os.environ.get("REDIS_URL"):
            self.env["CANDLECAST_REDIS_PREFIX"] = f"cc-e2e-{secrets.token_hex(4)}"

    @property
    def feed_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/message/ws"

    ### Set-up, in Django shells

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(self.root / "manage.py"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def python(self, code: str) -> dict:
        """Run ``code`` in a Django shell; it must print one JSON document."""
        done = self.manage("shell", "-c", code)
        return json.loads(done.stdout.strip().splitlines()[-1])

    def setup(self, code: str) -> dict:
        """Migrate (once), then run ``code`` as ``python`` does: the test's rows."""
        if not self._migrated:
            self.manage("migrate")
            self._migrated = True
        return self.python(code)

    def redis(self) -> None:
        """Join this stack's processes through Redis: REDIS_URL, else TEST_REDIS_URL,
        else the local default, which the test then requires (it fails, never skips).
        """
        url = (
            os.environ.get("REDIS_URL")
            or os.environ.get("TEST_REDIS_URL")
            or "redis://127.0.0.1:6379/0"
        )
        parts = urlsplit(url)
        try:
            socket.create_connection((parts.hostname, parts.port or 6379), 2).close()
        except OSError as exc:
            raise AssertionError(
                f"hub processes need Redis to share snapshots and a channel layer, "
                f"and nothing answers at {url} ({exc}): start redis-server or set "
                "REDIS_URL"
            ) from None
        self.env["REDIS_URL"] = url
        self.env.setdefault("CANDLECAST_REDIS_PREFIX", f"cc-e2e-{secrets.token_hex(4)}")

    ### Starting processes

    def run(
        self, name: str, argv: list[str], env: dict | None = None, **popen
    ) -> subprocess.Popen:
        """Start ``argv`` as process ``name``; its output goes to ``name``.log."""
        with open(self.tmp / f"{name}.log", "w") as log:
            process = subprocess.Popen(
                argv, env=env, stdout=popen.pop("stdout", log), stderr=log, **popen
            )
        self.processes[name] = process
        return process

    def start(self, name: str, *args: str, env: dict | None = None) -> subprocess.Popen:
        """``manage.py *args`` as process ``name``, with the stack's environment."""
        argv = [sys.executable, str(self.root / "manage.py"), *args]
        return self.run(name, argv, env={**self.env, **(env or {})})

    def hub(self, name: str = "hub", port: int | None = None) -> subprocess.Popen:
        """runhub on ``port`` (the stack's own by default), once it answers HTTP."""
        port = port or self.port
        hub = self.start(name, "runhub", "--port", str(port))
        self.wait_http(f"http://127.0.0.1:{port}/admin/login/", hub)
        return hub

    start_hub = hub  # the name benchmarks/ use

    def _worker(self, env: dict, role: str, name: str, key: str, hub: int | None):
        """The environment of a worker: its key in a file, and its hub."""
        key_file = self.tmp / f"{name}.key"
        key_file.write_text(key)
        env = {**env, f"CANDLECAST_{role}_KEY_FILE": str(key_file)}
        if hub:
            env["CANDLECAST_HUB_URL"] = f"http://127.0.0.1:{hub}"
        return env

    def producer(
        self,
        producer: str,
        key: str,
        *,
        name: str = "producer",
        hub: int | None = None,
        history: bool = False,
        env: dict | None = None,
        workers: int | None = None,
        worker_name: str | None = None,
    ) -> subprocess.Popen:
        """``runproducer producer`` with ``key``, publishing to ``hub`` (a port);
        ``history``: return once it published its history; ``workers``: its
        analysis processes (the command's default: one per core); ``worker_name``:
        its name in the producer's pool (the command's default: host:pid)."""
        env = self._worker(env or {}, "PRODUCER", name, key, hub)
        args = ["--workers", str(workers)] if workers else []
        args += ["--worker-name", worker_name] if worker_name else []
        process = self.start(name, "runproducer", producer, *args, env=env)
        if history:
            self.wait_log(name, "rows of history")
        return process

    def consumer(
        self,
        consumer: str,
        key: str,
        *,
        name: str = "consumer",
        hub: int | None = None,
        dump: Path | None = None,
        strategy: str | None = None,
        env: dict | None = None,
    ) -> subprocess.Popen:
        """``runconsumer consumer`` with ``key``; ``dump``: where it writes its
        frames at exit; ``strategy``: a dotted class path."""
        args = ["runconsumer", consumer]
        args += ["--dump", str(dump)] if dump else []
        args += ["--strategy", strategy] if strategy else []
        env = self._worker(env or {}, "CONSUMER", name, key, hub)
        return self.start(name, *args, env=env)

    def freqtrade_producer(self, name: str, token: str, **options: object) -> int:
        """FreqTrade's own producer (tests/interop) until it prints READY; returns
        its port. ``options`` are the harness's flags: rows=500 -> --rows 500."""
        argv = [freqtrade_python(), str(HARNESS / "freqtrade_producer.py")]
        argv += ["--token", token, *_options(options)]
        process = self.run(name, argv, stdout=subprocess.PIPE, text=True)
        ready = process.stdout.readline()  # FreqTrade's imports take ~2 s
        assert ready.startswith("READY "), self.log(name)[-4000:]
        return int(ready.split()[1])

    def freqtrade_consumer(
        self, name: str, token: str, port: int | None = None, **options: object
    ) -> subprocess.Popen:
        """FreqTrade's own consumer (tests/interop) following the hub on ``port``;
        it writes its frames to tmp/``name`` unless ``out`` says otherwise."""
        argv = [freqtrade_python(), str(HARNESS / "freqtrade_consumer.py")]
        argv += ["--host", "127.0.0.1", "--port", str(port or self.port)]
        options.setdefault("out", self.tmp / name)
        return self.run(name, argv + ["--token", token, *_options(options)])

    ### Waiting

    def wait_http(
        self, url: str, process: subprocess.Popen, timeout: float = 30
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"process exited early:\n{self.logs()}")
            try:
                urllib.request.urlopen(url, timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{url} did not answer in {timeout} s:\n{self.logs()}")

    def wait_until(
        self, what: str, predicate: Callable[[], object], timeout: float = 30
    ) -> None:
        """Poll ``predicate()`` every 50 ms; fail with every log after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout} s\n{self.logs()}")
            time.sleep(0.05)

    def wait_log(self, name: str, text: str, timeout: float = 30) -> None:
        """Wait until ``text`` is in the log of process ``name``."""
        self.wait_until(
            f"{text!r} in {name}.log", lambda: text in self.log(name), timeout
        )

    def wait_exit(self, name: str, timeout: float = 30) -> int:
        """Wait for process ``name`` to end by itself (SIGKILL after ``timeout``)."""
        process = self.processes.pop(name)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()
        finally:
            if process.stdout:
                process.stdout.close()

    ### Signals

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Send ``sig`` to process ``name`` and wait (SIGKILL after ``timeout``)."""
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        return self.wait_exit(name, 0)

    def pause(self, *names: str) -> None:
        for name in names:
            self.processes[name].send_signal(signal.SIGSTOP)

    def resume(self, *names: str) -> None:
        for name in names:
            self.processes[name].send_signal(signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self, *names: str) -> Iterator[None]:
        """Hold processes (SIGSTOP) so that nothing changes while the test reads."""
        self.pause(*names)
        try:
            yield
        finally:
            self.resume(*names)

    ### What the stack says and serves

    def log(self, name: str) -> str:
        """The log of process ``name`` so far ("" before it wrote anything)."""
        path = self.tmp / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(
            f"----- {path.name}\n{path.read_text()[-6000:]}"
            for path in sorted(self.tmp.glob("*.log"))
        )

    def hub_frames(
        self, token: str, pairs: int, port: int | None = None
    ) -> dict[str, pd.DataFrame]:
        """Every pair's frame as the hub on ``port`` serves it (limit 1500), decoded
        exactly by our own decoder; ``pairs``: how many the producer has."""
        url = f"ws://127.0.0.1:{port or self.port}/api/v1/message/ws?token={token}"
        request = '{"type":"analyzed_df","data":{"limit":1500,"pair":null}}'

        async def fetch() -> dict[str, pd.DataFrame]:
            async with connect(url, max_size=8 << 20) as ws:
                await ws.send(request)
                frames = {}
                for _ in range(pairs):
                    reply = await asyncio.wait_for(ws.recv(), 10)
                    data = freqtrade.decode_message(reply)["data"]
                    frames[data["key"][0]] = data["df"]
                return frames

        return asyncio.run(fetch())

    def close(self) -> None:
        """End every process the stack started, by PID, and drop its database."""
        for name in list(self.processes):
            self.stop(name)
        if self._drop_database:
            import psycopg

            admin, name = self._drop_database
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@functools.cache
def freqtrade_python() -> str:
    """FreqTrade's own interpreter, built once by scripts/freqtrade-venv.

    Raises:
        RuntimeError: with the script's output when the venv cannot be built.
    """
    done = subprocess.run(
        [str(ROOT / "scripts" / "freqtrade-venv")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cannot build the FreqTrade venv:\n{done.stderr[-4000:]}")
    return done.stdout.strip().splitlines()[-1]
