"""A catalog of reference flows, each with its brute-force expectation.

The conformance suite runs every flow here on every runner and compares the
rows with each other and with :mod:`fluvial.testing.brute`; a new runner
(Spark, edge) passes when it gives the same rows.  Flows read events of kind
``reading`` (and ``status`` for the join) whose payload is the one of
:func:`~fluvial.testing.make_events`: ``{"value": float, "level": int, "color": str}``.

Lateness: a windowed flow has ``lateness_ms`` (its allowed lateness).  In a
stream run, its view holds every event within the correction horizon (late
ones correct their window) and counts those behind their device as late; its
``save_to`` table (state downstream of the aggregation) sees the events whose
window was still open (:func:`~fluvial.testing.brute.split_event_time`); in a
batch run both hold every event.  Flows without a window (``lateness_ms is
None``) see every event on every runner.

Example:
    >>> from fluvial.testing import make_events
    >>> evs = make_events(1, 50, kinds=["reading", "status"])
    >>> expected = expected_views(CATALOG, evs, partitions=4, stream=True)
    >>> sorted(expected)[:3]
    ['color_counts', 'counts_by_device', 'join_pairs']
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from fluvial.aggregators import Mean, Stats, Sum
from fluvial.events.envelope import Event
from fluvial.flow.graph import Flow, Pipeline
from fluvial.serving.base import Row
from fluvial.testing import brute
from fluvial.windows.shapes import Session, Sliding, Tumbling

__all__ = ["CATALOG", "Case", "Sources", "build_pipeline", "expected_late", "expected_tables",
           "expected_views"]


@dataclass(frozen=True)
class Sources:
    """The log sources a case builds on (shared by every case of a pipeline)."""

    readings: Flow[Event]
    statuses: Flow[Event]


@dataclass(frozen=True)
class Case:
    """One reference flow.

    Attributes:
        name: Its view name.
        build: Adds the flow and its ``to_view(name)`` (and maybe ``save_to``) sinks.
        expect: Brute-force rows of the view from the events it sees (de-duplicated).
        lateness_ms: Allowed lateness of its windowed aggregation, None without window.
        select: Which events reach the windowed aggregation (they alone move its watermark).
        tables: Brute-force rows of its ``save_to`` tables: ``{table: rows(events)}``.
    """

    name: str
    build: Callable[[Sources], None]
    expect: Callable[[list[Event]], list[Row]]
    lateness_ms: int | None = None
    select: Callable[[Event], bool] = lambda e: e.kind == "reading"
    tables: dict[str, Callable[[list[Event]], list[dict[str, Any]]]] | None = None


def _readings(events: Iterable[Event]) -> list[Event]:
    return [e for e in events if e.kind == "reading"]


def _windows(shape: Tumbling | Sliding, ts: int) -> list[tuple[int, int]]:
    if isinstance(shape, Tumbling):
        return brute.tumbling_windows(ts, shape.length_ms, shape.offset_ms)
    return brute.sliding_windows(ts, shape.length_ms, shape.slide_ms, shape.offset_ms)


def _windowed(shape: Tumbling | Sliding, key: Callable[[Event], Any], value: Callable[[Event], Any],
              result: Callable[[list[Any]], Any]) -> Callable[[list[Event]], list[Row]]:
    def expect(events: list[Event]) -> list[Row]:
        return brute.rows(brute.group(((key(e), w), value(e)) for e in _readings(events)
                                      for w in _windows(shape, e.ts)), result)
    return expect


def _keyed(key: Callable[[Event], Any], value: Callable[[Event], Any],
           result: Callable[[list[Any]], Any]) -> Callable[[list[Event]], list[Row]]:
    def expect(events: list[Event]) -> list[Row]:
        return brute.rows(brute.group(((key(e), None), value(e)) for e in _readings(events)), result)
    return expect


def _device(e: Event) -> str:
    return e.device


def _value(e: Event) -> Any:
    return e.payload["value"]


def _level(e: Event) -> Any:
    return e.payload["level"]


def _color(e: Event) -> Any:
    return e.payload["color"]


# -- the cases ----------------------------------------------------------------------------

TUMBLING = Tumbling(length_ms=10_000, offset_ms=1_000)
SLIDING = Sliding(length_ms=30_000, slide_ms=10_000)
SLIDING_UNEVEN = Sliding(length_ms=25_000, slide_ms=10_000, offset_ms=3_000)
SLIDING_COLORS = Sliding(length_ms=20_000, slide_ms=5_000)
TOP_WINDOW = Tumbling(length_ms=20_000)
SESSION = Session(gap_ms=3_000)
JOIN_WINDOW = Tumbling(length_ms=10_000)
MINUTE = Tumbling(length_ms=60_000)


def _counts(s: Sources) -> None:
    table = s.readings.map(lambda e: (e.device, 1)).reduce_by_key(operator.add)
    table.to_view("counts_by_device")
    table.save_to(None, "device_counts", ["device", "n"])


def _counts_table(events: list[Event]) -> list[dict[str, Any]]:
    return [{"device": r.key, "n": r.value} for r in _keyed(_device, _device, brute.count)(events)]


def _tumbling_sum(s: Sources) -> None:
    table = (s.readings.map(lambda e: (e.device, e.payload["value"]))
             .window(TUMBLING, allowed_lateness_ms=2_000).aggregate_by_key(Sum()))
    table.to_view("tumbling_sum")
    table.save_to(None, "tumbling_sums", ["device", "window", "total"], key_columns=2)


def _tumbling_table(events: list[Event]) -> list[dict[str, Any]]:
    rows = _windowed(TUMBLING, _device, _value, brute.total)(events)
    return [{"device": r.key, "window": msgspec.json.encode(list(r.window or ())).decode(),
             "total": r.value} for r in rows]


def _state_running(s: Sources) -> None:
    def running(key: str, level: int, state: tuple[int, int] | None) -> tuple[tuple[int, int], Any]:
        n, total = state or (0, 0)
        new = (n + 1, total + level)
        return new, (key, list(new))

    s.readings.map(lambda e: (e.device, e.payload["level"])).map_with_state(running).to_view("state_running")


def _state_update(s: Sources) -> None:
    (s.readings.map(lambda e: (e.device, e.payload["level"]))
     .update_state_by_key(lambda values, state: (state or 0) + sum(values) + len(values))
     .to_view("state_update"))


def _join(s: Sources) -> None:
    left = s.readings.map(lambda e: (e.device, e.payload["level"]))
    right = s.statuses.map(lambda e: (e.device, e.payload["level"]))
    (left.join(right, window=JOIN_WINDOW)
     .map(lambda kv: (kv[0], (kv[1][0] + 1) * (kv[1][1] + 1)))
     .aggregate_by_key(Sum()).to_view("join_pairs"))


def _join_expect(events: list[Event]) -> list[Row]:
    by_key: dict[tuple[str, Any], list[Event]] = brute.group(
        ((e.device, brute.tumbling_windows(e.ts, JOIN_WINDOW.length_ms)[0]), e)
        for e in events if e.kind == "status")
    pairs = (((r.device, None), (r.payload["level"] + 1) * (s.payload["level"] + 1))
             for r in _readings(events)
             for s in by_key.get((r.device, brute.tumbling_windows(r.ts, JOIN_WINDOW.length_ms)[0]), []))
    return brute.rows(brute.group(pairs), brute.total)


def _top_window(events: list[Event]) -> list[Row]:
    groups = brute.group(((None, w), (e.device, e.payload["value"])) for e in _readings(events)
                         for w in _windows(TOP_WINDOW, e.ts))
    return brute.rows(groups, brute.top(2, brute.total))


def _top_colors(events: list[Event]) -> list[Row]:
    return brute.rows(brute.group(((None, None), (_color(e), 1)) for e in _readings(events)),
                      brute.top(3, brute.count))


def _sessions(events: list[Event]) -> list[Row]:
    per_device = brute.group((e.device, (e.ts, e.payload["value"])) for e in _readings(events))
    return brute.rows({(d, w): vs for d, items in per_device.items()
                       for w, vs in brute.sessions(items, SESSION.gap_ms)}, brute.stats)


def _state_running_expect(events: list[Event]) -> list[Row]:
    return brute.rows(brute.group(((e.device, None), e.payload["level"]) for e in _readings(events)),
                      lambda levels: [len(levels), sum(levels)])


def _state_update_expect(events: list[Event]) -> list[Row]:
    return brute.rows(brute.group(((e.device, None), e.payload["level"]) for e in _readings(events)),
                      lambda levels: sum(levels) + len(levels))


CATALOG: tuple[Case, ...] = (
    Case("counts_by_device", _counts, _keyed(_device, _device, brute.count),
         tables={"device_counts": _counts_table}),
    Case("stats_by_device",
         lambda s: s.readings.map(lambda e: (e.device, e.payload["value"])).aggregate_by_key(Stats())
         .to_view("stats_by_device"),
         _keyed(_device, _value, brute.stats)),
    Case("color_counts", lambda s: s.readings.map(lambda e: e.payload["color"]).count_by_value()
         .to_view("color_counts"),
         _keyed(_color, _color, brute.count)),
    Case("top_colors", lambda s: s.readings.map(lambda e: (e.payload["color"], 1)).reduce_by_key(operator.add)
         .top(3).to_view("top_colors"),
         _top_colors),
    Case("tumbling_sum", _tumbling_sum, _windowed(TUMBLING, _device, _value, brute.total),
         lateness_ms=2_000, tables={"tumbling_sums": _tumbling_table}),
    Case("sliding_mean",
         lambda s: s.readings.map(lambda e: (e.device, e.payload["value"]))
         .window(SLIDING, allowed_lateness_ms=5_000).aggregate_by_key(Mean()).to_view("sliding_mean"),
         _windowed(SLIDING, _device, _value, brute.mean), lateness_ms=5_000),
    Case("sliding_stats_uneven",
         lambda s: s.readings.map(lambda e: (e.device, e.payload["value"]))
         .window(SLIDING_UNEVEN).aggregate_by_key(Stats()).to_view("sliding_stats_uneven"),
         _windowed(SLIDING_UNEVEN, _device, _value, brute.stats), lateness_ms=0),
    Case("sliding_color_counts",
         lambda s: s.readings.map(lambda e: e.payload["color"])
         .window(SLIDING_COLORS, allowed_lateness_ms=1_000).count_by_value().to_view("sliding_color_counts"),
         _windowed(SLIDING_COLORS, _color, _color, brute.count), lateness_ms=1_000),
    Case("minute_count",
         lambda s: s.readings.window(MINUTE, allowed_lateness_ms=500).count().to_view("minute_count"),
         _windowed(MINUTE, lambda e: None, _device, brute.count), lateness_ms=500),
    Case("session_stats",
         lambda s: s.readings.map(lambda e: (e.device, e.payload["value"]))
         .window(SESSION, allowed_lateness_ms=10_000).aggregate_by_key(Stats()).to_view("session_stats"),
         _sessions, lateness_ms=10_000),
    Case("top_window",
         lambda s: s.readings.map(lambda e: (e.device, e.payload["value"]))
         .window(TOP_WINDOW, allowed_lateness_ms=3_000).aggregate_by_key(Sum()).top(2).to_view("top_window"),
         _top_window, lateness_ms=3_000),
    Case("state_running", _state_running, _state_running_expect),
    Case("state_update", _state_update, _state_update_expect),
    Case("join_pairs", _join, _join_expect),
)


# -- putting cases together ------------------------------------------------------------------

def build_pipeline(cases: Sequence[Case], name: str = "catalog") -> Pipeline:
    """One pipeline holding every case (sharing the log sources)."""
    p = Pipeline(name)
    sources = Sources(p.from_log("reading"), p.from_log("status"))
    for case in cases:
        case.build(sources)
    return p


def _seen(case: Case, events: Sequence[Event], partitions: int, stream: bool,
          future: Callable[[Event], bool] | None = None) -> tuple[list[Event], int, list[Event]]:
    """The events a case's view covers, how many it counts late, and the events its
    ``save_to`` tables see (``future(e)``: stamped ahead of when the log stored it)."""
    kept = brute.unique(events)
    if not stream or case.lateness_ms is None:
        return kept, 0, kept
    split = brute.split_event_time(events, partitions=partitions, lateness_ms=case.lateness_ms,
                                   select=case.select, future=future or (lambda e: False))
    others = [e for e in kept if not case.select(e)]
    return split.views + others, len(split.late), split.tables + others


def expected_views(cases: Sequence[Case], events: Sequence[Event], *, partitions: int,
                   stream: bool, future: Callable[[Event], bool] | None = None) -> dict[str, list[Row]]:
    """Brute-force rows per view for a batch run (``stream=False``: every event)
    or a stream run (windowed views: every event within the correction horizon);
    ``future(e)``: the event is stamped ahead of the time the log stored it."""
    return {c.name: c.expect(_seen(c, events, partitions, stream, future)[0]) for c in cases}


def expected_late(cases: Sequence[Case], events: Sequence[Event], *, partitions: int,
                  future: Callable[[Event], bool] | None = None) -> dict[str, int]:
    """Brute-force late counts per view of a stream run."""
    return {c.name: _seen(c, events, partitions, True, future)[1] for c in cases}


def expected_tables(cases: Sequence[Case], events: Sequence[Event], *, partitions: int,
                    stream: bool, future: Callable[[Event], bool] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Brute-force rows of the ``save_to`` tables, sorted as :func:`read_results` sorts them."""
    out = {}
    for c in cases:
        seen = _seen(c, events, partitions, stream, future)[2]
        for table, rows in (c.tables or {}).items():
            out[table] = sorted(rows(seen), key=lambda r: msgspec.json.encode(list(r.values())))
    return out
