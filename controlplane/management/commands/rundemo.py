"""The embedded demo: everything on one machine with nothing else installed.

Migrates SQLite, creates (if missing) an admin user, a demo producer with its key
and a feed token, a demo consumer following it with its key, then runs the hub, the
producer worker and the consumer worker as child processes until Ctrl-C. Secrets the
demo must show again are kept in files under var/demo/ (mode 600): ``--show`` prints
them again, ``--reset`` removes the demo's state for a fresh one.

The workers log two lines per candle (every 5 s in the demo), which would scroll the
admin password and the feed token away within a minute; their output goes through
DemoLog, which folds those lines into one progress line on a terminal (or a summary
a minute otherwise) and passes every other line through at once.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from consumers.models import Consumer, Follow
from controlplane.lib.contracts import FEED_PATH
from producers.credentials import acting_as
from producers.models import FeedToken, Producer

DEMO_PAIRS = [
    "BTC/USDT",
    "ETH/USDT",
    "SOL/USDT",
    "XRP/USDT",
    "ADA/USDT",
    "DOGE/USDT",
    "LTC/USDT",
    "DOT/USDT",
]


def secret_file(name: str) -> Path:
    path = settings.VAR_DIR / "demo" / name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def write_secret(path: Path, value: str) -> None:
    path.touch(mode=0o600)
    path.write_text(value)


def read_secret(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


class Command(BaseCommand):
    help = "Run the whole system on this machine: hub, demo producer and its worker."

    def add_arguments(self, parser):
        parser.add_argument(
            "--port", type=int, default=int(os.environ.get("PORT", "8000"))
        )
        what = parser.add_mutually_exclusive_group()
        what.add_argument(
            "--show",
            action="store_true",
            help="print the admin password, feed token and FreqTrade config again "
            "(from var/demo/), without running anything",
        )
        what.add_argument(
            "--reset",
            action="store_true",
            help="remove the demo's database and secrets; the next run makes a "
            "fresh demo",
        )

    def handle(self, *args, port: int, show: bool, reset: bool, **options):
        if reset:
            return self.reset()
        if show:
            return self.show(port)
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        password = self.ensure_admin()
        with acting_as(None, via="manage.py rundemo"):
            producer = self.ensure_producer()
            key_path = self.ensure_producer_key(producer)
            token = self.ensure_feed_token(producer)
            consumer, consumer_key_path = self.ensure_consumer(producer)
        self.banner(port, password, token, producer, consumer)
        self.supervise(port, producer, key_path, consumer, consumer_key_path)

    ### --show and --reset

    def show(self, port: int) -> None:
        missing = CommandError(
            "there is no demo here yet: `make run` (or manage.py rundemo) creates it"
        )
        password = read_secret(settings.VAR_DIR / "demo" / "admin-password")
        token = read_secret(settings.VAR_DIR / "demo" / "feed-token")
        if password is None or token is None:
            raise missing
        try:
            producer = Producer.objects.filter(name="demo").first()
            consumer = Consumer.objects.filter(name="demo-consumer").first()
        except DatabaseError as exc:  # no database file, or never migrated
            raise missing from exc
        if producer is None or consumer is None:
            raise missing
        self.banner(port, password, token, producer, consumer, running=False)

    def reset(self) -> None:
        database = settings.DATABASES["default"]
        path = Path(database["NAME"])
        if not database["ENGINE"].endswith("sqlite3") or settings.VAR_DIR not in (
            path.parents
        ):
            raise CommandError(
                "the database is not the demo's embedded SQLite file (DATABASE_URL "
                "is set): --reset removes only var/, drop that database yourself"
            )
        removed = []
        for target in (
            settings.VAR_DIR / "demo",
            path,
            Path(f"{path}-wal"),
            Path(f"{path}-shm"),
        ):
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            else:
                continue
            removed.append(str(target))
        if not removed:
            self.stdout.write("nothing to reset: there is no demo here yet")
            return
        self.stdout.write(
            "removed " + ", ".join(removed) + "; the next `make run` makes a fresh "
            "demo (new admin password, keys and feed token)"
        )

    ### Seeding

    def ensure_admin(self) -> str:
        path = secret_file("admin-password")
        User = get_user_model()
        password = read_secret(path)
        user = User.objects.filter(username="admin").first()
        if user is None or password is None or not user.check_password(password):
            password = secrets.token_urlsafe(12)
            if user is None:
                User.objects.create_superuser("admin", "", password)
            else:
                user.set_password(password)
                user.save()
            write_secret(path, password)
        return password

    def ensure_producer(self) -> Producer:
        producer, created = Producer.objects.get_or_create(
            name="demo",
            defaults={
                "pairs": DEMO_PAIRS,
                "timeframe": "5m",
                "source": Producer.Source.SYNTHETIC,
                "source_options": {"seed": 1, "seconds_per_candle": 5},
            },
        )
        if not producer.enabled:
            raise CommandError("the demo producer is disabled: enable it in the admin")
        return producer

    def ensure_producer_key(self, producer: Producer) -> Path:
        path = secret_file("producer.key")
        key = read_secret(path)
        if key is None or Producer.for_key(key) != producer:
            write_secret(path, producer.issue_key())
        return path

    def ensure_feed_token(self, producer: Producer) -> str:
        path = secret_file("feed-token")
        token = read_secret(path)
        if token is None or FeedToken.objects.authenticate(token)[0] is None:
            _, token = FeedToken.issue(producer, "demo: external FreqTrade consumer")
            write_secret(path, token)
        return token

    def ensure_consumer(self, producer: Producer) -> tuple[Consumer, Path]:
        consumer, _ = Consumer.objects.get_or_create(name="demo-consumer")
        if not consumer.follows.exists():
            Follow.objects.create(consumer=consumer, name="default", producer=producer)
        path = secret_file("consumer.key")
        key = read_secret(path)
        if key is None or Consumer.for_key(key) != consumer:
            write_secret(path, consumer.issue_key())
        return consumer, path

    def banner(
        self,
        port: int,
        password: str,
        token: str,
        producer: Producer,
        consumer: Consumer,
        *,
        running: bool = True,
    ) -> None:
        base = f"http://127.0.0.1:{port}"
        snippet = {
            "external_message_consumer": {
                "enabled": True,
                "producers": [
                    {
                        "name": "default",
                        "host": "127.0.0.1",
                        "port": port,
                        "secure": False,
                        "ws_token": token,
                    }
                ],
            }
        }
        self.stdout.write(
            f"\ncandlecast demo\n"
            f"  admin:     {base}/admin/   (log in as admin / {password})\n"
            f"  status:    {base}/status/  (live status page, same login)\n"
            f"  feed:      ws://127.0.0.1:{port}{FEED_PATH}\n"
            f"  ws_token:  {token}\n"
            f"  producer:  {producer.name}: {len(producer.pairs)} pairs, "
            f"{producer.timeframe}, strategy {producer.strategy}\n"
            f"  consumer:  {consumer.name}, following {producer.name} as 'default' "
            f"with consumers.strategies.sample.SampleConsumerStrategy\n"
            f"  FreqTrade consumer config:\n{json.dumps(snippet, indent=2)}\n"
            f"  secrets:   kept in {settings.VAR_DIR / 'demo'}/; "
            "`manage.py rundemo --show` prints this again, --reset starts afresh\n"
        )
        if running:
            self.stdout.write("  Ctrl-C stops everything.\n\n")

    ### Processes

    def supervise(
        self,
        port: int,
        producer: Producer,
        key_path: Path,
        consumer: Consumer,
        consumer_key_path: Path,
    ) -> None:
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        env = dict(
            os.environ, PORT=str(port), CANDLECAST_HUB_URL=f"http://127.0.0.1:{port}"
        )
        for name in ("CANDLECAST_PRODUCER_KEY", "CANDLECAST_CONSUMER_KEY"):
            env.pop(name, None)
        workers = [
            (
                [*manage, "runproducer", producer.name],
                {"CANDLECAST_PRODUCER_KEY_FILE": str(key_path)},
            ),
            (
                [*manage, "runconsumer", consumer.name],
                {"CANDLECAST_CONSUMER_KEY_FILE": str(consumer_key_path)},
            ),
        ]
        # SIGTERM (a process manager, `timeout`) stops the demo as Ctrl-C does.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        log = DemoLog(sys.stdout)
        children = [log.run([*manage, "runhub", "--port", str(port)], env)]
        try:
            wait_for_port(port, children[0])
            for command, extra in workers:
                children.append(log.run(command, {**env, **extra}))
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            raise CommandError("a demo process exited; see its log lines above")
        except KeyboardInterrupt:
            log.write("stopping…")
        finally:
            stop_all(children)
            log.close()


# The lines every candle brings (producer worker, consumer strategy), folded.
CANDLE_LINE = re.compile(r"producers\.worker: (candle \S+ \S+ closed: .*)$")
QUIET_STRATEGY_LINE = re.compile(r"consumers\.strategy: \w+ ran on .*no entry or exit")
SUMMARY_SECONDS = 60


class DemoLog:
    """The demo's processes' output on one stream, the per-candle lines folded.

    On a terminal the newest candle is one line rewritten in place; otherwise a
    summary line every SUMMARY_SECONDS. Any other line (a warning, an error, a
    signal of the consumer's strategy) goes out at once, whole.
    """

    def __init__(self, out: TextIO, *, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.lock = threading.Lock()
        self.readers: list[threading.Thread] = []
        self.progress = ""  # the line shown in place, on a terminal
        self.candles = self.quiet_runs = 0  # since the last summary
        self.newest = ""
        self.summarised = time.monotonic()

    def run(self, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        child = subprocess.Popen(
            command,
            env={**env, "PYTHONUNBUFFERED": "1"},  # each line as it is written
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        reader = threading.Thread(target=self._read, args=(child,), daemon=True)
        reader.start()
        self.readers.append(reader)
        return child

    def _read(self, child: subprocess.Popen) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            self.line(line.rstrip("\n"))

    def line(self, text: str) -> None:
        with self.lock:
            candle = CANDLE_LINE.search(text)
            if candle:
                self.candles += 1
                self.newest = candle.group(1)
            elif QUIET_STRATEGY_LINE.search(text):
                self.quiet_runs += 1
            else:
                self._clear()
                self.out.write(text + "\n")
                self._draw()
                return
            if self.tty:
                self.progress = (
                    f"live: {self.newest} · consumer strategy: "
                    f"{self.quiet_runs} run(s), no signal"
                )
                self._clear()
                self._draw()
            elif time.monotonic() - self.summarised >= SUMMARY_SECONDS:
                self.out.write(self.summary() + "\n")
            self.out.flush()

    def summary(self) -> str:
        """The last minute's candles in one line (and start counting again)."""
        seconds = time.monotonic() - self.summarised
        text = (
            f"demo, last {seconds:.0f} s: {self.candles} candle(s) published, "
            f"newest {self.newest or 'none'}; the consumer's strategy ran "
            f"{self.quiet_runs} time(s) with no signal"
        )
        self.candles = self.quiet_runs = 0
        self.summarised = time.monotonic()
        return text

    def write(self, text: str) -> None:
        self.line(text)

    def close(self) -> None:
        for reader in self.readers:
            reader.join(timeout=5)
        with self.lock:
            if self.progress and self.tty:
                self.out.write("\n")
                self.progress = ""
            self.out.flush()

    def _clear(self) -> None:
        if self.tty and self.progress:
            self.out.write("\r\x1b[K")

    def _draw(self) -> None:
        if self.tty and self.progress:
            self.out.write(self.progress[: terminal_width() - 1])
        self.out.flush()


def terminal_width() -> int:
    return shutil.get_terminal_size((100, 24)).columns


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CommandError(
                f"the hub exited at start (status {process.returncode}); is port "
                f"{port} in use? Set PORT to another port"
            )
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise CommandError(f"the hub did not listen on port {port} within {timeout:.0f} s")


def stop_all(children: list[subprocess.Popen]) -> None:
    """SIGTERM to each child, 10 s for each to stop, then SIGKILL.

    A repeated SIGTERM is the same request again (make forwards its own to us, on
    top of the one a process-group kill already sent): ignored. A second Ctrl-C
    means "now": the children still running are killed at once.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    try:
        for child in reversed(children):
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    except KeyboardInterrupt:
        sys.stdout.write("interrupted again: killing the demo processes\n")
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
