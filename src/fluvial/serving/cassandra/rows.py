"""Merging and writing the stored rows of a view part in Cassandra (see :mod:`fluvial.serving.stored`).

Accumulators are merged in Python with the view's aggregator, as in the other
stores: :func:`merge` reads the stored rows the new ones meet (through the
transaction's :class:`~fluvial.serving.cassandra.buffer.Buffer`), merges them, and
writes the *merged* values -- absolute values, so the commit that writes them can be
applied twice (:mod:`.commit`) without counting anything twice.  The store's write
lock keeps other writers out between the read and the commit.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any

from fluvial.errors import StoreError
from fluvial.serving.cassandra.buffer import Buffer, Place
from fluvial.serving.stored import ACC_PROTOCOL, ViewMeta

__all__ = ["merge", "upsert"]


def merge(buf: Buffer, meta: ViewMeta, part_no: int, rows: Iterable[tuple[bytes, int, int, bytes]]) -> int:
    """Merge stored rows ``(key, wstart, wend, acc)`` into part ``part_no`` with ``meta.agg``
    (in their order); returns how many were read."""
    agg, loads = meta.agg, pickle.loads
    single: dict[Place, bytes] = {}
    merged: dict[Place, Any] = {}
    n = 0
    try:
        for key, start, end, acc in rows:
            n += 1
            place = (key, start, end)
            if place in merged:
                merged[place] = agg.merge(merged[place], loads(acc))
            elif place in single:
                merged[place] = agg.merge(loads(single.pop(place)), loads(acc))
            else:
                single[place] = acc
        if not single and not merged:
            return n
        stored: dict[Place, Any] = dict(buf.rows_at(meta.view_id, part_no, [*single, *merged]))
        for place, old in stored.items():
            new = merged.pop(place) if place in merged else loads(single.pop(place))
            stored[place] = agg.merge(loads(old), new)
        is_zero = agg.is_zero
        out: list[tuple[Place, bytes | None]] = list(single.items())
        out += [(place, pickle.dumps(acc, ACC_PROTOCOL)) for place, acc in merged.items() if not is_zero(acc)]
        out += [(place, None if is_zero(acc) else pickle.dumps(acc, ACC_PROTOCOL)) for place, acc in stored.items()]
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"view {meta.name!r}: merging rows failed in the aggregator: {exc!r}") from exc
    buf.set_rows(meta.view_id, part_no, out)
    return n


def upsert(buf: Buffer, view_id: int, part_no: int, rows: Iterable[tuple[bytes, int, int, bytes]]) -> None:
    """Write rows whatever is stored (the last of rows at one place wins)."""
    buf.set_rows(view_id, part_no, (((key, start, end), acc) for key, start, end, acc in rows))
