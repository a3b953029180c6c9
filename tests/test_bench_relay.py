"""The relay benchmark, tiny: both phases run and every cell of its table is filled.

Real processes (two FreqTrade producers, a hub, the relay, consumer processes); the
figures themselves are not asserted, only that each was measured.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.processes import ROOT

FIGURES = [
    "upstream bot CPU, alone before any consumer",
    "cold start: until every consumer holds every pair",
    "upstream bot CPU, cold start",
    "upstream bot CPU, steady phase",
    "upstream bot's candle interval, steady (mean)",
    "latency, bot's candle -> last consumer, p50",
    "latency, bot's candle -> last consumer, p99",
    "relay CPU, cold start",
    "relay CPU, steady phase",
    "hub CPU, cold start",
    "hub CPU, steady phase",
]
TINY = ["--consumers", "2", "--processes", "2", "--pairs", "3", "--rows", "200"]
TINY += ["--candles", "2", "--idle-candles", "1", "--seconds-per-candle", "1"]


def run_bench(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_relay.py"), *TINY, *args],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    return done.stdout


def table(output: str) -> dict[str, tuple[str, str]]:
    """figure -> (direct, through the hub), cut at the header's column starts."""
    lines = output.splitlines()
    header = next(line for line in lines if line.strip().startswith("figure"))
    second, third = header.index("direct"), header.index("through the hub")
    rows = {}
    for line in lines[lines.index(header) + 1 :]:
        if not line.strip():
            break
        rows[line[:second].strip()] = (
            line[second:third].strip(),
            line[third:].strip(),
        )
    return rows


@pytest.mark.e2e
@pytest.mark.interop
@pytest.mark.timeout(500)
def test_it_prints_every_figure_for_both_phases():
    """Direct and through the hub: every figure measured, and the CPU ratio."""
    output = run_bench()
    rows = table(output)
    assert list(rows) == FIGURES
    for figure, (direct, hub) in rows.items():
        assert direct and hub, f"{figure}: empty cell in\n{output}"
        assert "not run" not in direct + hub, output
        assert "missed" not in direct + hub, output
    cpu = re.compile(r"^\d+\.\d\d CPU s(, \d+\.\d\d per candle)? \(\d+ % of a core\)$")
    bot = [figure for figure in FIGURES if figure.startswith("upstream bot CPU")]
    for figure in bot:
        assert all(cpu.match(cell) for cell in rows[figure]), output
    for figure in FIGURES[-4:]:  # the relay's and the hub's CPU
        assert rows[figure][0].startswith("none (no "), output
        assert cpu.match(rows[figure][1]), output
    for figure in (f for f in FIGURES if f.startswith("latency")):
        assert all(re.match(r"^\d+ ms$", cell) for cell in rows[figure]), output
    assert re.search(r"cold start \d+\.\dx, steady phase \d+\.\dx", output), output
    assert "2 ProducerClients" in output and "3 pairs x 200 rows" in output
