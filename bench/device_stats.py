"""Per-device statistics (count, min, max, mean) per (device, kind, minute) over generated
readings (default 1M): fluvial batch and stream, PySpark (RDD) and plain Python, side by side.

    python bench/device_stats.py [--records N] [--repeat 3]

fluvial runs ``examples/device_stats.py`` over ``reading`` events ingested from
the JSON-lines file; PySpark and plain Python read and parse the file.  Counts,
minima and maxima must be equal; means too -- fluvial's mean is the exact sum
divided by the count, correctly rounded, and so is plain Python's -- except
PySpark's, a float running sum, which may differ by 1e-9 relative.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

WINDOW_MS = 60_000
LATENESS_MS = 30_000


def pipeline() -> tuple[Any, str]:
    """The flow under test: the example's, or the same flow defined here if it is missing."""
    example = common.load_example("device_stats")
    if example is not None:
        if example.WINDOW.length_ms != WINDOW_MS or example.WINDOW.offset_ms:
            raise SystemExit(f"examples/device_stats.py uses {example.WINDOW}; this benchmark "
                             f"assumes 1-minute tumbling windows")
        return example.pipeline, "device_stats"
    import fluvial

    p = fluvial.Pipeline("device_stats")
    (p.from_log("reading").map(lambda e: ((e.device, e.payload["kind"]), e.payload["value"]))
     .window(fluvial.Tumbling(length_ms=WINDOW_MS), allowed_lateness_ms=LATENESS_MS)
     .aggregate_by_key(fluvial.Stats()).to_view("device_stats"))
    return p, "device_stats"


def events(path: Path) -> Iterator[Any]:
    from fluvial import Event

    for i, r in enumerate(common.json_lines(path)):
        yield Event(device=r["device"], kind="reading", ts=r["ts"], seq=i,
                    payload={"kind": r["kind"], "value": r["value"]})


def exact_mean(values: list[float]) -> float:
    """sum(values) / len(values) computed exactly, then rounded once (as fluvial's Mean).

    A float is ``m * 2**e``; scaled by 2**1074 every float is an exact integer,
    and int true division rounds correctly.
    """
    total = 0
    for v in values:
        n, d = v.as_integer_ratio()
        total += n << (1075 - d.bit_length())
    return total / (len(values) << 1074)


def plain(path: Path) -> dict[tuple[str, str, int], tuple[int, float, float, float]]:
    """Values grouped in a dict per (device, kind, minute), then count/min/max/mean."""
    import msgspec

    class Reading(msgspec.Struct):
        device: str
        ts: int
        kind: str
        value: float

    decode = msgspec.json.Decoder(Reading).decode
    groups: dict[tuple[str, str, int], list[float]] = {}
    with open(path, "rb") as f:
        for line in f:
            r = decode(line)
            key = (r.device, r.kind, r.ts - r.ts % WINDOW_MS)
            vals = groups.get(key)
            if vals is None:
                groups[key] = [r.value]
            else:
                vals.append(r.value)
    return {k: (len(v), min(v), max(v), exact_mean(v)) for k, v in groups.items()}


def spark(sc: Any, path: Path) -> dict[tuple[str, str, int], tuple[int, float, float, float]]:
    """aggregateByKey over (device, kind, minute) with a (count, min, max, sum) accumulator."""
    import json

    window_ms = WINDOW_MS

    def keyed(line: str) -> tuple[tuple[str, str, int], float]:
        r = json.loads(line)
        return (r["device"], r["kind"], r["ts"] - r["ts"] % window_ms), r["value"]

    def seq(acc: tuple[int, float, float, float], v: float) -> tuple[int, float, float, float]:
        return (acc[0] + 1, min(acc[1], v), max(acc[2], v), acc[3] + v)

    def comb(a: tuple[int, float, float, float], b: tuple[int, float, float, float]
             ) -> tuple[int, float, float, float]:
        return (a[0] + b[0], min(a[1], b[1]), max(a[2], b[2]), a[3] + b[3])

    rows = (sc.textFile(str(path))
            .map(keyed)
            .aggregateByKey((0, math.inf, -math.inf, 0.0), seq, comb)
            .mapValues(lambda a: (a[0], a[1], a[2], a[3] / a[0]))
            .collect())
    return dict(rows)


def from_rows(rows: list[Any]) -> dict[tuple[str, str, int], tuple[int, float, float, float]]:
    out = {}
    for r in rows:
        device, kind = r.key
        v = r.value
        out[(device, kind, r.window[0])] = (v["count"], v["min"], v["max"], v["mean"])
    return out


def spark_close(got: tuple[int, float, float, float], want: tuple[int, float, float, float]) -> bool:
    return got[:3] == want[:3] and common.rel_close(got[3], want[3], 1e-9)


def describe(ref: dict[Any, Any]) -> str:
    return f"{len(ref):,} (device, kind, minute) groups"


JOB = common.Job(name="device_stats", gen_kind="readings", suffix="jsonl", unit="readings",
                 pipeline=pipeline, events=events, plain=plain, spark=spark, from_rows=from_rows,
                 spark_close=spark_close, describe=describe)

if __name__ == "__main__":
    common.main(JOB, __doc__.splitlines()[0], 1_000_000)
