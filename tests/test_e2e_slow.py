"""End to end, fault 5 (issue 15): a socket that never reads and a consumer worker
stopped (SIGSTOP) for 60 s, beside a consumer worker that keeps up.

The hub holds a stated cap per socket (CANDLECAST_FEED_SOCKET_CAP_MB unsent, plus
its 1 MiB send buffer and the one message being written), the steady consumer gets
every candle, the stopped one is closed as too slow (4008) with the reason in words,
reads it when it wakes, reconnects once and ends equal to the hub.
"""

from __future__ import annotations

import base64
import os
import socket
import time
from pathlib import Path

import pandas as pd
import pytest

from controlplane.management.commands.runhub import SEND_BUFFER_HIGH_WATER
from tests.processes import Stack
from tests.test_e2e_consumer import (
    PAIRS,
    STEP,
    assert_continuous,
    assert_equal_to_hub,
    requests,
    runs,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

STOPPED_SECONDS = 60
CAP_MB = 4  # CANDLECAST_FEED_SOCKET_CAP_MB, set for the hub below
MESSAGE_MB = 8  # the message size limit: one message may be being written
SETUP = """
import json
from consumers.models import Consumer, Follow
from producers.models import FeedToken, Producer
producer = Producer.objects.create(
    name="e2e", pairs={pairs!r}, timeframe="5m", history=300,
    source_options={{"seed": 3, "seconds_per_candle": 1.5}},
)
secrets = {{
    "producer_key": producer.issue_key(),
    "token": FeedToken.issue(producer, "never reads")[1],
}}
for name in ("steady", "stuck"):
    consumer = Consumer.objects.create(name=name, sleep_time=1)
    Follow.objects.create(consumer=consumer, name="default", producer=producer)
    secrets[name] = consumer.issue_key()
print(json.dumps(secrets))
"""


def masked(text: str) -> bytes:
    """A client's text frame (clients must mask)."""
    data, mask = text.encode(), os.urandom(4)
    size = len(data)
    head = bytes([0x81, 0x80 | size]) if size < 126 else bytes([0x81, 0xFE])
    head += b"" if size < 126 else size.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def never_reading_socket(port: int, token: str, histories: int) -> socket.socket:
    """Handshake, subscribe, ask for every pair's history ``histories`` times, and
    never read again (a 4 KiB receive buffer: the hub's sends back up at once)."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            f"GET /api/v1/message/ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    topics = '["whitelist","analyzed_df","new_candle"]'
    raw.sendall(masked(f'{{"type":"subscribe","data":{topics}}}'))
    history = '{"type":"analyzed_df","data":{"limit":1500,"pair":null}}'
    raw.sendall(masked(history) * histories)
    return raw


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def frames(stack: Stack, name: str) -> dict[str, pd.DataFrame]:
    folder = stack.tmp / f"dump-{name}" / "default"
    return {
        pair: pd.read_parquet(folder / f"{pair.replace('/', '_')}.parquet")
        for pair in PAIRS
    }


def test_it_bounds_a_stuck_consumer_and_a_silent_socket_and_recovers_the_consumer(
    stack: Stack,
) -> None:
    stack.env["LOG_LEVEL"] = "DEBUG"  # the consumer strategy's per-candle lines
    stack.env["CANDLECAST_FEED_SOCKET_CAP_MB"] = str(CAP_MB)
    secrets = stack.setup(SETUP.format(pairs=PAIRS))
    hub = stack.hub()
    stack.producer("e2e", secrets["producer_key"], history=True)
    for name in ("steady", "stuck"):
        stack.consumer(name, secrets[name], name=name, dump=stack.tmp / f"dump-{name}")
    for name in ("steady", "stuck"):
        stack.wait_log(name, "all 3 pairs loaded", 60)
    base = rss_mib(hub.pid)
    raw = never_reading_socket(stack.port, secrets["token"], histories=200)
    stack.pause("stuck")
    stopped = time.monotonic()
    peak = base
    while time.monotonic() - stopped < STOPPED_SECONDS:
        time.sleep(2)
        peak = max(peak, rss_mib(hub.pid))
    stack.resume("stuck")
    stack.wait_log("stuck", "(code 4008: too slow: no pong within 30 s")
    woke = stack.hub_frames(secrets["token"], len(PAIRS))
    stack.wait_until(
        "the woken consumer runs on the hub's next candle",
        lambda: ran_after(stack, "stuck", last(woke)),
    )
    # The raw socket read nothing at all: torn down 30 s after its close frame.
    stack.wait_until(
        "the hub ends the socket that never reads",
        lambda: stack.log("hub").count("left e2e (code 4008)") == 2,
        60,
    )
    peak = max(peak, rss_mib(hub.pid))
    raw.close()

    with stack.paused("producer"):
        newest = stack.hub_frames(secrets["token"], len(PAIRS))
        stack.wait_until(
            "both consumers hold the hub's newest candle",
            lambda: all(
                ran_after(stack, n, last(newest, before=True))
                for n in ("steady", "stuck")
            ),
        )
        steady_runs = runs(stack.log("steady"))
        for name in ("steady", "stuck"):
            assert stack.stop(name) == 0
        held = {name: frames(stack, name) for name in ("steady", "stuck")}
    for name, pairs in held.items():
        for pair in PAIRS:
            assert pairs[pair]["date"].iloc[-1] == newest[pair]["date"].iloc[-1], name
            assert_continuous(pairs[pair])
            assert_equal_to_hub(pairs[pair], newest[pair])

    # The steady consumer got every candle as it closed, while the other two sockets
    # stalled: whole and continuous (above) with no hole to fill and no reconnect.
    steady = stack.log("steady")
    assert requests(steady) == [], steady[-3000:]
    assert steady.count(": connected to ") == 1
    # Not delayed: its strategy kept running on each close. A run that is still
    # going when the next candle lands takes both closes in one more run (on the
    # newer candle), so a busy machine may skip one candle in the runs, never two.
    coalesced = 0
    for pair in PAIRS:
        steps = pd.Series(steady_runs[pair]).drop_duplicates().diff().dropna()
        assert steps.isin([STEP, 2 * STEP]).all(), f"steady fell behind on {pair}"
        coalesced += int((steps == 2 * STEP).sum())

    hub_log = stack.log("hub")
    assert hub_log.count("closing it as too slow (code 4008)") == 2, hub_log[-4000:]
    assert "no pong within 30 s of a ping" in hub_log
    stuck = stack.log("stuck")
    assert stuck.count(": connected to ") == 2, stuck[-3000:]  # one reconnect
    assert "reconnect and request history)" in stuck

    # Per slow socket: its cap, the send buffer, one message being written.
    per_socket = CAP_MB + SEND_BUFFER_HIGH_WATER / 2**20 + MESSAGE_MB
    bound = 2 * per_socket
    print(
        f"\nfault 5: hub RSS {base:.0f} MiB before, peak {peak:.0f} MiB "
        f"(+{peak - base:.1f} MiB) with one socket that never reads (200 history "
        f"requests) and one consumer stopped {STOPPED_SECONDS} s; stated bound "
        f"+{bound:.0f} MiB (2 x ({CAP_MB} MiB cap + 1 MiB buffer + {MESSAGE_MB} MiB "
        f"message)); steady consumer: {len(steady_runs[PAIRS[0]])} candles per "
        f"pair ({coalesced} closes coalesced into the next run), 0 holes, 0 "
        "reconnects; stuck consumer: 1 reconnect (4008), "
        "equal to the hub"
    )
    assert peak - base < 2 * bound, "generous margin: twice the stated bound"


def ran_after(stack: Stack, name: str, candles: dict[str, pd.Timestamp]) -> bool:
    """Has consumer ``name``'s strategy run on a candle newer than ``candles``?"""
    seen = runs(stack.log(name))
    return all(seen[p] and seen[p][-1] > candles[p] for p in PAIRS)


def last(
    frames: dict[str, pd.DataFrame], before: bool = False
) -> dict[str, pd.Timestamp]:
    """Each pair's newest candle (``before``: the one before it)."""
    return {
        p: f["date"].iloc[-1] - (STEP if before else pd.Timedelta(0))
        for p, f in frames.items()
    }
