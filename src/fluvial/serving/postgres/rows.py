"""Writing the stored rows of a view part in PostgreSQL (see :mod:`fluvial.serving.stored`).

Accumulators are merged in Python with the view's aggregator: :func:`merge` reads
the stored rows that the new ones meet, merges them, then writes in three bulk
statements -- ``COPY`` (binary) for the rows that are new to the part, an upsert
from ``unnest`` arrays for those that changed, a ``DELETE`` for those whose merge
gave zero.  The caller holds the store's write lock (:mod:`.schema`), so no other
writer adds or changes a row between the read and the writes.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fluvial.errors import StoreError
from fluvial.serving.stored import ACC_PROTOCOL, ViewMeta

if TYPE_CHECKING:
    import psycopg

StoredKey = tuple[bytes, int, int]
"""``(key, wstart, wend)``: a row's place in its part."""

# The stored rows at the places of unnest arrays: one primary-key lookup per place.  The
# subquery is LATERAL with OFFSET 0, which the planner cannot flatten into a join: a join
# may be planned as a scan of the whole part per place (the statistics of a part that grew
# inside the transaction say it holds one row), quadratic in the part's size.
_AT_PLACES = ("FROM unnest(%s::bytea[], %s::int8[], %s::int8[]) AS u(key, wstart, wend) CROSS JOIN LATERAL "
              "(SELECT r.ctid AS row_id, r.acc FROM fluvial_rows AS r WHERE r.view_id = %s AND r.part = %s "
              "AND r.key = u.key AND r.wstart = u.wstart AND r.wend = u.wend OFFSET 0) AS r")


def _columns(keys: Iterable[StoredKey]) -> tuple[list[bytes], list[int], list[int]]:
    ks, starts, ends = [], [], []
    for k, s, e in keys:
        ks.append(k)
        starts.append(s)
        ends.append(e)
    return ks, starts, ends


def _aggregator_failed(meta: ViewMeta, exc: Exception) -> StoreError:
    return StoreError(f"view {meta.name!r}: merging rows failed in the aggregator: {exc!r}")


def merge(conn: psycopg.Connection[Any], meta: ViewMeta, part_no: int,
          rows: Iterable[tuple[bytes, int, int, bytes]]) -> int:
    """Merge stored rows ``(key, wstart, wend, acc)`` into part ``part_no`` with the aggregator
    ``meta.agg`` (in their order); returns how many were read."""
    agg, loads = meta.agg, pickle.loads
    single: dict[StoredKey, bytes] = {}     # met once: kept pickled
    merged: dict[StoredKey, Any] = {}       # met more than once, or stored already: merged
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
    except Exception as exc:
        raise _aggregator_failed(meta, exc) from exc
    if not single and not merged:
        return n
    stored = _stored(conn, meta.view_id, part_no, [*single, *merged])   # errors of the server pass
    try:
        for place, old in stored.items():
            new = merged.pop(place) if place in merged else loads(single.pop(place))
            stored[place] = agg.merge(loads(old), new)
        is_zero = agg.is_zero
        fresh = list(single.items())
        fresh += [(place, pickle.dumps(acc, ACC_PROTOCOL)) for place, acc in merged.items() if not is_zero(acc)]
        changed = [(place, pickle.dumps(acc, ACC_PROTOCOL)) for place, acc in stored.items() if not is_zero(acc)]
        zeroed = [place for place, acc in stored.items() if is_zero(acc)]
    except Exception as exc:
        raise _aggregator_failed(meta, exc) from exc
    copy_new(conn, meta.view_id, part_no, fresh)
    update(conn, meta.view_id, part_no, changed)
    delete(conn, meta.view_id, part_no, zeroed)
    return n


def _stored(conn: psycopg.Connection[Any], view_id: int, part_no: int,
            places: list[StoredKey]) -> dict[StoredKey, Any]:
    """The stored accumulators (pickled) of the rows at ``places`` that exist."""
    if conn.execute("SELECT 1 FROM fluvial_rows WHERE view_id = %s AND part = %s LIMIT 1",
                    (view_id, part_no)).fetchone() is None:
        return {}   # an empty part (a new version): nothing to read
    cursor = conn.execute(f"SELECT u.key, u.wstart, u.wend, r.acc {_AT_PLACES}",
                          (*_columns(places), view_id, part_no), binary=True)
    return {(bytes(k), s, e): bytes(acc) for k, s, e, acc in cursor}


def copy_new(conn: psycopg.Connection[Any], view_id: int, part_no: int,
             rows: list[tuple[StoredKey, bytes]]) -> None:
    """Insert rows that are not in the part yet (binary ``COPY``)."""
    if not rows:
        return
    with conn.cursor() as cursor, cursor.copy(
            "COPY fluvial_rows (view_id, part, key, wstart, wend, acc) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "int8", "bytea", "int8", "int8", "bytea"])
        write = copy.write_row
        for (key, start, end), acc in rows:
            write((view_id, part_no, key, start, end, acc))


def update(conn: psycopg.Connection[Any], view_id: int, part_no: int,
           rows: list[tuple[StoredKey, bytes]]) -> None:
    """Replace the accumulators of rows that are in the part (an upsert: ``ON CONFLICT`` finds
    each row through the primary key, whatever the planner thinks of the part's size)."""
    upsert(conn, view_id, part_no, ((key, start, end, acc) for (key, start, end), acc in rows))


def upsert(conn: psycopg.Connection[Any], view_id: int, part_no: int,
           rows: Iterable[tuple[bytes, int, int, bytes]]) -> None:
    """Write rows whatever is stored (the last of rows at one place wins)."""
    latest = {(key, start, end): acc for key, start, end, acc in rows}
    if not latest:
        return
    keys, starts, ends = _columns(latest)
    conn.execute("INSERT INTO fluvial_rows (view_id, part, key, wstart, wend, acc) "
                 "SELECT %s, %s, * FROM unnest(%s::bytea[], %s::int8[], %s::int8[], %s::bytea[]) "
                 "ON CONFLICT (view_id, part, key, wstart, wend) DO UPDATE SET acc = excluded.acc",
                 (view_id, part_no, keys, starts, ends, list(latest.values())), binary=True)


def delete(conn: psycopg.Connection[Any], view_id: int, part_no: int, places: list[StoredKey]) -> None:
    """Delete the rows at ``places``."""
    if places:
        conn.execute(f"DELETE FROM fluvial_rows WHERE ctid = ANY(ARRAY(SELECT r.row_id {_AT_PLACES}))",
                     (*_columns(places), view_id, part_no), binary=True)
