"""Brute-force reference computations for the examples, in plain Python.

Independent of fluvial on purpose (no fluvial import): each function computes
what an example's view, table or printed output must be, directly from the
generated input records (dicts as in the JSON-lines files, in file order).
"""

from __future__ import annotations

import math
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def word_counts(texts: Iterable[str]) -> dict[str, int]:
    """Whitespace-separated words of all texts, counted."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(text.split())
    return dict(counts)


def per_batch_word_counts(batches: Sequence[Sequence[str]]) -> list[dict[str, int]]:
    """Word counts within each batch of lines, words split on single spaces (Spark's split(" "))."""
    out = []
    for lines in batches:
        counts: Counter[str] = Counter()
        for line in lines:
            counts.update(line.split(" "))
        out.append(dict(counts))
    return out


def running_word_outputs(batches: Sequence[Sequence[str]]) -> list[list[tuple[str, int]]]:
    """Per batch, the ``(word, running total)`` emitted for every word occurrence, in order."""
    totals: Counter[str] = Counter()
    out = []
    for lines in batches:
        emitted = []
        for line in lines:
            for word in line.split():
                totals[word] += 1
                emitted.append((word, totals[word]))
        out.append(emitted)
    return out


def hashtags(text: str) -> list[str]:
    return [w for w in text.lower().split() if w.startswith("#")]


def hashtag_totals(tweets: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for t in tweets:
        counts.update(hashtags(t["text"]))
    return dict(counts)


def hashtag_top10(tweets: Iterable[Mapping[str, Any]], *, length_ms: int = 60_000,
                  slide_ms: int = 1_000, n: int = 10) -> dict[tuple[int, int], list[list[Any]]]:
    """Every sliding window ``[s, s + length)`` (s a multiple of slide) holding a hashtag:
    its top ``n`` ``[tag, count]`` by count descending, then tag ascending."""
    windows: dict[int, Counter[str]] = defaultdict(Counter)
    for t in tweets:
        tags = hashtags(t["text"])
        if not tags:
            continue
        ts = t["ts"]
        last = ts - ts % slide_ms                    # the latest window start <= ts
        s = last
        while s > ts - length_ms:                    # every start with s <= ts < s + length
            windows[s].update(tags)
            s -= slide_ms
    out = {}
    for s, counts in windows.items():
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        out[(s, s + length_ms)] = [[tag, c] for tag, c in ranked]
    return out


def late_flags(records: Sequence[Mapping[str, Any]], *, lateness_ms: int, partitions: int = 4,
               device_field: str = "device") -> list[bool]:
    """Per record (file order), whether a stream run flags it late: its ts is below the
    largest ts seen before it in its log partition (crc32(device) % partitions) minus
    the allowed lateness."""
    high: dict[int, int] = {}
    flags = []
    for r in records:
        p = zlib.crc32(str(r[device_field]).encode()) % partitions
        ts = r["ts"]
        h = high.get(p)
        flags.append(h is not None and ts < h - lateness_ms)
        if h is None or ts > h:
            high[p] = ts
    return flags


def device_late_flags(records: Sequence[Mapping[str, Any]], *, lateness_ms: int,
                      device_field: str = "device") -> list[bool]:
    """Per record (file order), whether a stream run counts it late by its device's event
    time: its ts is below the largest ts its own device stamped before it minus the allowed
    lateness (a device maps to one log partition, so file order is its log order)."""
    high: dict[str, int] = {}
    flags = []
    for r in records:
        d, ts = str(r[device_field]), r["ts"]
        h = high.get(d)
        flags.append(h is not None and ts < h - lateness_ms)
        high[d] = ts if h is None else max(h, ts)
    return flags


def device_stats(readings: Iterable[Mapping[str, Any]], *, length_ms: int = 60_000
                 ) -> dict[tuple[str, str, int], dict[str, Any]]:
    """``(device, kind, window start) -> {"count", "min", "max", "mean"}`` over tumbling windows."""
    groups: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for r in readings:
        groups[(r["device"], r["kind"], r["ts"] - r["ts"] % length_ms)].append(r["value"])
    return {k: {"count": len(v), "min": min(v), "max": max(v), "mean": math.fsum(v) / len(v)}
            for k, v in groups.items()}


def exercise_features(readings: Iterable[Mapping[str, Any]], *, length_ms: int = 2_000
                      ) -> dict[tuple[str, int], list[float]]:
    """``(device, window start) -> [mean_x, std_x, mean_y, std_y, mean_z, std_z]``
    (population standard deviation; 0.0 for an axis without readings)."""
    groups: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in readings:
        if r["kind"] in ("accel_x", "accel_y", "accel_z"):
            groups[(r["device"], r["ts"] - r["ts"] % length_ms)][r["kind"]].append(r["value"])
    out = {}
    for k, axes in groups.items():
        feats = []
        for axis in ("accel_x", "accel_y", "accel_z"):
            v = axes.get(axis, [])
            mean = math.fsum(v) / len(v) if v else 0.0
            std = math.sqrt(math.fsum((x - mean) ** 2 for x in v) / len(v)) if v else 0.0
            feats += [mean, std]
        out[k] = feats
    return out


def nearest_centroid(x: Sequence[float], centroids: Mapping[str, Sequence[float]]) -> tuple[str, float]:
    """The nearest label and the margin (second-nearest distance minus nearest)."""
    dists = sorted((math.dist(x, c), label) for label, c in centroids.items())
    return dists[0][1], (dists[1][0] - dists[0][0]) if len(dists) > 1 else math.inf
