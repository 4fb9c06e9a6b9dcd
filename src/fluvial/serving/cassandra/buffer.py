"""The writes of one Cassandra transaction, kept in memory until its commit.

Cassandra has no multi-row transaction, so a :class:`Buffer` plays one: every read
of the transaction goes through it (this transaction's own writes over what the
store holds), every write lands in it, and :meth:`Buffer.ops` turns the writes into
the list of idempotent operations that :mod:`.commit` records and applies.  Values
written are absolute (a merged accumulator, a whole metadata row), never deltas, so
applying the list twice is applying it once.

The operations, as plain lists (encoded with msgpack in the redo record):

- ``["put", table, [values of TABLE_COLUMNS[table]]]``: write a whole row;
- ``["del", table, [primary key values]]``: delete a row;
- ``["drop", view_id, part]``: delete every row of a view part (a partition delete per bucket);
- ``["rows", view_id, part, bucket, [[key, wstart, wend, acc or None], ...]]``: view rows
  written (``None``: deleted);
- ``["save", table, columns, [[JSON text per column], ...]]``: ``save_to`` rows.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from fluvial.errors import StoreError
from fluvial.serving.cassandra.db import BUCKETS, Db

__all__ = ["TABLE_COLUMNS", "TABLE_KEYS", "Buffer", "bucket_of"]

TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "fluvial_views": ("name",),
    "fluvial_versions": ("view_id", "version"),
    "fluvial_checkpoints": ("runner_id",),
    "fluvial_tables": ("name",),
}
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "fluvial_views": ("name", "view_id", "aggregator", "agg_spec", "agg_rev", "window_spec", "alias_version",
                      "previous_version", "next_version", "created_ms", "updated_ms", "late_events", "rt_gen",
                      "rt_floor", "sealed_gen", "sealed_late"),
    "fluvial_versions": ("view_id", "version", "cutoff", "created_ms", "published_ms", "aggregator", "agg_spec",
                         "window_spec", "late_events", "cutoff_tails"),
    "fluvial_checkpoints": ("runner_id", "blob", "updated_ms", "fence_token"),
    "fluvial_tables": ("name", "columns", "key_columns"),
}
Place = tuple[bytes, int, int]
"""``(key, wstart, wend)``: a view row's place in its part."""
POINT_READS = 24
"""Up to this many places of one bucket are read one by one; more: the whole bucket."""


def bucket_of(key: bytes) -> int:
    return zlib.crc32(key) % BUCKETS


def _select(table: str, where: tuple[str, ...]) -> str:
    cond = " AND ".join(f"{c} = ?" for c in where)
    return f"SELECT {', '.join(TABLE_COLUMNS[table])} FROM {table}" + (f" WHERE {cond}" if cond else "")


