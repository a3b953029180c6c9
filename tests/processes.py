"""Real processes for end-to-end tests: the hub and workers on free loopback ports.

Each Stack has its own database (an SQLite file, or a fresh PostgreSQL database
when DATABASE_URL points at PostgreSQL), its own Redis key prefix when REDIS_URL is
set, and log files that a failing test prints.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


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


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.processes: dict[str, subprocess.Popen] = {}
        self._drop_database: tuple[str, str] | None = None
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

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
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

    def start(self, name: str, *args: str, env: dict | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes[name] = process
        return process

    def start_hub(self, name: str = "hub") -> subprocess.Popen:
        hub = self.start(name, "runhub", "--port", str(self.port))
        self.wait_http(f"http://127.0.0.1:{self.port}/admin/login/", hub)
        return hub

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

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        process = self.processes.pop(name)
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def log(self, name: str) -> str:
        """The log of process ``name`` so far ("" before it wrote anything)."""
        path = self.tmp / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def wait_until(self, what: str, predicate, timeout: float = 30) -> None:
        """Poll ``predicate()`` every 50 ms; fail with every log after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout} s\n{self.logs()}")
            time.sleep(0.05)

    def logs(self) -> str:
        return "\n".join(
            f"----- {path.name}\n{path.read_text()[-6000:]}"
            for path in sorted(self.tmp.glob("*.log"))
        )

    def close(self) -> None:
        for name in list(self.processes):
            self.stop(name)
        if self._drop_database:
            import psycopg

            admin, name = self._drop_database
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
