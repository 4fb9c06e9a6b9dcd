"""Top-10 hashtags per sliding 60 s window (every 1 s) over generated tweets (default 1M):
fluvial batch and stream, PySpark (RDD) and plain Python, side by side.

    python bench/hashtags.py [--records N] [--repeat 3]

fluvial runs ``examples/hashtag_top10.py`` over ``tweet`` events ingested from
the JSON-lines file; PySpark and plain Python read and parse the file.  Every
window's top 10 (count descending, then tag ascending) is compared.
"""

from __future__ import annotations

import heapq
import json
import operator
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

WINDOW_MS = 60_000
SLIDE_MS = 1_000
TOP = 10


def pipeline() -> tuple[Any, str]:
    """The flow under test: the example's, or the same flow defined here if it is missing."""
    global WINDOW_MS, SLIDE_MS
    example = common.load_example("hashtag_top10")
    if example is not None:
        WINDOW_MS, SLIDE_MS = example.WINDOW_MS, example.SLIDE_MS
        if WINDOW_MS % SLIDE_MS:
            raise SystemExit("the plain and Spark programs assume a window of whole slides")
        return example.pipeline, "hashtag_top10"
    import fluvial

    p = fluvial.Pipeline("hashtag_top10")
    (p.from_log("tweet").flat_map(lambda t: t.payload["text"].lower().split())
     .filter(lambda w: w.startswith("#")).map(lambda t: (t, 1))
     .reduce_by_key_and_window(operator.add, WINDOW_MS, SLIDE_MS, inv=operator.sub)
     .top(TOP).to_view("hashtag_top10"))
    return p, "hashtag_top10"


def events(path: Path) -> Iterator[Any]:
    from fluvial import Event

    for i, t in enumerate(common.json_lines(path)):
        yield Event(device=t["user"], kind="tweet", ts=t["ts"], seq=i,
                    payload={"user": t["user"], "text": t["text"]})


def _rank(tag_count: tuple[str, int]) -> tuple[int, str]:
    return (-tag_count[1], tag_count[0])


def _window_starts(pane: int) -> range:
    """Starts of the sliding windows [s, s + WINDOW_MS) that contain the pane at ``pane``."""
    last = pane - pane % SLIDE_MS
    return range(last - WINDOW_MS + SLIDE_MS, last + 1, SLIDE_MS)


def plain(path: Path) -> dict[tuple[int, int], list[list[Any]]]:
    """Hashtag counts per 1 s pane, then one running Counter slid over the panes."""
    import msgspec

    class Tweet(msgspec.Struct):
        ts: int
        text: str

    decode = msgspec.json.Decoder(Tweet).decode
    pane_ms = SLIDE_MS  # windows are whole numbers of slides (checked in pipeline())
    panes: dict[int, Counter[str]] = defaultdict(Counter)
    with open(path, "rb") as f:
        for line in f:
            t = decode(line)
            tags = [w for w in t.text.lower().split() if w.startswith("#")]
            if tags:
                panes[t.ts - t.ts % pane_ms].update(tags)
    starts = sorted({s for p in panes for s in _window_starts(p)})
    out: dict[tuple[int, int], list[list[Any]]] = {}
    window: Counter[str] = Counter()
    prev = None
    for s in starts:
        if prev is not None and s - prev == SLIDE_MS:
            for p in range(prev + WINDOW_MS, s + WINDOW_MS, pane_ms):
                window.update(panes.get(p, {}))
            for p in range(prev, s, pane_ms):
                window.subtract(panes.get(p, {}))
        else:
            window = Counter()
            for p in range(s, s + WINDOW_MS, pane_ms):
                window.update(panes.get(p, {}))
        prev = s
        best = heapq.nsmallest(TOP, ((k, n) for k, n in window.items() if n > 0), key=_rank)
        if best:
            out[(s, s + WINDOW_MS)] = [[k, n] for k, n in best]
    return out


def spark(sc: Any, path: Path) -> dict[tuple[int, int], list[list[Any]]]:
    """reduceByKeyAndWindow as a batch job: counts per (pane, tag), then per tag a
    sliding sum over its panes, then the top 10 of every window."""
    window_ms, slide_ms = WINDOW_MS, SLIDE_MS

    def tags(line: str) -> list[tuple[tuple[int, str], int]]:
        t = json.loads(line)
        pane = t["ts"] - t["ts"] % slide_ms
        return [((pane, w), 1) for w in t["text"].lower().split() if w.startswith("#")]

    def sliding(item: tuple[str, Any]) -> list[tuple[int, tuple[str, int]]]:
        tag, pane_counts = item
        counts = dict(pane_counts)
        starts = sorted({s for p in counts for s in range(p - window_ms + slide_ms, p + 1, slide_ms)})
        return [(s, (tag, n)) for s in starts
                if (n := sum(counts.get(p, 0) for p in range(s, s + window_ms, slide_ms))) > 0]

    def top(pairs: Any) -> list[list[Any]]:
        return [[k, n] for k, n in heapq.nsmallest(TOP, pairs, key=lambda kv: (-kv[1], kv[0]))]

    result = (sc.textFile(str(path))
              .flatMap(tags)
              .reduceByKey(operator.add)                           # count per (pane, tag)
              .map(lambda kv: (kv[0][1], (kv[0][0], kv[1])))
              .groupByKey()                                        # panes of each tag
              .flatMap(sliding)                                    # (window start, (tag, count))
              .groupByKey()
              .mapValues(top)
              .collect())
    return {(s, s + window_ms): best for s, best in result}


def from_rows(rows: list[Any]) -> dict[tuple[int, int], list[list[Any]]]:
    return {tuple(r.window): [list(kv) for kv in r.value] for r in rows if r.value}


def describe(ref: dict[Any, Any]) -> str:
    first = min(ref) if ref else None
    return (f"{len(ref):,} windows of {WINDOW_MS // 1000} s every {SLIDE_MS // 1000} s; "
            f"first {first}: {ref.get(first, [])[:3]}...")


JOB = common.Job(name="hashtags", gen_kind="tweets", suffix="jsonl", unit="tweets", pipeline=pipeline,
                 events=events, plain=plain, spark=spark, from_rows=from_rows, describe=describe)

if __name__ == "__main__":
    pipeline()  # window shape from the example, before the plain and Spark programs use it
    common.main(JOB, __doc__.splitlines()[0], 1_000_000)
