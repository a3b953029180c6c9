"""The consumer worker against a fake control plane (http.server) and fake producers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.management import call_command

from consumers import worker
from consumers.worker import WorkerConfig
from tests.test_client import FakeProducer, eventually, frame_message

KEY = "ccc_test_key"
TIMEOUT = 2.0
SETTINGS = {
    "wait_timeout": 5,
    "ping_timeout": 1,
    "sleep_time": 0.05,
    "remove_entry_exit_signals": False,
    "initial_candle_limit": 1500,
    "message_size_limit": 8,
    "max_signal_age": None,
}


class FakeControlPlane:
    """The consumer API on 127.0.0.1:0: serves ``document``, records status reports."""

    def __init__(self, key: str = KEY) -> None:
        self.key = key
        self.producers: list[dict] = []
        self.settings = dict(SETTINGS)
        self.statuses: list[dict] = []
        self.config_reads = 0
        self.status_answer = 204

    def follow(self, fake: FakeProducer, name: str = "default", **extra: Any) -> None:
        self.producers.append(
            {
                "name": name,
                "kind": "candlecast",
                "host": "127.0.0.1",
                "port": fake.port,
                "secure": False,
                "ws_token": "tok-1",
                **extra,
            }
        )

    def document(self) -> dict:
        body = {"settings": self.settings, "producers": self.producers}
        version = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return {"name": "demo", **body, "version": version}

    def __enter__(self) -> FakeControlPlane:
        plane = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self._authorised():
                    plane.config_reads += 1
                    self._reply(200, plane.document())

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not self._authorised():
                    return
                if plane.status_answer != 204:
                    self._reply(plane.status_answer, {"error": "database is down"})
                    return
                plane.statuses.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {plane.key}":
                    return True
                self._reply(403, {"error": "unknown consumer key ccc_…: issue one"})
                return False

            def _reply(self, status: int, document: dict) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def last(self, name: str = "default") -> dict:
        return self.statuses[-1]["producers"].get(name, {}) if self.statuses else {}


def config(url: str, key: str = KEY, **overrides: Any) -> WorkerConfig:
    values = {"config_poll": 0.1, "status_interval": 0.1, "backoff_initial": 0.05}
    return WorkerConfig("demo", url, key, **{**values, **overrides})


@contextlib.asynccontextmanager
async def running(worker_config: WorkerConfig):
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(worker_config, stop))
    try:
        yield task
    finally:
        stop.set()
        status = await asyncio.wait_for(task, TIMEOUT * 2)
        assert status == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def loaded(plane: FakeControlPlane, name: str = "default") -> bool:
    pairs = plane.last(name).get("pairs", {})
    return plane.last(name).get("connected") is True and len(pairs) == 2


### Following and reporting


async def test_it_follows_its_producers_and_reports_their_state():
    with FakeControlPlane() as plane:
        async with FakeProducer() as one, FakeProducer(rows=150) as two:
            plane.follow(one)
            plane.follow(two, "other")
            async with running(config(plane.url)):
                await eventually(
                    lambda: (
                        loaded(plane)
                        and loaded(plane, "other")
                        and len(plane.statuses[-1].get("signals", {})) == 2
                    )
                )
            report = plane.statuses[-1]
    assert report["producers"]["other"]["pairs"]["ETH/USDT"]["rows"] == 150
    assert report["producers"]["default"]["reconnects"] == 0
    assert report["started"].endswith("+00:00")
    assert set(report["signals"]) == {"BTC/USDT", "ETH/USDT"}
    assert one.link.requests[2] == {
        "type": "analyzed_df",
        "data": {"limit": 1500, "pair": None},
    }


async def test_it_runs_the_strategy_on_each_new_candle_and_logs_its_signals(caplog):
    with FakeControlPlane() as plane:
        async with FakeProducer() as fake:
            falling(fake, "BTC/USDT")
            plane.follow(fake)
            async with running(config(plane.url)):
                await eventually(lambda: "BTC/USDT" in signals(plane))
                first = signals(plane)["BTC/USDT"]
                new = fake.append_candles("BTC/USDT", 1)
                await fake.link.ws.send(frame_message("BTC/USDT", new, 200))
                await eventually(
                    lambda: signals(plane)["BTC/USDT"]["candle"] != first["candle"]
                )
    assert first == {
        "candle": "2026-11-01T16:35:00+00:00",
        "fired": ["enter_long_default", "enter_long"],
        "tags": {"enter_tag": "producer_default"},
    }
    assert signals(plane)["BTC/USDT"]["candle"] == "2026-11-01T16:40:00+00:00"
    assert (
        "BTC/USDT 2026-11-01 16:35 enter_long_default=1 enter_long=1 "
        "enter_tag=producer_default" in caplog.text
    )


def falling(fake: FakeProducer, pair: str) -> None:
    """Make the last candles fall (RSI under 40) and the producer enter on the last."""
    df = fake.frames[pair]
    tail = df.index[-30:]
    df.loc[tail, "close"] = [80.0 - i for i in range(30)]
    df.loc[tail[-1], "enter_long"] = 1.0


def signals(plane: FakeControlPlane) -> dict:
    return plane.statuses[-1]["signals"] if plane.statuses else {}


async def test_it_closes_its_links_with_going_away_when_stopped():
    with FakeControlPlane() as plane:
        async with FakeProducer() as fake:
            plane.follow(fake)
            async with running(config(plane.url)):
                await eventually(lambda: loaded(plane))
            await eventually(lambda: fake.close_codes)
    assert fake.close_codes == [1001]


async def test_it_keeps_other_producers_when_one_refuses_its_token():
    with FakeControlPlane() as plane:
        async with FakeProducer() as refusing, FakeProducer() as fine:
            refusing.refuse = 403
            plane.follow(refusing, "strict")
            plane.follow(fine)
            async with running(config(plane.url)) as task:
                await eventually(lambda: loaded(plane) and plane.last("strict"))
                assert not task.done()
    strict = plane.last("strict")
    assert strict["connected"] is False
    assert "refused our token: HTTP 403" in strict["last_error"]


### The control plane


async def test_it_exits_with_status_2_when_the_control_plane_refuses_its_key(caplog):
    with FakeControlPlane() as plane:
        stop = asyncio.Event()
        status = await asyncio.wait_for(
            worker.run(config(plane.url, key="ccc_wrong"), stop), TIMEOUT
        )
    assert status == 2
    assert "refused the consumer key (403): unknown consumer key" in caplog.text


async def test_it_waits_for_an_unreachable_control_plane(caplog):
    url = f"http://127.0.0.1:{free_port()}"
    async with running(config(url)):
        await eventually(lambda: caplog.text.count("cannot reach the control") >= 2)
    assert f"cannot reach the control plane at {url}" in caplog.text


async def test_it_follows_a_producer_added_to_its_config():
    with FakeControlPlane() as plane:
        async with FakeProducer() as one, FakeProducer() as two:
            plane.follow(one)
            async with running(config(plane.url)):
                await eventually(lambda: loaded(plane))
                plane.follow(two, "other")
                await eventually(lambda: loaded(plane, "other"))
                plane.producers.pop()
                await eventually(lambda: "other" not in plane.statuses[-1]["producers"])
            assert len(one.links) == 1  # not disturbed
    assert two.close_codes == [1000]


async def test_it_uses_a_rotated_token_on_the_next_connection():
    with FakeControlPlane() as plane:
        async with FakeProducer() as fake:
            plane.follow(fake)
            async with running(config(plane.url)):
                await eventually(lambda: loaded(plane))
                plane.producers[0]["ws_token"] = "tok-2"
                reads = plane.config_reads
                await eventually(lambda: plane.config_reads >= reads + 2)
                assert len(fake.links) == 1  # the old token is still valid
                await fake.link.ws.close(4003, "token revoked")
                await eventually(lambda: len(fake.links) == 2)
                assert fake.link.headers["Authorization"] == "Bearer tok-2"


async def test_it_reconnects_a_producer_whose_settings_changed():
    with FakeControlPlane() as plane:
        async with FakeProducer() as fake:
            plane.follow(fake)
            async with running(config(plane.url)):
                await eventually(lambda: loaded(plane))
                plane.settings["initial_candle_limit"] = 120
                await eventually(lambda: len(fake.links) == 2)
                await eventually(lambda: len(fake.link.requests) >= 3)
    assert fake.link.requests[2]["data"] == {"limit": 120, "pair": None}
    assert fake.close_codes[0] == 1000


async def test_it_logs_failing_status_reports_once_and_keeps_going(caplog):
    with FakeControlPlane() as plane:
        async with FakeProducer() as fake:
            plane.follow(fake)
            plane.status_answer = 500
            async with running(config(plane.url)) as task:
                await eventually(lambda: fake.links and loaded_fake(fake))
                await asyncio.sleep(0.5)  # several reports
                assert not task.done()
                plane.status_answer = 204
                await eventually(lambda: loaded(plane))
    assert caplog.text.count("cannot report the status") == 1
    assert "database is down" in caplog.text
    assert "status reports reach the control plane again" in caplog.text


def loaded_fake(fake: FakeProducer) -> bool:
    return len(fake.link.requests) >= 3


### The command


@pytest.mark.parametrize(
    ("key", "strategy", "says"),
    [
        ("ccc_wrong", None, "refused the consumer key (403)"),
        (KEY, "consumers.strategies.sample.Nope", "has no class Nope"),
    ],
)
def test_the_command_exits_with_status_2_on_a_fatal_error(
    monkeypatch, caplog, key, strategy, says
):
    with FakeControlPlane() as plane:
        monkeypatch.setenv("CANDLECAST_HUB_URL", plane.url)
        monkeypatch.setenv("CANDLECAST_CONSUMER_KEY", key)
        monkeypatch.delenv("CANDLECAST_CONSUMER_KEY_FILE", raising=False)
        options = {"strategy": strategy} if strategy else {}
        with pytest.raises(SystemExit) as exit_info:
            call_command("runconsumer", "demo", **options)
    assert exit_info.value.code == 2
    assert says in caplog.text
