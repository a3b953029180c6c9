"""A real FreqTrade consumer for interop tests, run by scripts/freqtrade-venv's python.

FreqTrade's own ExternalMessageConsumer and DataProvider follow one producer feed; the
harness waits until they hold what the test asked for and writes the exact frames that
`dp.get_producer_df()` returns to parquet, so a test can compare them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from pandas import DataFrame, Timestamp

EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE = 0, 2, 64

logger = logging.getLogger("freqtrade_consumer")


class UsageErrorParser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage; 2 means 'timed out' here, so use EX_USAGE."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def safe_name(pair: str) -> str:
    """A file name for a pair: BTC/USDT:USDT -> BTC_USDT_USDT."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", pair)


def write_frames(
    out: Path,
    whitelist: list[str],
    frames: Mapping[str, tuple[DataFrame, datetime]],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write whitelist.json, <pair>.parquet, dtypes.json and meta.json into `out`.

    The parquet files hold the frames exactly as given (index and dtypes included);
    dtypes.json keeps str(dtype) per column because parquet maps some dtypes.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "whitelist.json").write_text(json.dumps(whitelist, indent=1))
    dtypes: dict[str, dict[str, str]] = {}
    pairs_meta: dict[str, dict[str, Any]] = {}
    for pair, (df, last_analyzed) in frames.items():
        df.to_parquet(out / f"{safe_name(pair)}.parquet")
        dtypes[pair] = {str(col): str(dtype) for col, dtype in df.dtypes.items()}
        pairs_meta[pair] = {
            "file": f"{safe_name(pair)}.parquet",
            "rows": len(df),
            "last_analyzed": last_analyzed.isoformat(),
            "first_date": _date_at(df, 0),
            "last_date": _date_at(df, -1),
        }
    (out / "dtypes.json").write_text(json.dumps(dtypes, indent=1))
    meta = {**(extra or {}), "pairs": pairs_meta}
    (out / "meta.json").write_text(json.dumps(meta, indent=1, default=str))


def _date_at(df: DataFrame, pos: int) -> str | None:
    if df.empty or "date" not in df.columns:
        return None
    return Timestamp(df["date"].iloc[pos]).isoformat()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = UsageErrorParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True, help="the producer's ws_token")
    parser.add_argument("--timeframe", default="5m")
    parser.add_argument("--candle-type", default="spot")
    parser.add_argument("--min-rows", type=int, default=100)
    parser.add_argument(
        "--expect-pairs",
        type=int,
        default=1,
        help="wait until the whitelist has at least N pairs",
    )
    parser.add_argument(
        "--wait-new-candle",
        action="store_true",
        help="also wait until every pair got a candle after the full load",
    )
    parser.add_argument(
        "--until-candle",
        type=Path,
        help="also wait until this file exists and every pair holds a candle at or "
        "after the ISO date it holds (a test's signal that its fault is over)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--secure", action="store_true", help="wss:// instead of ws://")
    parser.add_argument("--sleep-time", type=float, help="FreqTrade's sleep_time (10)")
    parser.add_argument(
        "--wait-timeout", type=float, help="FreqTrade's wait_timeout (30)"
    )
    parser.add_argument(
        "--message-size-limit", type=int, help="MiB, FreqTrade's default 8"
    )
    parser.add_argument("--verbose", action="store_true", help="DEBUG logging")
    args = parser.parse_args(argv)
    if args.min_rows < 1 or args.expect_pairs < 1:
        parser.error("--min-rows and --expect-pairs must be at least 1")
    return args


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    from freqtrade.enums import CandleType

    emc: dict[str, Any] = {
        "enabled": True,
        "producers": [
            {
                "name": "default",
                "host": args.host,
                "port": args.port,
                "ws_token": args.token,
                "secure": args.secure,
            }
        ],
    }
    optional = {
        "sleep_time": args.sleep_time,
        "wait_timeout": args.wait_timeout,
        "message_size_limit": args.message_size_limit,
    }
    emc.update({key: value for key, value in optional.items() if value is not None})
    return {
        "timeframe": args.timeframe,
        "candle_type_def": CandleType.from_string(args.candle_type),
        "external_message_consumer": emc,
    }


