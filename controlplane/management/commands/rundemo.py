"""The embedded demo: everything on one machine with nothing else installed.

Migrates SQLite, creates (if missing) an admin user, a demo producer with its key
and a feed token, a demo consumer following it with its key, then runs the hub, the
producer worker and the consumer worker as child processes until Ctrl-C. Secrets the
demo must show again are kept in files under var/demo/ (mode 600).
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
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

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

    def handle(self, *args, port: int, **options):
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
            f"  Ctrl-C stops everything.\n\n"
        )

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
        children = [subprocess.Popen([*manage, "runhub", "--port", str(port)], env=env)]
        try:
            wait_for_port(port, children[0])
            for command, extra in workers:
                children.append(subprocess.Popen(command, env={**env, **extra}))
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            raise CommandError("a demo process exited; see its log lines above")
        except KeyboardInterrupt:
            self.stdout.write("stopping…")
        finally:
            stop_all(children)


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
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in reversed(children):
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
