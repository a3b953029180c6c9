"""A Redis and a PostgreSQL of a test's own, for the fault tests that kill them.

The project's shared services (Redis 6379, PostgreSQL 5432) serve every agent and
test on the machine: a test that kills or empties a service starts its own, on a
port of its own range (Redis 6391-6399, PostgreSQL 5441-5449), and ends it by PID.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REDIS_PORTS = range(6391, 6400)
POSTGRES_PORTS = range(5441, 5450)


def free_port_in(ports: range) -> int:
    """The first port of ``ports`` that nothing listens on (other tests may run)."""
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"every port from {ports.start} to {ports.stop - 1} is taken")


def _wait_port(port: int, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port} in 30 s")


class OwnRedis:
    """redis-server on a port of its own, with no persistence: a restart is empty."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port_in(REDIS_PORTS)
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.starts += 1
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.tmp)]
        with open(self.tmp / f"redis-{self.starts}.log", "w") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log)
        _wait_port(self.port, "redis-server", self.process)

    def kill(self) -> None:
        """kill -9: whatever it held is gone."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise AssertionError(f"no {name} under /usr/lib/postgresql/*/bin")
    return found[-1]


class OwnPostgres:
    """A PostgreSQL cluster of its own (initdb in a temp dir, trust auth), run as
    the user postgres, which PostgreSQL requires when the tests run as root."""

    def __init__(self) -> None:
        self.port = free_port_in(POSTGRES_PORTS)
        # Not under pytest's tmp_path: the postgres user cannot enter root's dirs.
        self.dir = Path(tempfile.mkdtemp(prefix="candlecast-pg-"))
        self.data = self.dir / "data"
        self._user = {"user": "postgres"} if os.geteuid() == 0 else {}
        if self._user:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [_postgres_bin(tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.dir,
            **self._user,
        )
        assert done.returncode == 0, f"{tool}: {done.stdout}{done.stderr}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        log = str(self.dir / "postgres.log")
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start"
        )
        _wait_port(self.port, "postgres")

    def stop(self, mode: str = "fast") -> None:
        """``immediate``: as a crash does, no shutdown checkpoint, every session cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def log(self) -> str:
        path = self.dir / "postgres.log"
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
