"""The fan-out benchmark, tiny: every mode runs and every cell of its table is filled.

Real processes (a hub or the raw server, two consumer processes); the figures
themselves are not asserted, only that each was measured and that every consumer
held every candle published.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import ROOT

TINY = ["--consumers", "2", "--processes", "2", "--pairs", "3", "--rows", "200"]
TINY += ["--ticks", "3", "--modes", "raw,freqtrade,native"]
MODES = ["raw-freqtrade", "freqtrade", "raw-native", "native"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[str, dict, str]:
    """One tiny run: (stdout, the JSON figures, the markdown table)."""
    out = tmp_path_factory.mktemp("fanout")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_fanout.py"),
            *TINY,
            f"--json={out / 'fanout.json'}",
            f"--markdown={out / 'fanout.md'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-6000:]
    figures = json.loads(Path(out / "fanout.json").read_text())
    return done.stdout, figures, Path(out / "fanout.md").read_text()


def table_rows(stdout: str) -> dict[str, list[str]]:
    """mode -> the cells of its row in the printed table."""
    lines = stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if "tick-to-all p99 ms" in line)
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = cells
    return rows


def test_it_fills_every_cell_of_the_table(bench):
    """Each mode's row has a figure in every column, none left as '-'."""
    stdout, _, markdown = bench
    rows = table_rows(stdout)
    for mode in MODES:
        assert mode in rows, stdout
        assert "-" not in rows[mode], rows[mode]
        assert f"| {mode} | 2 | 1+1 |" in markdown


def test_it_delivers_every_tick_to_every_consumer(bench):
    """Every consumer held every published candle on every pair, in every mode."""
    _, figures, _ = bench
    runs = {run["mode"]: run for run in figures["runs"]}
    for mode in MODES:
        run = runs[mode]
        assert run["note"] == ""
        assert run["ticks_expected"] == 2 * 3
        assert run["ticks_held"] == run["ticks_expected"]
        assert len(run["latencies"]) == 3
        assert run["clients"] == [1, 1]


def test_it_prints_the_ratio_and_the_targets(bench):
    """The raw comparison and each target's verdict are printed."""
    stdout, _, _ = bench
    assert "K=2: freqtrade p99 / raw-freqtrade p99 = " in stdout
    assert "K=2: native p99 / raw-native p99 = " in stdout
    for target in (
        "native tick-to-all p99 within 3x raw-native",
        "native cold start (all held) under 10 s",
        "FreqTrade-mode cold start (delivered) under 15 s",
        "FreqTrade-mode tick-to-all p99 under 1.5 s",
        "hub RSS (peak) under 500 MB",
        "consumer RSS under 200 MB",
    ):
        assert any(
            line.split(maxsplit=1)[0] in ("PASS", "MISS") and target in line
            for line in stdout.splitlines()
            if line.strip()
        ), target


def test_it_runs_each_mode_on_its_own_protocol(bench):
    """Native rows negotiated candlecast.v1; FreqTrade rows spoke FreqTrade's."""
    _, figures, _ = bench
    runs = {run["mode"]: run for run in figures["runs"]}
    assert runs["freqtrade"]["protocol"] == "freqtrade"
    assert runs["raw-freqtrade"]["protocol"] == "freqtrade"
    assert runs["native"]["protocol"] == "candlecast.v1+zstd"
    assert runs["raw-native"]["protocol"] == "candlecast.v1+zstd"
