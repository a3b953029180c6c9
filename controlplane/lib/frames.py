"""pandas frames that a worker keeps for a long time, appended to on every candle.

Pure module. pandas 3 stores text columns (``enter_tag``, ``exit_tag``) as Arrow
arrays. ``pd.concat`` appends an Arrow column as one more chunk instead of copying,
and a chunk that is a slice of a bigger array keeps that whole array alive: a frame
appended to on every candle grew by one chunk per candle, each holding the full
window the strategy had analysed. A producer worker of 8 pairs grew about
140 MiB per 10 minutes on a 1 s candle until its 1500 rows had all been replaced
(docs/benchmarks.md, soak). ``compacted`` gives such columns back as one array.
"""

from __future__ import annotations

import pandas as pd

# Chunks allowed before a column is rebuilt: the copy is of the kept rows only.
MAX_CHUNKS = 1


def compacted(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each multi-chunk Arrow column rebuilt as one array (in place:
    ``frame`` is a fresh result of concat or a slice of one)."""
    for name in frame.columns:
        values = frame[name].array
        if not isinstance(values, pd.arrays.ArrowExtensionArray):
            continue
        chunks = values.__arrow_array__()
        if chunks.num_chunks > MAX_CHUNKS:
            frame[name] = pd.array(chunks.combine_chunks(), dtype=values.dtype)
    return frame
