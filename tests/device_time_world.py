"""A world of devices for the device-time tests (issue 11): how devices deliver readings, a
pipeline over them, and the brute force of what every sink must hold.

Each device has its own clock (some behind the others by minutes, one or two hours ahead of
the log's wall clock), goes offline for spells (buffering what it measures) and flushes its
backlog in its own order when it comes back; a few events are also sent late (behind their
own device by up to 90 s, beyond the allowed lateness).  :func:`expected` is the brute force of
:func:`fluvial.testing.brute.split_event_time` for each sink of :func:`pipeline`.
"""

from __future__ import annotations

import operator
import random
import time
from typing import Any

import msgspec

from fluvial import Event, Pipeline, Sliding, Stats, Sum, Tumbling
from fluvial.serving.base import Row
from fluvial.testing import brute

PARTITIONS = 3
MINUTE = Tumbling(length_ms=60_000)
SLIDE = Sliding(length_ms=60_000, slide_ms=20_000)
LATENESS = 30_000
IDLE = 20_000
HORIZON = 15 * 60_000          # short, so that long offline spells reach beyond it
AHEAD = 2 * 3600_000           # a clock two hours ahead of the log's wall clock


def pipeline() -> Pipeline:
    p = Pipeline("device_time")
    readings = p.from_log("reading")
    values = readings.map(lambda e: (e.device, e.payload["value"]))
    stats = values.window(MINUTE, allowed_lateness_ms=LATENESS, idle_timeout_ms=IDLE,
                          correction_horizon_ms=HORIZON).aggregate_by_key(Stats())
    stats.to_view("stats")
    stats.save_to(None, "closed_sums", ["device", "window", "stats"], key_columns=2)
    stats.save_to(None, "final_stats", ["device", "window", "stats"], key_columns=2, emit="final")
    stats.late().map(lambda kv: (kv[0], 1)).reduce_by_key(operator.add).to_view("late_by_device")
    (readings.window(SLIDE, allowed_lateness_ms=LATENESS, idle_timeout_ms=IDLE, correction_horizon_ms=HORIZON)
     .count().to_view("sliding_counts"))
    (values.window(MINUTE, allowed_lateness_ms=LATENESS, watermark="partition", correction_horizon_ms=HORIZON)
     .aggregate_by_key(Sum()).to_view("partition_sums"))
    (values.window(MINUTE, allowed_lateness_ms=LATENESS, correction_horizon_ms=HORIZON)
     .aggregate_by_key(Sum()).top(2).to_view("top2"))
    return p


def minute(e: Event) -> list[tuple[int, int]]:
    return brute.tumbling_windows(e.ts, MINUTE.length_ms)


def slides(e: Event) -> list[tuple[int, int]]:
    return brute.sliding_windows(e.ts, SLIDE.length_ms, SLIDE.slide_ms)


def expected(events: list[Event], ahead: set[str], *, stream: bool, history: int = 0
             ) -> tuple[dict[str, list[Row]], dict[str, int], dict[str, list[dict[str, Any]]]]:
    """Brute-force views, late counts and the rows of the ``save_to`` tables (``history``: the
    events the log held when the stream runner first started)."""
    def split(per: str, idle: int) -> brute.EventTimeSplit:
        if not stream:
            kept = brute.unique(events)
            return brute.EventTimeSplit(kept, [], kept)
        return brute.split_event_time(events, partitions=PARTITIONS, lateness_ms=LATENESS, per=per, idle_ms=idle,
                                      horizon_ms=HORIZON, future=lambda e: e.device in ahead, history=history)

    dev, part = split("device", IDLE), split("partition", 0)
    value = brute.group(((e.device, w), e.payload["value"]) for e in dev.views for w in minute(e))
    views = {
        "stats": brute.rows(value, brute.stats),
        "late_by_device": brute.rows(brute.group(((e.device, None), 1) for e in dev.late), brute.count),
        "sliding_counts": brute.rows(brute.group(((None, w), 1) for e in dev.views for w in slides(e)),
                                     brute.count),
        "partition_sums": brute.rows(brute.group(((e.device, w), e.payload["value"]) for e in part.views
                                                 for w in minute(e)), brute.total),
        "top2": brute.rows(brute.group(((None, w), (e.device, e.payload["value"])) for e in dev.views
                                       for w in minute(e)), brute.top(2, brute.total)),
    }
    late = {"stats": len(dev.late), "late_by_device": 0, "sliding_counts": len(dev.late),
            "partition_sums": len(part.late), "top2": len(dev.late)}
    table = brute.rows(brute.group(((e.device, w), e.payload["value"]) for e in dev.tables for w in minute(e)),
                       brute.stats)
    if stream:   # emit="final": the windows every partition's event time passed by lateness + idle timeout
        tops: dict[int, int] = {}
        for p, part in enumerate(brute.log_order(events, PARTITIONS)):
            stamped = [e.ts for e in part if e.device not in ahead]
            if stamped:
                tops[p] = max(stamped)
        low = min(tops.values()) - LATENESS - IDLE if tops else None
        final = [r for r in table if low is not None and r.window is not None and r.window[1] <= low]
    else:
        final = table
    return views, late, {"closed_sums": _table_rows(table), "final_stats": _table_rows(final)}