class Buffer:
    """Reads through to the store with this transaction's writes over them (see the module doc).

    Args:
        db: The store's session.
        writable: ``False`` for a read outside any transaction (writes raise).
        keep: Called now and then during long reads, to keep the write lock alive.
    """

    def __init__(self, db: Db, *, writable: bool, keep: Callable[[], None] | None = None) -> None:
        self.db = db
        self.writable = writable
        self.keep = keep or (lambda: None)
        self.records: dict[tuple[str, tuple[Any, ...]], dict[str, Any] | None] = {}
        self.dropped: set[tuple[int, int]] = set()
        self.view_rows: dict[tuple[int, int, int], dict[Place, bytes | None]] = defaultdict(dict)
        self.saves: dict[str, tuple[list[str], dict[tuple[Any, ...], list[Any]]]] = {}
        self.key_columns: dict[str, int] = {}

    def _check_writable(self) -> None:
        if not self.writable:
            raise StoreError("a read of the Cassandra store cannot write: open store.transaction()")

    # -- metadata tables ------------------------------------------------------------

    def get(self, table: str, *pk: Any) -> dict[str, Any] | None:
        """The row of ``table`` with primary key ``pk`` (``None``: none)."""
        mark = (table, pk)
        if mark in self.records:
            row = self.records[mark]
            return None if row is None else dict(row)
        got = self.db.run(_select(table, TABLE_KEYS[table]), pk).one()
        return None if got is None else dict(zip(TABLE_COLUMNS[table], got))

    def scan(self, table: str, **where: Any) -> list[dict[str, Any]]:
        """Every row of ``table`` (``where``: of one partition), with this transaction's writes."""
        keys = TABLE_KEYS[table]
        found: dict[tuple[Any, ...], dict[str, Any] | None] = {}
        for got in self.db.run(_select(table, tuple(where)), tuple(where.values())):
            row = dict(zip(TABLE_COLUMNS[table], got))
            found[tuple(row[k] for k in keys)] = row
        for (name, pk), mine in self.records.items():
            if name == table and all(dict(zip(keys, pk)).get(k) == v for k, v in where.items()):
                found[pk] = None if mine is None else dict(mine)
        return [row for _pk, row in sorted(found.items(), key=lambda item: item[0]) if row is not None]

    def put(self, table: str, row: dict[str, Any]) -> None:
        self._check_writable()
        columns = TABLE_COLUMNS[table]
        unknown = set(row) - set(columns)
        if unknown:
            raise StoreError(f"internal: {table} has no columns {sorted(unknown)}")
        self.records[(table, tuple(row[k] for k in TABLE_KEYS[table]))] = {c: row.get(c) for c in columns}

    def update(self, table: str, pk: tuple[Any, ...], **changes: Any) -> dict[str, Any]:
        """Change some columns of an existing row; returns the new row."""
        row = self.get(table, *pk)
        if row is None:
            raise StoreError(f"a row of {table} vanished during a transaction (key {pk})")
        row.update(changes)
        self.put(table, row)
        return row

    def delete(self, table: str, *pk: Any) -> None:
        self._check_writable()
        self.records[(table, pk)] = None

    # -- view rows ------------------------------------------------------------------

    def _bucket_rows(self, view_id: int, part: int, buckets: Iterable[int]) -> dict[int, dict[Place, bytes]]:
        """The stored rows of some buckets of a part (this transaction's writes over them)."""
        buckets = list(buckets)
        out: dict[int, dict[Place, bytes]] = {b: {} for b in buckets}
        if (view_id, part) not in self.dropped:
            results = self.db.many(("SELECT key, wstart, wend, acc FROM fluvial_rows WHERE view_id = ? AND part = ? "
                                    "AND bucket = ?", (view_id, part, b)) for b in buckets)
            for b, result in zip(buckets, results):
                out[b] = {(bytes(k), s, e): bytes(acc) for k, s, e, acc in result}
                self.keep()
        for b in buckets:
            for place, acc in self.view_rows.get((view_id, part, b), {}).items():
                if acc is None:
                    out[b].pop(place, None)
                else:
                    out[b][place] = acc
        return out

    def part_rows(self, view_id: int, part: int) -> list[tuple[bytes, int, int, bytes]]:
        """Every row of a part, sorted by place."""
        rows = [(*place, acc) for got in self._bucket_rows(view_id, part, range(BUCKETS)).values()
                for place, acc in got.items()]
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        return rows

    def key_rows(self, view_id: int, part: int, key: bytes) -> list[tuple[bytes, int, int, bytes]]:
        """The rows of one key in a part."""
        got = self._bucket_rows(view_id, part, [bucket_of(key)])[bucket_of(key)]
        return sorted((*place, acc) for place, acc in got.items() if place[0] == key)

    def rows_at(self, view_id: int, part: int, places: Iterable[Place]) -> dict[Place, bytes]:
        """The stored accumulators (pickled) of the rows at ``places`` that exist."""
        by_bucket: dict[int, list[Place]] = defaultdict(list)
        for place in places:
            by_bucket[bucket_of(place[0])].append(place)
        whole = [b for b, ps in by_bucket.items() if len(ps) > POINT_READS]
        found: dict[Place, bytes] = {}
        for b, got in self._bucket_rows(view_id, part, whole).items():
            wanted = set(by_bucket[b])
            found.update((p, acc) for p, acc in got.items() if p in wanted)
        points = [(b, p) for b, ps in by_bucket.items() if b not in whole for p in ps]
        if (view_id, part) not in self.dropped:
            results = self.db.many(("SELECT acc FROM fluvial_rows WHERE view_id = ? AND part = ? AND bucket = ? "
                                    "AND key = ? AND wstart = ? AND wend = ?", (view_id, part, b, *p))
                                   for b, p in points)
            for (_b, p), result in zip(points, results):
                row = result.one()
                if row is not None:
                    found[p] = bytes(row[0])
        for b, p in points:
            mine = self.view_rows.get((view_id, part, b), {})
            if p in mine:
                acc = mine[p]
                if acc is None:
                    found.pop(p, None)
                else:
                    found[p] = acc
        return found

    def set_rows(self, view_id: int, part: int, rows: Iterable[tuple[Place, bytes | None]]) -> None:
        """Write (``None``: delete) view rows of a part."""
        self._check_writable()
        for place, acc in rows:
            self.view_rows[(view_id, part, bucket_of(place[0]))][place] = acc

    def drop_part(self, view_id: int, part: int) -> None:
        """Delete every row of a part (rows written to it later in this transaction stay)."""
        self._check_writable()
        self.dropped.add((view_id, part))
        for b in range(BUCKETS):
            self.view_rows.pop((view_id, part, b), None)

    # -- save_to tables -------------------------------------------------------------

    def save(self, table: str, columns: list[str], key_columns: int, rows: Iterable[list[Any]]) -> None:
        """Upsert ``save_to`` rows (values already JSON text); the last of one key wins."""
        self._check_writable()
        _cols, latest = self.saves.setdefault(table, (columns, {}))
        self.key_columns[table] = key_columns
        for row in rows:
            latest[tuple(row[:key_columns])] = row

    # -- the commit ---------------------------------------------------------------

    def ops(self) -> list[list[Any]]:
        """The operations of this transaction (see the module doc), for :mod:`.commit`."""
        ops: list[list[Any]] = [["drop", v, p] for v, p in sorted(self.dropped)]
        for (table, pk), row in self.records.items():
            if row is None:
                ops.append(["del", table, list(pk)])
            else:
                ops.append(["put", table, [row[c] for c in TABLE_COLUMNS[table]]])
        for (view_id, part, b), rows in self.view_rows.items():
            if rows:
                ops.append(["rows", view_id, part, b, [[*place, acc] for place, acc in rows.items()]])
        for table, (columns, latest) in self.saves.items():
            if latest:
                ops.append(["save", table, columns, list(latest.values())])
        return ops
