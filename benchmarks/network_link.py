"""bench_network's link: a veth pair into a network namespace, rate-limited, delayed.

The servers (the hub, FreqTrade's producer) listen on the host end of the veth
(10.88.N.1); the consumers run inside the namespace (``ip netns exec``) and reach a
server through a delay relay (benchmarks/delay_proxy.py) on the namespace's
loopback, which forwards across the veth. tbf limits both ends of the veth to the
link rate. Bytes on the wire are the namespace end's interface counters. Needs
root; everything made here is removed by :meth:`Link.down`, also after a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent


class LinkError(Exception):
    """The link could not be made; the text says which command failed and why."""


class Counters(NamedTuple):
    rx: int  # bytes the consumers' side received
    tx: int  # bytes it sent

    def __sub__(self, other: Counters) -> Counters:  # type: ignore[override]
        return Counters(self.rx - other.rx, self.tx - other.tx)

    @property
    def total(self) -> int:
        return self.rx + self.tx


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise LinkError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


class Link:
    """One namespace and veth pair, named after this process."""

    def __init__(self, rate_mbit: float, delay_ms: float) -> None:
        if os.geteuid() != 0:
            raise LinkError("a network namespace needs root: run as root")
        number = os.getpid() % 250 + 1
        self.rate_mbit, self.delay_ms = rate_mbit, delay_ms
        self.namespace = f"ccnet{os.getpid()}"
        self.host_end, self.inner_end = f"cch{os.getpid()}", f"ccn{os.getpid()}"
        self.host = f"10.88.{number}.1"  # the servers listen here
        self.inner = f"10.88.{number}.2"
        self.launcher = ["ip", "netns", "exec", self.namespace]

    def up(self) -> None:
        """Make the namespace, the veth, addresses and the tbf rate limit."""
        if self.host in run("ip", "-o", "addr"):
            raise LinkError(f"{self.host} is already in use on this machine")
        ns = self.launcher
        run("ip", "netns", "add", self.namespace)
        run("ip", "link", "add", self.host_end, "type", "veth", "peer", self.inner_end)
        run("ip", "link", "set", self.inner_end, "netns", self.namespace)
        run("ip", "addr", "add", f"{self.host}/24", "dev", self.host_end)
        run("ip", "link", "set", self.host_end, "up")
        run(*ns, "ip", "addr", "add", f"{self.inner}/24", "dev", self.inner_end)
        run(*ns, "ip", "link", "set", self.inner_end, "up")
        run(*ns, "ip", "link", "set", "lo", "up")
        shape = ("root", "tbf", "rate", f"{self.rate_mbit}mbit")
        shape += ("burst", "128kb", "latency", "50ms")
        run("tc", "qdisc", "add", "dev", self.host_end, *shape)
        run(*ns, "tc", "qdisc", "add", "dev", self.inner_end, *shape)

    def down(self) -> None:
        """Remove the namespace (its veth end goes with it, and so the pair)."""
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_end], capture_output=True)

    def counters(self) -> Counters:
        """The namespace end's byte counters (its own /sys, hence ip netns exec)."""
        where = f"/sys/class/net/{self.inner_end}/statistics"
        text = run(*self.launcher, "cat", f"{where}/rx_bytes", f"{where}/tx_bytes")
        rx, tx = map(int, text.split())
        return Counters(rx, tx)

    def relay(self, port: int, log: Path) -> tuple[subprocess.Popen, int]:
        """A delay relay in the namespace to the server on ``port``; its port."""
        process = subprocess.Popen(
            [*self.launcher, sys.executable, str(HERE / "delay_proxy.py")]
            + ["--host", self.host, "--port", str(port)]
            + ["--delay-ms", str(self.delay_ms)],
            stdout=subprocess.PIPE,
            stderr=open(log, "w"),
            text=True,
        )
        line = (process.stdout.readline() if process.stdout else "").split()
        if line[:1] != ["LISTENING"]:
            process.kill()
            raise LinkError(f"the delay relay did not start; see {log}")
        return process, int(line[1])

    def describe(self) -> str:
        return (
            f"veth {self.host_end} ({self.host}) <-> {self.inner_end} ({self.inner}) "
            f"in namespace {self.namespace}: tbf {self.rate_mbit:g} Mbit/s each way, "
            f"{self.delay_ms:g} ms round trip (delay relay, no netem in this kernel)"
        )
