"""Closing windows: what an aggregation's table drops, and emits once, when its watermark passes.

A table holds, per key, the partial accumulators of storage windows (panes of tumbling and
sliding windows, fragments of sessions).  Once the operator's watermark ``low`` (see
:mod:`fluvial.windows.watermark`) is at or past a window's end, nothing that reaches the table
can reach that window again, so its panes can go.  A sliding pane is shared by the windows
that hold it: it goes once the last of them, the one it starts, is closed.
"""

from __future__ import annotations

from typing import Any

from fluvial.aggregators.base import Aggregator
from fluvial.windows.shapes import Session, Sliding, WindowShape, compose

__all__ = ["evict"]


def evict(shape: WindowShape, agg: Aggregator[Any, Any, Any], table: dict[Any, dict[Any, Any]], low: int | None,
          *, finals: bool = False) -> list[tuple[Any, tuple[int, int], Any]]:
    """Drop from ``table`` (``key -> {storage window: accumulator}``) the parts of windows closed by
    ``low``; with ``finals``, return ``(key, window, accumulator)`` of each window closed since the
    last call, once: a window when its first part goes (it closed then or before, and nothing
    reaches it after), a session when it ends at or before ``low`` (its fragments go with it).

    Example:
        >>> from fluvial.aggregators import Count
        >>> from fluvial.windows.shapes import Tumbling
        >>> table = {"a": {(0, 10): 2, (10, 20): 1}}
        >>> evict(Tumbling(length_ms=10), Count(), table, 12, finals=True), table
        ([('a', (0, 10), 2)], {'a': {(10, 20): 1}})
    """
    out: list[tuple[Any, tuple[int, int], Any]] = []
    if low is None:
        return out
    reach = shape.length_ms - shape.pane_ms if isinstance(shape, Sliding) else 0
    for k in list(table):
        parts = table[k]
        going = [w for w in parts if w[1] + reach <= low]
        if not going:
            continue
        if finals:
            composed: dict[Any, Any] = compose(shape, parts.items(), agg)
            if isinstance(shape, Session):   # whole sessions only: a fragment of an open one stays
                closed = {w: acc for w, acc in composed.items() if w[1] <= low}
                going = [f for f in going if any(w[0] <= f[0] and f[1] <= w[1] for w in closed)]
            elif isinstance(shape, Sliding):
                gone = set(going)
                closed = {w: acc for w, acc in composed.items()
                          if min(p for p in parts if w[0] <= p[0] and p[1] <= w[1]) in gone}
            else:
                closed = {w: composed[w] for w in going}
            out.extend((k, window, closed[window]) for window in sorted(closed))
        for w in going:
            del parts[w]
        if not parts:
            del table[k]
    return out
