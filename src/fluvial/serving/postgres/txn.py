"""The writes of one PostgreSQL transaction: rows, the moves between parts, checkpoints.

Everything a :class:`PostgresTxn` does runs in the one transaction its store began
(holding the store's write lock): a stream runner's view changes, checkpoint and
fence commit together or not at all.  Rows are merged in Python (:mod:`.rows`);
the moves between parts are those of the SQLite store (:mod:`.versions`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fluvial.errors import StoreError
from fluvial.serving.base import REALTIME, UNSET, Key, Part, Window, _Unset
from fluvial.serving.postgres import leases, tables, versions
from fluvial.serving.postgres import rows as stored_rows
from fluvial.serving.postgres.catalog import Catalog
from fluvial.serving.stored import encode_rows, gc_paused, new_checkpoint_token
from fluvial.state.ownership import Lease

if TYPE_CHECKING:
    import psycopg


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class PostgresTxn:
    """The writes of one :meth:`PostgresStore.transaction` (see :class:`~fluvial.serving.base.Txn`)."""

    def __init__(self, conn: psycopg.Connection[Any], catalog: Catalog, where: str) -> None:
        self._conn = conn
        self._catalog = catalog
        self._where = where
        self._open = True

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("this transaction has ended; open a new one with store.transaction()")

    # -- rows ---------------------------------------------------------------------

    def merge_rows(self, view: str, rows: Iterable[tuple[Key, Window | None, Any]], *,
                   part: Part = REALTIME) -> int:
        """Merge ``(key, window, acc)`` rows into a part with the view's ``merge``.

        Rows whose accumulator is zero are skipped; a stored row whose merged
        accumulator becomes zero is deleted.  Returns the number of rows read.
        """
        self._check_open()
        meta = self._catalog.meta_of(view, part)
        part_no = self._catalog.part_no(meta, part)
        counter = [0]
        with gc_paused():
            stored = [row[2:] for row in encode_rows(meta, part_no, rows, counter, skip_zero=True)]
            stored_rows.merge(self._conn, meta, part_no, stored)
        self._catalog.touch(meta.view_id)
        return counter[0]

    def put_rows(self, view: str, rows: Iterable[tuple[Key, Window | None, Any]], *,
                 part: Part = REALTIME) -> int:
        """Overwrite ``(key, window, acc)`` rows (for views of "latest" values)."""
        self._check_open()
        meta = self._catalog.meta_of(view, part)
        part_no = self._catalog.part_no(meta, part)
        counter = [0]
        with gc_paused():
            stored = [row[2:] for row in encode_rows(meta, part_no, rows, counter, skip_zero=False)]
            stored_rows.upsert(self._conn, meta.view_id, part_no, stored)
        self._catalog.touch(meta.view_id)
        return counter[0]

    def delete_part(self, view: str, part: Part) -> int:
        """Delete every row of a part (the version itself stays; ``"realtime"``: every
        realtime generation); returns the count."""
        self._check_open()
        meta = self._catalog.meta(view)
        if part == REALTIME:
            cursor = self._conn.execute("DELETE FROM fluvial_rows WHERE view_id = %s AND part <= 0",
                                        (meta.view_id,))
        else:
            cursor = self._conn.execute("DELETE FROM fluvial_rows WHERE view_id = %s AND part = %s",
                                        (meta.view_id, self._catalog.part_no(meta, part)))
        self._catalog.touch(meta.view_id)
        return cursor.rowcount

    def snapshot_realtime(self, view: str, version: int) -> int:
        """Merge every realtime generation of ``view`` into batch version ``version``
        (the speed layer's part, kept as a version of its own); returns the rows written."""
        self._check_open()
        meta = self._catalog.meta_of(view, version)
        part = self._catalog.part_no(meta, version)
        with gc_paused():
            realtime = [(bytes(k), s, e, bytes(acc)) for k, s, e, acc in self._conn.execute(
                "SELECT key, wstart, wend, acc FROM fluvial_rows WHERE view_id = %s AND part <= 0 "
                "ORDER BY part DESC", (meta.view_id,), binary=True)]
            stored_rows.merge(self._conn, meta, part, realtime)
        # The snapshot holds what the served code computed: it keeps that code's late count.
        self._conn.execute("UPDATE fluvial_versions SET late_events = "
                           "(SELECT late_events FROM fluvial_views WHERE view_id = %s) "
                           "WHERE view_id = %s AND version = %s", (meta.view_id, meta.view_id, part))
        return len(realtime)

    # -- realtime generations and the switch (fluvial.serving.postgres.versions) ---

    def seal_realtime(self, view: str) -> int:
        """Close the open realtime generation of ``view`` and return its number (see
        :meth:`fluvial.serving.sqlite.SqliteTxn.seal_realtime`)."""
        self._check_open()
        return versions.seal_realtime(self._catalog, view)

    def publish(self, view: str, version: int, cutoff: Mapping[int, int], *,
                drop_realtime: bool = False, realtime_through: int | None = None,
                tails: Sequence[Any] | None = None) -> None:
        """The switch of :meth:`PostgresStore.publish_version`, inside this transaction."""
        self._check_open()
        versions.publish(self._catalog, view, version, cutoff, drop_realtime=drop_realtime,
                         realtime_through=realtime_through, tails=tails)

    def reset_realtime(self, view: str, *, retract: bool = False) -> None:
        """Drop every realtime generation of ``view`` (and with ``retract`` the current batch
        version): see :meth:`fluvial.serving.sqlite.SqliteTxn.reset_realtime`."""
        self._check_open()
        versions.reset_realtime(self._catalog, view, retract=retract)

    def add_late_events(self, view: str, n: int, *, part: Part = REALTIME) -> None:
        """Count ``n`` late events for the served view, or for the batch version ``part``."""
        self._check_open()
        versions.add_late_events(self._catalog, view, n, part=part)

    # -- checkpoints and fencing ------------------------------------------------------

    def set_checkpoint(self, runner_id: str, blob: bytes, *, expect: int | _Unset | None = UNSET) -> int:
        """Write a runner's checkpoint; return its new fencing token.

        With ``expect`` (the token the writer read, ``None``: no checkpoint), the write
        succeeds only if the checkpoint is still that one, else
        :class:`~fluvial.errors.CheckpointFenced` voids this whole transaction.
        """
        self._check_open()
        token = new_checkpoint_token(runner_id, expect, lambda: self.checkpoint_token(runner_id), self._where)
        self._conn.execute(
            "INSERT INTO fluvial_checkpoints (runner_id, blob, updated_ms, token) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (runner_id) DO UPDATE SET blob = excluded.blob, updated_ms = excluded.updated_ms, "
            "token = excluded.token", (runner_id, bytes(blob), _now_ms(), token))
        return token

    def checkpoint_token(self, runner_id: str) -> int | None:
        """The fencing token of a runner's checkpoint (``None``: it has none)."""
        self._check_open()
        row = self._conn.execute("SELECT token FROM fluvial_checkpoints WHERE runner_id = %s",
                                 (runner_id,)).fetchone()
        return int(row[0]) if row is not None else None

    def get_checkpoint(self, runner_id: str) -> bytes | None:
        self._check_open()
        row = self._conn.execute("SELECT blob FROM fluvial_checkpoints WHERE runner_id = %s",
                                 (runner_id,)).fetchone()
        return bytes(row[0]) if row is not None else None

    def delete_checkpoint(self, runner_id: str) -> None:
        self._check_open()
        self._conn.execute("DELETE FROM fluvial_checkpoints WHERE runner_id = %s", (runner_id,))

    def fence(self, lease: Lease) -> None:
        """Go on only while ``lease`` holds (renewing it; its row stays locked until this
        transaction ends): else :class:`~fluvial.errors.LeaseLost` voids the transaction."""
        self._check_open()
        leases.fence(self._conn, lease, self._where)

    # -- save_to tables ---------------------------------------------------------------

    def save_rows(self, table: str, columns: list[str], rows: Iterable[Any], *,
                  key_columns: int = 1) -> int:
        """Upsert rows into a user table (the ``save_to`` sink; see :mod:`.tables`)."""
        self._check_open()
        return tables.save_rows(self._conn, table, columns, rows, key_columns=key_columns)
