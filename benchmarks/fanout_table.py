"""bench_fanout's results: one row per mode and K, ratio lines, and the targets.

Percentiles are nearest-rank over the ticks (with 20 ticks p99 is the slowest one).
The targets are issue 7's, set for K = 100 consumers and P = 100 pairs of 1500 rows;
they are checked at the largest K of the run and say so when that is not the case.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

MIB = 1 << 20
HEADERS = (
    "mode",
    "K",
    "clients per process",
    "cold start delivered s",
    "cold start held s",
    "tick-to-all p50 ms",
    "tick-to-all p99 ms",
    "received p50/p99 ms",
    "hub CPU us per delivered candle",
    "hub RSS MB (peak)",
    "consumer RSS MB",
    "ticks held",
)


@dataclass
class Run:
    mode: str  # freqtrade, native, raw-freqtrade, raw-native
    server: str
    consumers: int
    clients: list[int]  # per process; the first holds the single-client consumer
    note: str = ""  # skipped or failed, and why
    protocol: str | None = None
    cold_delivered: float | None = None
    cold_loaded: float | None = None
    latencies: list[float] = field(default_factory=list)  # seconds, per tick
    received: list[float] = field(default_factory=list)  # same, before decoding
    hub_cpu_us: float | None = None
    hub_rss: int | None = None
    hub_peak: int | None = None
    consumer_rss: int | None = None  # the dedicated single-client process
    process_rss: list[int | None] = field(default_factory=list)
    ticks_held: int = 0
    ticks_expected: int = 0

    def p(self, fraction: float, received: bool = False) -> float | None:
        """Nearest-rank percentile of the tick-to-all latencies, in seconds."""
        values = self.received if received else self.latencies
        if not values:
            return None
        ordered = sorted(values)
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]

    def cells(self) -> list[str]:
        if self.note:
            return (
                [self.mode, str(self.consumers), "+".join(map(str, self.clients))]
                + ["-"] * (len(HEADERS) - 4)
                + [self.note]
            )
        return [
            self.mode,
            str(self.consumers),
            "+".join(map(str, self.clients)),
            f"{self.cold_delivered:.2f}",
            f"{self.cold_loaded:.2f}",
            f"{self.p(0.5) * 1000:.0f}",
            f"{self.p(0.99) * 1000:.0f}",
            f"{self.p(0.5, True) * 1000:.0f}/{self.p(0.99, True) * 1000:.0f}",
            f"{self.hub_cpu_us:.0f}",
            f"{self.hub_rss / MIB:.0f} ({self.hub_peak / MIB:.0f})",
            f"{self.consumer_rss / MIB:.0f}",
            f"{self.ticks_held}/{self.ticks_expected}",
        ]


def table_lines(runs: list[Run], markdown: bool) -> list[str]:
    rows = [list(HEADERS)] + [run.cells() for run in runs]
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        lines.insert(1, "|" + "---|" * len(HEADERS))
        return lines
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    return [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]


def find(runs: list[Run], mode: str, k: int) -> Run | None:
    for run in runs:
        if run.mode == mode and run.consumers == k and not run.note:
            return run
    return None


def ratio_lines(runs: list[Run]) -> list[str]:
    lines = []
    for k in sorted({run.consumers for run in runs}):
        for form in ("native", "freqtrade"):
            ours, raw = find(runs, form, k), find(runs, f"raw-{form}", k)
            if ours and raw:
                lines.append(
                    f"K={k}: {form} p99 / raw-{form} p99 = "
                    f"{ours.p(0.99) * 1000:.0f} / {raw.p(0.99) * 1000:.0f} ms = "
                    f"{ours.p(0.99) / raw.p(0.99):.1f}x"
                )
    return lines


def target_lines(runs: list[Run], args: argparse.Namespace) -> list[str]:
    k = max(args.consumers)
    scale = (k, args.pairs, args.rows) == (100, 100, 1500)
    native, freqtrade = find(runs, "native", k), find(runs, "freqtrade", k)
    raw_native = find(runs, "raw-native", k)
    hubs = [run for run in (native, freqtrade) if run]
    checks = [
        (
            "native tick-to-all p99 within 3x raw-native",
            native and raw_native and native.p(0.99) / raw_native.p(0.99),
            3.0,
            "x",
        ),
        ("FreqTrade-mode tick-to-all p99 under 1.5 s", freqtrade, 1.5, "s"),
        ("native cold start (all held) under 10 s", native, 10.0, "s"),
        ("FreqTrade-mode cold start (delivered) under 15 s", freqtrade, 15.0, "s"),
        ("hub RSS (peak) under 500 MB", hubs, 500.0, "MB"),
        ("consumer RSS under 200 MB", hubs, 200.0, "MB"),
    ]
    values = [
        checks[0][1] or None,
        freqtrade and freqtrade.p(0.99),
        native and native.cold_loaded,
        freqtrade and freqtrade.cold_delivered,
        max((run.hub_peak / MIB for run in hubs), default=None),
        max((run.consumer_rss / MIB for run in hubs), default=None),
    ]
    where = f"K={k}, P={args.pairs}, rows={args.rows}"
    lines = [
        f"targets at {where}"
        + ("" if scale else " (set for K=100, P=100, rows=1500: indicative only)")
    ]
    for (text, _, limit, unit), value in zip(checks, values, strict=True):
        if value is None:
            lines.append(f"  n/a   {text}: not measured in this run")
            continue
        verdict = "PASS" if value < limit else "MISS"
        lines.append(f"  {verdict}  {text}: {value:.2f} {unit}")
    return lines


def detail_lines(runs: list[Run]) -> list[str]:
    lines = []
    for run in runs:
        if run.note:
            lines.append(f"{run.mode} K={run.consumers}: {run.note}")
            continue
        rss = ", ".join(
            f"{count}: {size / MIB:.0f}"
            for count, size in zip(run.clients, run.process_rss, strict=True)
            if size
        )
        lines.append(
            f"{run.mode} K={run.consumers}: subprotocol {run.protocol}; "
            f"RSS MB per process (clients: MB) {rss}"
        )
    return lines


def print_report(runs: list[Run], args: argparse.Namespace) -> None:
    print()
    print(
        f"fan-out: {args.pairs} pairs x {args.rows} rows, {args.ticks} ticks, "
        f"hub server {args.server}"
        + (", Redis channel layer" if args.redis else ", in-memory channel layer")
    )
    print(
        f"consumers spread over at most {args.processes} processes: the first "
        "holds one client alone (its RSS is 'consumer RSS'), the others share the rest"
    )
    print("raw-*: a bare websockets server sending the same pre-encoded bytes")
    print()
    for line in table_lines(runs, markdown=False):
        print(line)
    print()
    for line in ratio_lines(runs) + [""] + target_lines(runs, args):
        print(line)
    print()
    for line in detail_lines(runs):
        print(line)


def markdown_table(runs: list[Run], args: argparse.Namespace) -> str:
    parts = table_lines(runs, markdown=True) + [""] + ratio_lines(runs) + [""]
    parts += target_lines(runs, args) + [""] + detail_lines(runs)
    return "\n".join(parts) + "\n"
