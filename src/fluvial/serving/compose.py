"""Batch ⊕ realtime: the rows of a query, from the stored parts of a view (every store).

A store reads, for one query, the stored rows of each part it merges: the batch
version (the current one, or the one asked for) and every realtime generation that
no batch version covers yet.  :func:`compose_rows` does the rest, the same for every
store: the accumulators of each key are merged with the aggregator's ``merge`` and
composed into the view's windows by :func:`fluvial.windows.compose` (a sliding window
from its panes, a session from its fragments), then turned into values with
``result()``.
"""

from __future__ import annotations

import pickle
from typing import Any

from fluvial.aggregators.base import Aggregator
from fluvial.serving.base import Row, Window
from fluvial.serving.keys import decode_key
from fluvial.serving.stored import NO_WINDOW
from fluvial.windows.shapes import Explicit, Sliding, Tumbling, WindowShape, compose

StoredRow = tuple[bytes, int, int, bytes]
"""``(key, wstart, wend, acc)`` as stored (see :mod:`fluvial.serving.stored`)."""


def stored_starts(shape: WindowShape | None, from_ms: int | None,
                  to_ms: int | None) -> tuple[int | None, int | None]:
    """The range ``[low, high)`` of stored window starts that a query for windows starting
    in ``[from_ms, to_ms)`` needs (``None``: unbounded), for a store to filter on.

    A sliding window starting before ``to_ms`` takes panes up to its length later; shapes
    whose stored windows are not fixed panes (sessions, explicit windows) are read whole.

    Example:
        >>> from fluvial.windows.shapes import Sliding
        >>> stored_starts(Sliding(length_ms=10, slide_ms=5), 0, 20)
        (0, 30)
    """
    if not isinstance(shape, (Tumbling, Sliding)):
        return None, None
    reach = shape.length_ms if isinstance(shape, Sliding) else 0
    return from_ms, None if to_ms is None else to_ms + reach


def compose_rows(agg: Aggregator[Any, Any, Any], shape: WindowShape | None,
                 fetched: list[list[StoredRow]], from_ms: int | None, to_ms: int | None) -> list[Row]:
    """The rows of a query from the stored rows of each part it reads (``fetched``, one
    list per part), sorted by key (its canonical JSON text), then window start.

    Windows starting outside ``[from_ms, to_ms)`` and zero accumulators are left out.

    Example:
        A count over 10 ms windows sliding by 5 ms is stored as 5 ms panes:

        >>> import pickle
        >>> from fluvial.aggregators import Count
        >>> from fluvial.serving.keys import encode_key
        >>> from fluvial.windows.shapes import Sliding
        >>> batch = [(encode_key("a"), 0, 5, pickle.dumps(2))]
        >>> realtime = [(encode_key("a"), 5, 10, pickle.dumps(3))]
        >>> for row in compose_rows(Count(), Sliding(length_ms=10, slide_ms=5), [batch, realtime], 0, None):
        ...     print(row)
        Row(key='a', window=(0, 10), value=5)
        Row(key='a', window=(5, 15), value=3)
    """
    loads = pickle.loads
    groups: dict[bytes, list[tuple[Window | None, Any]]] = {}
    for rows in fetched:
        for key, start, end, acc in rows:
            if acc is None:
                continue
            window = None if start == NO_WINDOW else (start, end)
            item = (window, loads(acc))
            group = groups.get(key)
            if group is None:
                groups[key] = [item]
            else:
                group.append(item)
    out: list[Row] = []
    result, is_zero = agg.result, agg.is_zero
    simple = shape is None or isinstance(shape, (Tumbling, Explicit))
    for key in sorted(groups):
        parts = groups[key]
        value = decode_key(key)
        if simple and len(fetched) == 1:
            windows: Any = parts  # one part: already one row per window, in order
        else:
            windows = sorted(compose(shape, parts, agg).items(),
                             key=lambda item: item[0] or (0, 0))
        for window, acc in windows:
            if window is not None and ((from_ms is not None and window[0] < from_ms)
                                       or (to_ms is not None and window[0] >= to_ms)):
                continue
            if is_zero(acc):
                continue
            out.append(Row(key=value, window=window, value=result(acc)))
    return out
