"""The writes of one Cassandra transaction: rows, the moves between parts, checkpoints.

A :class:`CassandraTxn` runs while its store holds the write lock (:mod:`.commit`).
Every read goes through the transaction's :class:`~.buffer.Buffer` (its own writes
over the store), every write lands there, and the store commits them all at once when
the block ends -- or drops them all if it raises.  The lease fence is the one write
done at once: a lightweight transaction on the lease row (:mod:`.leases`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fluvial.errors import StoreError
from fluvial.serving.base import REALTIME, UNSET, Key, Part, Window, _Unset
from fluvial.serving.cassandra import leases, tables, versions
from fluvial.serving.cassandra import rows as stored_rows
from fluvial.serving.cassandra.buffer import Buffer
from fluvial.serving.cassandra.catalog import Catalog
from fluvial.serving.cassandra.db import Db
from fluvial.serving.stored import encode_rows, gc_paused, new_checkpoint_token
from fluvial.state.ownership import Lease

__all__ = ["CassandraTxn"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class CassandraTxn:
    """The writes of one :meth:`CassandraStore.transaction` (see :class:`~fluvial.serving.base.Txn`)."""

    def __init__(self, db: Db, buf: Buffer, catalog: Catalog) -> None:
        self._db = db
        self._buf = buf
        self._catalog = catalog
        self._open = True

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("this transaction has ended; open a new one with store.transaction()")
        self._buf.keep()

    # -- rows ---------------------------------------------------------------------

    def merge_rows(self, view: str, rows: Iterable[tuple[Key, Window | None, Any]], *,
                   part: Part = REALTIME) -> int:
        """Merge ``(key, window, acc)`` rows into a part with the view's ``merge`` (zeros skipped;
        a stored row whose merge gives zero is deleted).  Returns the number of rows read."""
        self._check_open()
        buf, cat = self._buf, self._catalog
        meta = cat.meta_of(buf, view, part)
        part_no = cat.part_no(buf, meta, part)
        counter = [0]
        with gc_paused():
            stored = [row[2:] for row in encode_rows(meta, part_no, rows, counter, skip_zero=True)]
            stored_rows.merge(buf, meta, part_no, stored)
        cat.touch(buf, view)
        return counter[0]

    def put_rows(self, view: str, rows: Iterable[tuple[Key, Window | None, Any]], *,
                 part: Part = REALTIME) -> int:
        """Overwrite ``(key, window, acc)`` rows (for views of "latest" values)."""
        self._check_open()
        buf, cat = self._buf, self._catalog
        meta = cat.meta_of(buf, view, part)
        part_no = cat.part_no(buf, meta, part)
        counter = [0]
        with gc_paused():
            stored = [row[2:] for row in encode_rows(meta, part_no, rows, counter, skip_zero=False)]
            stored_rows.upsert(buf, meta.view_id, part_no, stored)
        cat.touch(buf, view)
        return counter[0]

    def _live_parts(self, view: str) -> list[int]:
        live = self._catalog.live(self._buf, view)
        return [-g for g in range(live.floor, live.meta.rt_gen + 1)]

    def delete_part(self, view: str, part: Part) -> int:
        """Delete every row of a part (``"realtime"``: every realtime generation); returns the count."""
        self._check_open()
        buf, cat = self._buf, self._catalog
        meta = cat.meta(buf, view)
        parts = self._live_parts(view) if part == REALTIME else [cat.part_no(buf, meta, part)]
        n = 0
        for p in parts:
            n += len(buf.part_rows(meta.view_id, p))
            buf.drop_part(meta.view_id, p)
        cat.touch(buf, view)
        return n

    def snapshot_realtime(self, view: str, version: int) -> int:
        """Merge every realtime generation of ``view`` into batch version ``version``; returns the rows."""
        self._check_open()
        buf, cat = self._buf, self._catalog
        meta = cat.meta_of(buf, view, version)
        part = cat.part_no(buf, meta, version)
        with gc_paused():
            realtime = [row for p in sorted(self._live_parts(view), reverse=True)
                        for row in buf.part_rows(meta.view_id, p)]
            stored_rows.merge(buf, meta, part, realtime)
        row = cat.row(buf, view)
        buf.update("fluvial_versions", (meta.view_id, part), late_events=row["late_events"])
        return len(realtime)

    # -- realtime generations and the switch (fluvial.serving.cassandra.versions) ---

    def seal_realtime(self, view: str) -> int:
        """Close the open realtime generation of ``view`` and return its number."""
        self._check_open()
        return versions.seal_realtime(self._catalog, self._buf, view)

    def publish(self, view: str, version: int, cutoff: Mapping[int, int], *,
                drop_realtime: bool = False, realtime_through: int | None = None,
                tails: Sequence[Any] | None = None) -> None:
        """The switch of :meth:`CassandraStore.publish_version`, inside this transaction."""
        self._check_open()
        versions.publish(self._catalog, self._buf, view, version, cutoff, drop_realtime=drop_realtime,
                         realtime_through=realtime_through, tails=tails)

    def reset_realtime(self, view: str, *, retract: bool = False) -> None:
        """Drop every realtime generation of ``view`` (and with ``retract`` the current batch version)."""
        self._check_open()
        versions.reset_realtime(self._catalog, self._buf, view, retract=retract)

    def add_late_events(self, view: str, n: int, *, part: Part = REALTIME) -> None:
        """Count ``n`` late events for the served view, or for the batch version ``part``."""
        self._check_open()
        versions.add_late_events(self._catalog, self._buf, view, n, part=part)

    # -- checkpoints and fencing ------------------------------------------------------

    def set_checkpoint(self, runner_id: str, blob: bytes, *, expect: int | _Unset | None = UNSET) -> int:
        """Write a runner's checkpoint; return its new fencing token (``expect``: compare and set,
        else :class:`~fluvial.errors.CheckpointFenced` voids this whole transaction)."""
        self._check_open()
        token = new_checkpoint_token(runner_id, expect, lambda: self.checkpoint_token(runner_id), self._db.where)
        self._buf.put("fluvial_checkpoints", {"runner_id": runner_id, "blob": bytes(blob),
                                              "updated_ms": _now_ms(), "fence_token": token})
        return token

    def checkpoint_token(self, runner_id: str) -> int | None:
        self._check_open()
        row = self._buf.get("fluvial_checkpoints", runner_id)
        return int(row["fence_token"]) if row is not None else None

    def get_checkpoint(self, runner_id: str) -> bytes | None:
        self._check_open()
        row = self._buf.get("fluvial_checkpoints", runner_id)
        return bytes(row["blob"]) if row is not None else None

    def delete_checkpoint(self, runner_id: str) -> None:
        self._check_open()
        self._buf.delete("fluvial_checkpoints", runner_id)

    def fence(self, lease: Lease) -> None:
        """Go on only while ``lease`` holds (renewing it, at once): else
        :class:`~fluvial.errors.LeaseLost` voids the transaction."""
        self._check_open()
        leases.fence(self._db, lease)

    # -- save_to tables ---------------------------------------------------------------

    def save_rows(self, table: str, columns: list[str], rows: Iterable[Any], *,
                  key_columns: int = 1) -> int:
        """Upsert rows into a user table (the ``save_to`` sink; see :mod:`.tables`)."""
        self._check_open()
        return tables.save_rows(self._db, self._buf, table, columns, rows, key_columns=key_columns)
