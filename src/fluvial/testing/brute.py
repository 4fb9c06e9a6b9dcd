"""Reference semantics in plain Python, to check runners against (pure).

Nothing here uses the engine, :mod:`fluvial.windows` or the aggregators: the
point is a second, obviously correct implementation of what the runners
must compute, slow and simple.

* the log: :func:`log_order` drops device retries by ``(device, seq)`` and
  routes each device to partition ``crc32(device) % partitions``;
* event time: :func:`split_event_time` replays each partition in log order and
  says which events a stream run's views take, which it counts late (behind
  their device), and which state downstream sees; :func:`split_late` is the
  per-partition rule alone;
* windows: :func:`tumbling_windows`, :func:`sliding_windows` (half-open
  ``[start, end)``, by enumeration) and :func:`sessions`;
* aggregation: :func:`group` then :func:`rows` (in the store's row order),
  with plain functions :func:`total`, :func:`mean`, :func:`stats`, :func:`top`.

Example:
    >>> from fluvial.testing import events_table
    >>> evs = events_table('''
    ... | device | ts   | value |
    ... | d1     | 1000 | 1     |
    ... | d1     | 2500 | 2     |
    ... | d1     | 1200 | 4     |
    ... ''')
    >>> on_time, late = split_late(evs, partitions=1, lateness_ms=1000)
    >>> [e.ts for e in late]
    [1200]
    >>> groups = group(((e.device, w), e.payload["value"]) for e in evs
    ...                for w in tumbling_windows(e.ts, 2000))
    >>> rows(groups, total)
    [Row(key='d1', window=(0, 2000), value=5), Row(key='d1', window=(2000, 4000), value=2)]
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from typing import Any, NamedTuple, TypeVar

import msgspec

from fluvial.events.envelope import Event
from fluvial.serving.base import Row

__all__ = [
    "count",
    "group",
    "log_order",
    "mean",
    "partition_of",
    "rows",
    "sessions",
    "sliding_windows",
    "sort_rows",
    "split_event_time",
    "split_late",
    "stats",
    "top",
    "total",
    "tumbling_windows",
    "unique",
]

T = TypeVar("T")
Window = tuple[int, int]


# -- the log ------------------------------------------------------------------------


def partition_of(device: str, partitions: int) -> int:
    return zlib.crc32(device.encode()) % partitions


def log_order(events: Iterable[Event], partitions: int) -> list[list[Event]]:
    """The events each partition holds, in offset order: first copy of each ``(device, seq)``."""
    seen: set[tuple[str, int]] = set()
    out: list[list[Event]] = [[] for _ in range(partitions)]
    for e in events:
        if (e.device, e.seq) in seen:
            continue
        seen.add((e.device, e.seq))
        out[partition_of(e.device, partitions)].append(e)
    return out


def split_late(events: Iterable[Event], *, partitions: int, lateness_ms: int,
               select: Callable[[Event], bool] = lambda e: True) -> tuple[list[Event], list[Event]]:
    """``(on_time, late)`` among the selected events, after de-duplication.

    ``select`` picks the elements that reach the windowed operator (its
    kind, its filters): only they move its watermark.
    """
    on_time: list[Event] = []
    late: list[Event] = []
    for part in log_order(events, partitions):
        high: int | None = None
        for e in part:
            if not select(e):
                continue
            if high is not None and e.ts < high - lateness_ms:
                late.append(e)
            else:
                on_time.append(e)
            high = e.ts if high is None else max(high, e.ts)
    return on_time, late


class EventTimeSplit(NamedTuple):
    """Where the selected events of a windowed operator go in a stream run."""

    views: list[Event]    # every event but those beyond the correction horizon
    late: list[Event]     # counted late: behind their device (or partition), or beyond the horizon
    tables: list[Event]   # what state downstream of the aggregation sees


def split_event_time(events: Iterable[Event], *, partitions: int, lateness_ms: int,
                     select: Callable[[Event], bool] = lambda e: True, per: str = "device",
                     idle_ms: int = 60_000, horizon_ms: int | None = 7 * 24 * 3600 * 1000,
                     future: Callable[[Event], bool] = lambda e: False, history: int = 0) -> EventTimeSplit:
    """The event-time rules of a stream run, replayed per partition in log order.

    Before an event moves anything: it is *late* if its ``ts`` is more than
    ``lateness_ms`` below the largest ``ts`` seen from its device (``per="device"``)
    or in its partition (``per="partition"``); it is *beyond the horizon* if more than
    ``horizon_ms`` below the largest ``ts`` of its partition (``None``: no horizon, a
    replay); downstream state does not see it if it is more than ``lateness_ms +
    idle_ms`` (``lateness_ms`` per partition) below that.  ``future(e)`` events (a
    clock ahead) are none of these and move no maximum.  The first ``history`` of
    ``events`` are what the log held when the stream runner first started: replayed
    history, never beyond the horizon.
    """
    out = EventTimeSplit([], [], [])
    events = list(events)
    before = {(e.device, e.seq) for e in events[:history]}
    slack = lateness_ms + (idle_ms if per == "device" else 0)
    for part in log_order(events, partitions):
        top: int | None = None
        own: dict[str, int] = {}
        for e in part:
            if not select(e):
                continue
            if future(e):
                out.views.append(e)
                out.tables.append(e)
                continue
            mine = own.get(e.device) if per == "device" else top
            old = (top is not None and horizon_ms is not None and e.ts < top - horizon_ms
                   and (e.device, e.seq) not in before)
            if not old:
                out.views.append(e)
            if old or (mine is not None and e.ts < mine - lateness_ms):
                out.late.append(e)
            if top is None or e.ts >= top - slack:
                out.tables.append(e)
            own[e.device] = max(own.get(e.device, e.ts), e.ts)
            top = e.ts if top is None else max(top, e.ts)
    return out


def unique(events: Iterable[Event]) -> list[Event]:
    """The events the log keeps (first copy of each ``(device, seq)``), any order."""
    return [e for part in log_order(events, 1) for e in part]


# -- windows ------------------------------------------------------------------------


def tumbling_windows(ts: int, length_ms: int, offset_ms: int = 0) -> list[Window]:
    """The one window ``[start, start + length)`` with ``start = offset + k * length`` holding ``ts``."""
    return sliding_windows(ts, length_ms, length_ms, offset_ms)


def sliding_windows(ts: int, length_ms: int, slide_ms: int, offset_ms: int = 0) -> list[Window]:
    """Every window ``[offset + k*slide, offset + k*slide + length)`` holding ``ts``, by enumeration."""
    k = math.floor(Fraction(ts - offset_ms, slide_ms))
    out = []
    # Windows holding ts start in (ts - length, ts]: k * slide goes down from there.
    while offset_ms + k * slide_ms > ts - length_ms:
        start = offset_ms + k * slide_ms
        if start <= ts < start + length_ms:
            out.append((start, start + length_ms))
        k -= 1
    return sorted(out)


def sessions(items: Iterable[tuple[int, T]], gap_ms: int) -> list[tuple[Window, list[T]]]:
    """Sessions of one key: sort by time; a gap of ``gap_ms`` or more after the
    previous element starts a new session; a session is ``[first, last + gap)``."""
    out: list[tuple[Window, list[T]]] = []
    start = last = 0
    members: list[T] = []
    for t, v in sorted(items, key=lambda tv: tv[0]):
        if members and t - last >= gap_ms:
            out.append(((start, last + gap_ms), members))
            members = []
        if not members:
            start = t
        last = t
        members.append(v)
    if members:
        out.append(((start, last + gap_ms), members))
    return out


# -- aggregation --------------------------------------------------------------------


def group(pairs: Iterable[tuple[Any, T]]) -> dict[Any, list[T]]:
    """``{group: [values]}`` from ``(group, value)`` pairs (groups are ``(key, window)``)."""
    out: dict[Any, list[T]] = defaultdict(list)
    for g, v in pairs:
        out[g].append(v)
    return dict(out)


def _row_order(row: Row) -> tuple[bytes, tuple[int, int]]:
    return msgspec.json.encode(row.key), row.window or (0, 0)


def rows(groups: dict[Any, list[Any]], result: Callable[[list[Any]], Any]) -> list[Row]:
    """View rows from ``{(key, window): values}``, sorted as a store returns them
    (by the key's JSON text, then window).  Tuple keys become lists, as in the store."""

    def plain(key: Any) -> Any:
        return [plain(k) for k in key] if isinstance(key, (tuple, list)) else key

    out = [Row(key=plain(k), window=w, value=result(vs)) for (k, w), vs in groups.items() if vs]
    return sorted(out, key=_row_order)


def sort_rows(found: Iterable[Row]) -> list[Row]:
    """Rows in the store's order (for rows assembled from several sources)."""
    return sorted(found, key=_row_order)


def count(values: Sequence[Any]) -> int:
    return len(values)


def total(values: Sequence[Any]) -> int | float:
    """The exact sum, correctly rounded to a float if any value is a float."""
    if all(type(v) is int for v in values):
        return sum(values)
    return float(sum(map(Fraction, values)))


def mean(values: Sequence[Any]) -> float:
    """The exact mean, correctly rounded."""
    return float(sum(map(Fraction, values)) / len(values))


def stats(values: Sequence[Any]) -> dict[str, Any]:
    return {"count": len(values), "min": min(values), "max": max(values), "mean": mean(values)}


def top(n: int, result: Callable[[list[Any]], Any] = count) -> Callable[[list[tuple[Any, Any]]], list[list[Any]]]:
    """The result of ``top(n)`` over ``(key, value)`` pairs: the ``n`` keys with the
    largest ``result(values)``, by result descending then key ascending."""

    def pick(pairs: list[tuple[Any, Any]]) -> list[list[Any]]:
        per_key = group(pairs)
        ranked = sorted(((k, result(vs)) for k, vs in per_key.items()), key=lambda kv: (-kv[1], kv[0]))
        return [[k, v] for k, v in ranked[:n]]

    return pick