def _table_rows(found: list[Row]) -> list[dict[str, Any]]:
    return sorted(({"device": r.key, "window": msgspec.json.encode(list(r.window or ())).decode(),
                    "stats": msgspec.json.encode(r.value).decode()} for r in found),
                  key=lambda r: msgspec.json.encode(list(r.values())))


def device_events(rnd: random.Random, *, n: int, devices: int, ahead: int, behind_ms: int,
                  offline: float, late: float, start_ms: int, step_ms: int = 3_000) -> tuple[list[Event], set[str]]:
    """Arrival order of ``n`` readings: one device per step (0..``step_ms`` apart) measures at
    its own clock; an offline device buffers and flushes in order when it comes back."""
    names = [f"dev-{i:03d}" for i in range(devices)]
    skew = dict.fromkeys(names, 0)
    for d in names[:ahead]:
        skew[d] = AHEAD
    for d in names[ahead:ahead + 2]:
        skew[d] = -behind_ms
    buffered: dict[str, list[Event]] = {d: [] for d in names}
    down: set[str] = set()
    seqs = dict.fromkeys(names, 0)
    clock = start_ms
    out: list[Event] = []
    for _ in range(n):
        clock += rnd.randint(0, step_ms)
        d = rnd.choice(names)
        if d in down and rnd.random() < 0.08:
            down.discard(d)
            out.extend(buffered[d])   # the backlog, in the device's own order
            buffered[d] = []
        elif d not in down and rnd.random() < offline:
            down.add(d)
        seqs[d] += 1
        ts = clock + skew[d] - (rnd.randint(LATENESS + 1, 90_000) if rnd.random() < late else 0)
        e = Event(device=d, kind="reading", ts=ts, seq=seqs[d],
                  payload={"kind": "temp", "value": rnd.randint(-400, 900) / 8})
        (buffered[d] if d in down else out).append(e)
    for d in names:
        out.extend(buffered[d])
    return out, set(names[:ahead])


def now_start() -> int:
    # Readings of the last hour: a clock two hours ahead is in the future of the log's wall clock,
    # the others (at most ~25 simulated minutes from here) are not.
    return int(time.time() * 1000) - 3600_000


CLOCK_AHEAD = "d0"
"""The device whose clock :func:`as_devices_deliver` sets two hours ahead."""


def as_devices_deliver(events: list[Event], offline: dict[str, tuple[float, float]]) -> list[Event]:
    """``events`` (stamped around the wall clock now, e.g. by ``make_events``) as devices deliver
    them: :data:`CLOCK_AHEAD`'s clock runs two hours ahead (future-stamped: it moves no watermark),
    and each device of ``offline`` holds back its events between those fractions of the list,
    flushing them in order when it is back."""
    spans = {d: (int(lo * len(events)), int(hi * len(events))) for d, (lo, hi) in offline.items()}
    held: dict[str, list[Event]] = {d: [] for d in spans}
    out: list[Event] = []
    for i, sent in enumerate(events):
        for d, (_, hi) in spans.items():
            if i == hi:
                out.extend(held[d])
                held[d] = []
        e = msgspec.structs.replace(sent, ts=sent.ts + AHEAD) if sent.device == CLOCK_AHEAD else sent
        span = spans.get(e.device)
        (held[e.device] if span is not None and span[0] <= i < span[1] else out).append(e)
    return out + [e for d in spans for e in held[d]]


def clock_ahead(e: Event) -> bool:
    """Whether ``e`` comes from the clock :func:`as_devices_deliver` set ahead."""
    return e.device == CLOCK_AHEAD

