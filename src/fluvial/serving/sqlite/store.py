"""The SQLite view store: opening the file, its read and write transactions, queries.

A :class:`SqliteStore` owns one connection.  Writes run in ``BEGIN IMMEDIATE``
transactions (one writer at a time, across processes); every read runs in one
snapshot, which a writer never blocks (WAL).  It hands the writes of one
transaction to a :class:`~fluvial.serving.sqlite.txn.SqliteTxn`, the views'
metadata to its :class:`~fluvial.serving.sqlite.catalog.Catalog`, and the
composition of query results to :mod:`fluvial.serving.compose`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from os import PathLike
from typing import Any, Self

from fluvial.aggregators.base import Aggregator
from fluvial.errors import ConfigError, StoreError
from fluvial.serving.base import UNSET, Key, Row, ViewInfo, _Unset
from fluvial.serving.compose import compose_rows, stored_starts
from fluvial.serving.keys import check_view_name, encode_key
from fluvial.serving.sqlite import leases, schema, tables, versions
from fluvial.serving.sqlite.catalog import Catalog
from fluvial.serving.sqlite.schema import DEFAULT_BUSY_TIMEOUT_MS
from fluvial.serving.sqlite.txn import SqliteTxn, SqlMerge
from fluvial.serving.stored import ViewMeta, check_aggregator, check_shape, dump_aggregator, gc_paused
from fluvial.state import ownership
from fluvial.state.ownership import DEFAULT_LEASE_MS, Holder, Lease, Owner
from fluvial.windows.shapes import WindowShape


class SqliteStore:
    """A :class:`~fluvial.serving.base.ViewStore` in one SQLite file.

    Args:
        path: The database file (created if missing), or ``":memory:"``.
        synchronous: ``"NORMAL"`` (default: durable at checkpoints, never
            corrupt) or ``"FULL"`` (every commit survives a power loss).
        busy_timeout_ms: How long a writer waits for another writer's lock.

    A store object belongs to one thread; open one per thread or process.
    """

    def __init__(self, path: str | PathLike[str], *, synchronous: str = "NORMAL",
                 busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        sync = str(synchronous).upper()
        if sync not in ("NORMAL", "FULL"):
            raise ConfigError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        if not isinstance(busy_timeout_ms, int) or busy_timeout_ms < 0:
            raise ConfigError(f"busy_timeout_ms must be an integer >= 0, got {busy_timeout_ms!r}")
        self.path = str(path)
        self.closed = False
        self._synchronous, self._busy_timeout_ms = sync, busy_timeout_ms
        self._conn = schema.connect(self.path, synchronous=sync, busy_timeout_ms=busy_timeout_ms)
        self._catalog = Catalog(self._conn, self.path)
        self._merge = SqlMerge(self._catalog)
        self._conn.create_function("fluvial_merge", 3, self._merge)
        self._txn: SqliteTxn | None = None
        schema.create_or_migrate(self._conn, self.path, self._write)

    # -- plumbing ---------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self._txn is not None:
            raise StoreError("this store has a transaction open: do the write through its Txn, "
                             "or after the transaction ends")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot start a write transaction on {self.path!r}: {exc} "
                             "(another process holds the write lock; raise busy_timeout_ms?)") from exc
        try:
            yield self._conn
        except BaseException:
            self._rollback()
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"commit failed on {self.path!r}: {exc}") from exc

    def _rollback(self) -> None:
        """Undo the open transaction -- unless SQLite already did: on some errors (a full disk:
        SQLITE_FULL) it rolls back by itself, and a ROLLBACK then would raise "cannot rollback
        - no transaction is active" over the error that matters."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One snapshot for every statement inside (or the open transaction's)."""
        if self._conn.in_transaction:
            yield self._conn
            return
        self._conn.execute("BEGIN")
        try:
            yield self._conn
        finally:
            self._conn.execute("COMMIT")

    # -- views ------------------------------------------------------------------

    def define_view(self, name: str, *, aggregator: Aggregator[Any, Any, Any],
                    window: WindowShape | None = None) -> ViewInfo:
        """Create a view, or check that an existing one has the same window and aggregator.

        Redefining a view with the same specs stores the new aggregator object
        (the flow's code may have changed); a different window or aggregator
        spec is a :class:`ConfigError`.
        """
        check_view_name(name)
        check_aggregator(name, aggregator)
        check_shape(name, window)
        window_spec = window.spec() if window is not None else None
        agg_spec = aggregator.spec()
        blob = dump_aggregator(name, aggregator)
        with self._write():
            self._catalog.define(name, blob, agg_spec, window_spec)
        return self.view(name)

    def views(self) -> list[ViewInfo]:
        with self._read():
            return self._catalog.views()

    def view(self, name: str) -> ViewInfo:
        """The metadata of a view (:class:`ViewNotFound` lists the existing ones)."""
        with self._read():
            return self._catalog.view(name)

    def aggregator(self, name: str) -> Aggregator[Any, Any, Any]:
        """The aggregator object stored with a view."""
        with self._read():
            return self._catalog.meta(name).agg

    # -- writes -----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[SqliteTxn]:
        """One atomic write: everything done through the yielded Txn, or nothing.

        Example:
            >>> import tempfile
            >>> from fluvial.aggregators import Count
            >>> store = SqliteStore(tempfile.mkdtemp() + "/views.db")
            >>> _ = store.define_view("hits", aggregator=Count())
            >>> with store.transaction() as txn:
            ...     _ = txn.merge_rows("hits", [("home", None, 3)])
            ...     token = txn.set_checkpoint("speed-1", b"state and offsets")  # a fencing token
            >>> [(r.key, r.value) for r in store.query("hits")]
            [('home', 3)]
            >>> store.close()
        """
        with self._write():
            txn = self._txn = SqliteTxn(self._conn, self._catalog, self._merge, self.path)
            try:
                yield txn
            finally:
                txn._open = False
                self._txn = None

    def checkpoint_token(self, runner_id: str) -> int | None:
        """The fencing token of a runner's checkpoint, read without a write lock
        (``None``: it has none): whether a runner's checkpoint is still the one it read."""
        with self._read() as conn:
            row = conn.execute("SELECT token FROM fluvial_checkpoints WHERE runner_id = ?",
                               (runner_id,)).fetchone()
        return int(row[0]) if row is not None else None

    # -- ownership (see fluvial.state.ownership) --------------------------------

    def claim(self, resource: str, owner: Owner, *, lease_ms: int = DEFAULT_LEASE_MS, take_over: bool = False,
              hint: str = "") -> Lease:
        """Take the next epoch of ``resource`` (free, ran out, its holder gone, or ``take_over``).

        Raises:
            OwnedElsewhere: A live process holds it; the message names it and ends with ``hint``.
        """
        with self._write() as conn:
            return leases.claim(conn, resource, owner, lease_ms=lease_ms, take_over=take_over, hint=hint)

    def renew(self, lease: Lease) -> None:
        """Keep ``lease`` alive. Raises :class:`~fluvial.errors.LeaseLost` if it was taken over."""
        with self._write() as conn:
            leases.fence(conn, lease, repr(self.path))

    def release(self, lease: Lease) -> None:
        """Free the resource of ``lease`` if it still holds it."""
        with self._write() as conn:
            leases.release(conn, lease)

    def holder(self, resource: str) -> Holder | None:
        """Who holds ``resource`` (``owner`` None: released; ``None``: never claimed)."""
        with self._read() as conn:
            return leases.holder(conn, resource)

    def reopen(self) -> SqliteStore | None:
        """A new connection to this store, for another thread (``None`` for ``:memory:``)."""
        if self.path == ":memory:":
            return None
        return SqliteStore(self.path, synchronous=self._synchronous, busy_timeout_ms=self._busy_timeout_ms)

    @contextmanager
    def exclusive(self, name: str, *, wait_s: float = 0.0) -> Iterator[Lease]:
        """Hold ``name`` for the block, against every process using this store (e.g. one
        batch run of a pipeline at a time), waiting up to ``wait_s`` for its holder;
        yields the lease, which ``Txn.fence`` checks in the commits it guards.

        Raises:
            OwnedElsewhere: Another process holds it for longer than ``wait_s`` (named).
        """
        with ownership.exclusive(self, name, wait_s=wait_s,
                                 hint="Wait for it to finish (or for its lease to run out).") as lease:
            yield lease

    # -- versions (see fluvial.serving.sqlite.versions) -------------------------

    def begin_version(self, view: str, *, aggregator: Aggregator[Any, Any, Any] | None = None,
                      window: WindowShape | _Unset | None = UNSET) -> int:
        """Create the next (empty) batch version of a view; write it with ``part=version``.

        Every version records the aggregator and window it is written with: the
        view's (default), or, for a reprocessing with changed code, its own
        (``aggregator``/``window``).  Publishing a version makes its aggregator
        and window the view's, for the realtime part that follows it.
        """
        with self._write():
            return versions.begin(self._catalog, view, aggregator=aggregator, window=window)

    def publish_version(self, view: str, version: int, cutoff: Mapping[int, int], *,
                        drop_realtime: bool = False, realtime_through: int | None = None,
                        tails: Sequence[Any] | None = None) -> None:
        """Atomically make ``version`` the current batch version of ``view``.

        ``cutoff`` is the log position it covers (partition -> offset).  The
        previous current version is kept for :meth:`rollback`; older ones are
        dropped.  Readers see the old version or the new one, never a mix.
        With ``drop_realtime`` the realtime part, which the new version now
        covers, is emptied in the same transaction: all of it, or with
        ``realtime_through=g`` the generations up to ``g`` (see
        :meth:`SqliteTxn.seal_realtime`), keeping what the speed layer
        committed after the batch run read its cut-off.  ``tails`` identifies the
        events at the cut-off (see :attr:`ViewInfo.cutoff_tails`).
        """
        with self.transaction() as txn:
            txn.publish(view, version, cutoff, drop_realtime=drop_realtime,
                        realtime_through=realtime_through, tails=tails)
        self.drop_older_versions(view)

    def drop_older_versions(self, view: str) -> None:
        """Drop the published versions other than the current and the kept previous one
        (a second, short transaction after a switch, so that the switch itself stays
        short; an interrupted drop is redone next time).  Versions being built (not
        yet published) stay."""
        with self._write():
            versions.drop_older(self._catalog, view)

    def rollback(self, view: str) -> int:
        """Switch the alias back to the previous kept version; returns it.

        The version rolled back from is kept (inspect it with
        ``query(view, version=...)``); remove it with :meth:`drop_version`.
        """
        with self._write():
            return versions.rollback(self._catalog, view)

    def drop_version(self, view: str, version: int) -> None:
        """Delete a batch version and its rows (not the current one)."""
        with self._write():
            versions.drop_version(self._catalog, view, version)

    # -- queries ----------------------------------------------------------------

    def query_with_version(self, view: str, **filters: Any) -> tuple[int | None, list[Row]]:
        """:meth:`query`, and the batch version it read, from one snapshot."""
        with self._read():
            rows = self.query(view, **filters)
            version = filters.get("version")
            return (self._catalog.meta(view).alias if version is None else version), rows

    def query(self, view: str, *, key: Key = UNSET, from_ms: int | None = None,
              to_ms: int | None = None, version: int | None = None,
              realtime: bool = True) -> list[Row]:
        """Rows of ``view``: the current batch version ⊕ the realtime part.

        Args:
            key: Only this key (exact match; ``None`` is a key).
            from_ms: Only windows starting at or after this time.
            to_ms: Only windows starting before this time.
            version: Read this batch version instead of the current one.
            realtime: Include the realtime part.

        Rows are sorted by key (the JSON text of the key), then window start,
        and come from one consistent snapshot.
        """
        with self._read():
            meta = self._catalog.meta_of(view, version)
            if meta.shape is None and (from_ms is not None or to_ms is not None):
                raise ConfigError(f"view {view!r} has no window: from_ms/to_ms do not apply")
            fetched = self._fetch(meta, version, key, from_ms, to_ms, realtime=realtime)
        with gc_paused():
            return compose_rows(meta.agg, meta.shape, fetched, from_ms, to_ms)

    def _fetch(self, meta: ViewMeta, version: int | None, key: Key, from_ms: int | None,
               to_ms: int | None, *, realtime: bool) -> list[list[Any]]:
        """The stored rows a query reads, one list per part: the batch version, then every
        realtime generation not yet covered by a batch version."""
        conn = self._conn
        parts: list[int] = []
        if version is not None:
            parts.append(self._catalog.part_no(meta, version))
        elif meta.alias is not None:
            parts.append(meta.alias)
        if realtime:
            parts.extend(p for (p,) in conn.execute(
                "SELECT DISTINCT part FROM fluvial_rows WHERE view_id = ? AND part <= 0",
                (meta.view_id,)))
        sql = "SELECT key, wstart, wend, acc FROM fluvial_rows WHERE view_id = ? AND part = ?"
        extra: list[Any] = []
        if key is not UNSET:
            sql += " AND key = ?"
            extra.append(encode_key(key))
        low, high = stored_starts(meta.shape, from_ms, to_ms)  # push the window filter down
        if low is not None:
            sql += " AND wstart >= ?"
            extra.append(low)
        if high is not None:
            sql += " AND wstart < ?"
            extra.append(high)
        return [conn.execute(sql, (meta.view_id, part, *extra)).fetchall() for part in parts]

    # -- save_to tables (see fluvial.serving.sqlite.tables) ----------------------

    def tables(self) -> list[str]:
        """Names of the ``save_to`` tables."""
        with self._read() as conn:
            return tables.names(conn)

    def table_rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of a ``save_to`` table, as dicts, sorted by its key columns."""
        tables.check_table(table)
        with self._read() as conn:
            return tables.table_rows(conn, self.path, table)

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        self.closed = True
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"
