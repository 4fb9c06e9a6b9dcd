"""Word count over a generated text file (default 50 MB): fluvial batch and stream,
PySpark (RDD) and plain Python, side by side.

    python bench/word_count.py [--records MB] [--repeat 3]

fluvial runs ``examples/word_count.py`` (the ``pipeline`` users run) over
``line`` events ingested from the file; PySpark and plain Python read the file.
"""

from __future__ import annotations

import operator
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

T0_MS = 1_700_000_000_000
DEVICES = 64  # the lines are spread over 64 "devices", so every log partition gets a share


def pipeline() -> tuple[Any, str]:
    """The flow under test: the example's, or the same flow defined here if it is missing."""
    example = common.load_example("word_count")
    if example is not None:
        return example.pipeline, "word_counts"
    import fluvial

    p = fluvial.Pipeline("word_count")
    (p.from_log("line").map(lambda e: e.payload["text"]).flat_map(str.split)
     .map(lambda w: (w, 1)).reduce_by_key(operator.add).to_view("word_counts"))
    return p, "word_counts"


def events(path: Path) -> Iterator[Any]:
    from fluvial import Event

    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            yield Event(device=f"lines-{i % DEVICES}", kind="line", ts=T0_MS, seq=i,
                        payload={"text": line.rstrip("\n")})


def plain(path: Path) -> dict[str, int]:
    """The tightest straightforward program: one split, one Counter."""
    with open(path, encoding="utf-8") as f:
        return Counter(f.read().split())


def spark(sc: Any, path: Path) -> dict[str, int]:
    """The seed's BasicWordCount in PySpark: textFile, flatMap, map, reduceByKey."""
    counts = (sc.textFile(str(path))
              .flatMap(lambda line: line.split())
              .map(lambda word: (word, 1))
              .reduceByKey(operator.add))
    return dict(counts.collect())


def from_rows(rows: list[Any]) -> dict[str, int]:
    return {r.key: r.value for r in rows}


JOB = common.Job(name="word_count", gen_kind="words", suffix="txt", unit="lines", pipeline=pipeline,
                 events=events, plain=plain, spark=spark, from_rows=from_rows,
                 describe=lambda ref: f"{sum(ref.values()):,} words, {len(ref):,} distinct")

if __name__ == "__main__":
    common.main(JOB, __doc__.splitlines()[0], 50, size_unit="MB of text")
