"""Run ``manage.py ARGS`` under tracemalloc, snapshotting it every few seconds.

``python benchmarks/traced.py DIR SECONDS manage.py ARGS...``: the snapshots go to
``DIR/<pid>-<n>.snap`` (``tracemalloc.Snapshot.dump``); compare two with
``python benchmarks/traced.py --compare A.snap B.snap``: the top allocations
that grew between them, by traceback. Spawned processes (``runproducer
--workers N``) are not traced: run ``--workers 1`` to trace the analysis too.

How issue 15's producer growth was found; figures, not a test.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
import tracemalloc
from pathlib import Path

FRAMES = 15


def snapshot_every(directory: Path, seconds: float) -> None:
    def loop() -> None:
        # Tracing from the start would slow the imports ~3x (minutes on a busy
        # machine): growth is in the steady state, so trace from the first period.
        time.sleep(seconds)
        tracemalloc.start(FRAMES)
        n = 0
        while True:
            time.sleep(seconds)
            snap = tracemalloc.take_snapshot()
            snap.dump(str(directory / f"{os.getpid()}-{n:03d}.snap"))
            n += 1

    threading.Thread(target=loop, name="tracemalloc-snapshots", daemon=True).start()


def compare(first: str, second: str, top: int = 15) -> None:
    old = tracemalloc.Snapshot.load(first)
    new = tracemalloc.Snapshot.load(second)
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    old, new = old.filter_traces(ignore), new.filter_traces(ignore)
    total = sum(s.size for s in new.statistics("filename")) / 2**20
    print(f"traced: {total:.1f} MiB in {second}")
    for stat in new.compare_to(old, "traceback")[:top]:
        print(f"\n{stat.size_diff / 2**20:+.2f} MiB ({stat.count_diff:+d} blocks)")
        for line in stat.traceback.format(limit=8, most_recent_first=True):
            print("   ", line)


def main() -> None:
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
        return
    directory, seconds = Path(sys.argv[1]), sys.argv[2]
    directory.mkdir(parents=True, exist_ok=True)
    snapshot_every(directory, float(seconds))
    script = sys.argv[3]
    sys.argv = sys.argv[3:]
    sys.path.insert(0, str(Path(script).resolve().parent))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