class LogTally(logging.Handler):
    """Remembers FreqTrade's warnings and errors for the summary on timeout."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@dataclass
class Progress:
    """What the consumer holds now, and when each stage was first reached."""

    started: float = field(default_factory=time.monotonic)
    stages: dict[str, float] = field(default_factory=dict)
    first_load_last: dict[str, Timestamp] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def mark(self, stage: str) -> None:
        self.stages.setdefault(stage, round(time.monotonic() - self.started, 3))


def snapshot(dp: Any, args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    pairs = dp.get_producer_pairs("default")
    frames = {
        pair: dp.get_producer_df(
            pair, timeframe=args.timeframe, candle_type=args.candle_type
        )
        for pair in pairs
    }
    return pairs, frames


def check(
    pairs: list[str],
    frames: dict[str, Any],
    args: argparse.Namespace,
    progress: Progress,
) -> bool:
    """True when everything asked for is there; otherwise progress.missing says what."""
    missing: list[str] = []
    if len(pairs) < args.expect_pairs:
        missing.append(
            f"whitelist has {len(pairs)} pair(s) {pairs}, expected {args.expect_pairs}"
        )
    else:
        progress.mark("whitelist")
    short = {p: len(df) for p, (df, _) in frames.items() if len(df) < args.min_rows}
    if short:
        missing.append(f"pairs below {args.min_rows} rows: {short}")
    if not missing:
        progress.mark("full_load")
        if not progress.first_load_last:
            progress.first_load_last = {
                p: df["date"].iloc[-1] for p, (df, _) in frames.items()
            }
        if args.wait_new_candle:
            stale = [
                p
                for p, (df, _) in frames.items()
                if df["date"].iloc[-1]
                <= progress.first_load_last.get(p, df["date"].iloc[-1])
            ]
            if stale:
                missing.append(f"no new candle since the full load for: {stale}")
            else:
                progress.mark("new_candle")
    if args.until_candle:
        missing += behind(frames, args.until_candle)
    progress.missing = missing
    return not missing


def behind(frames: dict[str, Any], until: Path) -> list[str]:
    """What is missing for --until-candle: the file, or the pairs still behind."""
    text = until.read_text().strip() if until.exists() else ""
    if not text:  # not written yet, or being written
        return [f"{until} does not name a candle yet"]
    wanted = Timestamp(text)
    late = [
        p for p, (df, _) in frames.items() if df.empty or df["date"].iloc[-1] < wanted
    ]
    return [f"no candle at or after {wanted} for: {late}"] if late else []


def follow(
    dp: Any, args: argparse.Namespace, progress: Progress
) -> tuple[bool, list[str], dict[str, Any]]:
    deadline = progress.started + args.timeout
    while True:
        pairs, frames = snapshot(dp, args)
        done = check(pairs, frames, args, progress)
        if done or time.monotonic() >= deadline:
            return done, pairs, frames
        time.sleep(0.05)


def report_timeout(
    args: argparse.Namespace, progress: Progress, tally: LogTally
) -> None:
    print(
        f"freqtrade_consumer: TIMEOUT after {args.timeout:g}s following "
        f"{args.host}:{args.port}; missing:",
        file=sys.stderr,
    )
    for line in progress.missing:
        print(f"  - {line}", file=sys.stderr)
    print(f"  stages reached (s): {progress.stages or 'none'}", file=sys.stderr)
    for line in tally.records[-10:]:
        print(f"  FreqTrade logged: {line}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from freqtrade.data.dataprovider import DataProvider
    from freqtrade.loggers import LOGFORMAT
    from freqtrade.rpc.external_message_consumer import ExternalMessageConsumer

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=LOGFORMAT,
        stream=sys.stderr,
    )
    tally = LogTally()
    logging.getLogger().addHandler(tally)
    config = build_config(args)
    dp = DataProvider(config, None)
    progress = Progress()
    emc = ExternalMessageConsumer(config, dp)
    thread = emc._thread
    try:
        done, pairs, frames = follow(dp, args, progress)
    finally:
        emc.shutdown()
    extra = {
        "role": "consumer",
        "complete": done,
        "missing": progress.missing,
        "stages_s": progress.stages,
        "producer": f"{args.host}:{args.port}",
    }
    write_frames(args.out, pairs, frames, extra=extra)
    if not done:
        report_timeout(args, progress, tally)
    code = EXIT_OK if done else EXIT_TIMEOUT
    if thread is not None and thread.is_alive():
        # shutdown() gave up joining its non-daemon thread: do not hang on exit.
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
