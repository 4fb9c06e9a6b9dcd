"""The PostgreSQL view store: connecting, its read and write transactions, queries.

A :class:`PostgresStore` owns one connection, and opens a new one when the server
dropped it (a restart, a failover, a network cut): the transaction that found the
connection broken fails with :class:`~fluvial.errors.StoreUnavailable` and the next one
reconnects, so a runner rides out a restart by retrying from its checkpoint.  Writes
run in one transaction each,
after taking the store's write lock (a transaction-scoped advisory lock on its
schema: writers commit one after the other, as in SQLite); every read runs in one
``REPEATABLE READ`` snapshot, which writers never block.  It hands the writes of a
transaction to a :class:`~fluvial.serving.postgres.txn.PostgresTxn`, the views'
metadata to its :class:`~fluvial.serving.postgres.catalog.Catalog`, and the
composition of query results to :mod:`fluvial.serving.compose`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Self

from fluvial.aggregators.base import Aggregator
from fluvial.errors import ConfigError, StoreError, StoreUnavailable
from fluvial.serving.base import UNSET, Key, Row, ViewInfo, _Unset
from fluvial.serving.compose import compose_rows, stored_starts
from fluvial.serving.keys import check_view_name, encode_key
from fluvial.serving.postgres import leases, schema, tables, versions
from fluvial.serving.postgres.catalog import Catalog
from fluvial.serving.postgres.txn import PostgresTxn
from fluvial.serving.stored import ViewMeta, check_aggregator, check_shape, dump_aggregator, gc_paused
from fluvial.state import ownership
from fluvial.state.ownership import DEFAULT_LEASE_MS, Holder, Lease, Owner
from fluvial.windows.shapes import WindowShape

if TYPE_CHECKING:
    import psycopg


class PostgresStore:
    """A :class:`~fluvial.serving.base.ViewStore` in one PostgreSQL schema.

    Args:
        url: ``postgresql://[USER[:PASSWORD]@]HOST[:PORT]/DB[?schema=NAME]``; the schema
            (default ``fluvial``) and its tables are created if missing.

    A store object belongs to one thread; open one per thread or process (:meth:`reopen`).

    Raises:
        ConfigError: A malformed URL.
        StoreError: The server cannot be reached (the message names host and port).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.target = schema.parse_url(url)
        self.where = self.target.where()
        self.closed = False
        self._conn = schema.connect(self.target)
        try:
            self._guard(lambda: schema.create_or_check(self._conn, self.target))
        except BaseException:
            self._conn.close()
            raise
        self._catalog = Catalog(self._conn, self.where)
        self._txn: PostgresTxn | None = None
        self._lock_key = schema.write_lock_key(self.target.schema)

    # -- plumbing ---------------------------------------------------------------

    def _guard(self, work: Any) -> Any:
        import psycopg

        try:
            return work()
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: {str(exc).strip()}") from exc

    @contextmanager
    def _begin(self, statement: str, *, lock: bool) -> Iterator[psycopg.Connection[Any]]:
        import psycopg

        if self._txn is not None:
            raise StoreError("this store has a transaction open: do the write through its Txn, "
                             "or after the transaction ends")
        conn = self._connection()
        try:
            conn.execute(statement)
            if lock:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
        except psycopg.Error as exc:
            raise self._failed("cannot begin a transaction on", exc) from exc
        try:
            yield conn
        except psycopg.Error as exc:
            raise self._failed("", exc) from exc
        except BaseException:
            self._rollback()
            raise
        try:
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            # A commit whose answer was lost may have been kept: StoreUnavailable says so.
            raise self._failed("commit failed on", exc) from exc

    def _connection(self) -> psycopg.Connection[Any]:
        """The store's connection; a new one if the server dropped the last (StoreUnavailable
        while it cannot be reached)."""
        if not self._conn.broken and not self._conn.closed:
            return self._conn
        if self.closed:
            raise StoreError(f"the store {self.where} was closed: open it again")
        try:
            conn = schema.connect(self.target)
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from None
        self._conn.close()
        self._conn = self._catalog.conn = conn
        return conn

    def _failed(self, doing: str, exc: Exception) -> StoreError:
        """The error for a failed statement, after rolling the transaction back; the
        connection broke (the server went away): StoreUnavailable, and the next
        transaction reconnects."""
        self._rollback()
        message = f"{doing} {self.where}" if doing else self.where
        if self._conn.broken or self._conn.closed:
            return StoreUnavailable(f"{message}: the connection to PostgreSQL broke ({str(exc).strip()}); "
                                    "the next transaction reconnects")
        return StoreError(f"{message}: {str(exc).strip()}")

    def _rollback(self) -> None:
        import psycopg

        try:
            if not self._conn.closed and self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self._conn.execute("ROLLBACK")
        except psycopg.Error:
            pass   # the connection is gone: so is the transaction

    def _write(self) -> Any:
        return self._begin("BEGIN ISOLATION LEVEL READ COMMITTED", lock=True)

    def _unlocked_write(self) -> Any:
        """A write transaction without the store's write lock (leases lock their own row)."""
        return self._begin("BEGIN ISOLATION LEVEL READ COMMITTED", lock=False)

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection[Any]]:
        """One snapshot for every statement inside (or the open transaction's)."""
        import psycopg

        if self._txn is not None or (not self._conn.broken
                                     and self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE):
            yield self._conn   # inside a transaction or a read already (query_with_version: query)
            return
        with self._begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", lock=False) as conn:
            yield conn

    # -- views ------------------------------------------------------------------

    def define_view(self, name: str, *, aggregator: Aggregator[Any, Any, Any],
                    window: WindowShape | None = None) -> ViewInfo:
        """Create a view, or check that an existing one has the same window and aggregator
        (see :meth:`fluvial.serving.sqlite.SqliteStore.define_view`)."""
        check_view_name(name)
        check_aggregator(name, aggregator)
        check_shape(name, window)
        window_spec = window.spec() if window is not None else None
        blob = dump_aggregator(name, aggregator)
        with self._write():
            self._catalog.define(name, blob, aggregator.spec(), window_spec)
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
    def transaction(self) -> Iterator[PostgresTxn]:
        """One atomic write (one PostgreSQL transaction): everything done through the
        yielded Txn, or nothing."""
        with self._write():
            txn = self._txn = PostgresTxn(self._conn, self._catalog, self.where)
            try:
                yield txn
            finally:
                txn._open = False
                self._txn = None

    def checkpoint_token(self, runner_id: str) -> int | None:
        """The fencing token of a runner's checkpoint, read without the write lock."""
        with self._read() as conn:
            row = conn.execute("SELECT token FROM fluvial_checkpoints WHERE runner_id = %s",
                               (runner_id,)).fetchone()
        return int(row[0]) if row is not None else None

    # -- ownership (see fluvial.state.ownership) --------------------------------

    def claim(self, resource: str, owner: Owner, *, lease_ms: int = DEFAULT_LEASE_MS, take_over: bool = False,
              hint: str = "") -> Lease:
        """Take the next epoch of ``resource`` (free, ran out, its holder gone, or ``take_over``).

        Raises:
            OwnedElsewhere: A live process holds it; the message names it and ends with ``hint``.
        """
        with self._unlocked_write() as conn:
            return leases.claim(conn, resource, owner, lease_ms=lease_ms, take_over=take_over, hint=hint)

    def renew(self, lease: Lease) -> None:
        """Keep ``lease`` alive. Raises :class:`~fluvial.errors.LeaseLost` if it was taken over."""
        with self._unlocked_write() as conn:
            leases.fence(conn, lease, self.where)

    def release(self, lease: Lease) -> None:
        """Free the resource of ``lease`` if it still holds it."""
        with self._unlocked_write() as conn:
            leases.release(conn, lease)

    def holder(self, resource: str) -> Holder | None:
        """Who holds ``resource`` (``owner`` None: released; ``None``: never claimed)."""
        with self._read() as conn:
            return leases.holder(conn, resource)

    def reopen(self) -> PostgresStore:
        """A new connection to this store, for another thread."""
        return PostgresStore(self.url)

    @contextmanager
    def exclusive(self, name: str, *, wait_s: float = 0.0) -> Iterator[Lease]:
        """Hold ``name`` for the block against every process using this store, waiting up to
        ``wait_s`` for its holder; yields the lease, which ``Txn.fence`` checks.

        Raises:
            OwnedElsewhere: Another process holds it for longer than ``wait_s`` (named).
        """
        with ownership.exclusive(self, name, wait_s=wait_s,
                                 hint="Wait for it to finish (or for its lease to run out).") as lease:
            yield lease

    # -- versions (see fluvial.serving.postgres.versions) -----------------------

    def begin_version(self, view: str, *, aggregator: Aggregator[Any, Any, Any] | None = None,
                      window: WindowShape | _Unset | None = UNSET) -> int:
        """Create the next (empty) batch version of a view (see
        :meth:`fluvial.serving.sqlite.SqliteStore.begin_version`)."""
        with self._write():
            return versions.begin(self._catalog, view, aggregator=aggregator, window=window)

    def publish_version(self, view: str, version: int, cutoff: Mapping[int, int], *,
                        drop_realtime: bool = False, realtime_through: int | None = None,
                        tails: Sequence[Any] | None = None) -> None:
        """Atomically make ``version`` the current batch version of ``view`` (see
        :meth:`fluvial.serving.sqlite.SqliteStore.publish_version`)."""
        with self.transaction() as txn:
            txn.publish(view, version, cutoff, drop_realtime=drop_realtime,
                        realtime_through=realtime_through, tails=tails)
        self.drop_older_versions(view)

    def drop_older_versions(self, view: str) -> None:
        """Drop the published versions other than the current and the kept previous one."""
        with self._write():
            versions.drop_older(self._catalog, view)

    def rollback(self, view: str) -> int:
        """Switch the alias back to the previous kept version; returns it."""
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
        """Rows of ``view``: the current batch version ⊕ the realtime part, from one snapshot
        (see :meth:`fluvial.serving.sqlite.SqliteStore.query`)."""
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
        realtime generation not yet covered by a batch version (one statement)."""
        batch: int | None = None
        if version is not None:
            batch = self._catalog.part_no(meta, version)
        elif meta.alias is not None:
            batch = meta.alias
        sql = "SELECT part, key, wstart, wend, acc FROM fluvial_rows WHERE view_id = %s AND "
        params: list[Any] = [meta.view_id]
        if realtime:
            sql += "(part <= 0 OR part = %s)"
            params.append(-1 if batch is None else batch)
        else:
            sql += "part = %s"
            params.append(-1 if batch is None else batch)  # -1 < 0 and not realtime: reads nothing
            if batch is None:
                return []
        if key is not UNSET:
            sql += " AND key = %s"
            params.append(encode_key(key))
        low, high = stored_starts(meta.shape, from_ms, to_ms)  # push the window filter down
        if low is not None:
            sql += " AND wstart >= %s"
            params.append(low)
        if high is not None:
            sql += " AND wstart < %s"
            params.append(high)
        sql += " ORDER BY part, key, wstart, wend"   # compose_rows takes one part's rows in this order
        parts: dict[int, list[Any]] = {} if batch is None else {batch: []}
        with gc_paused():
            for part, k, start, end, acc in self._conn.execute(sql, params, binary=True):
                got = parts.get(part)
                if got is None:
                    got = parts[part] = []
                got.append((bytes(k), start, end, bytes(acc)))
        return [parts[p] for p in sorted(parts, key=lambda p: (p <= 0, p))]

    # -- save_to tables (see fluvial.serving.postgres.tables) --------------------

    def tables(self) -> list[str]:
        """Names of the ``save_to`` tables."""
        with self._read() as conn:
            return tables.names(conn)

    def table_rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of a ``save_to`` table, as dicts, sorted by its key columns."""
        tables.check_table(table)
        with self._read() as conn:
            return tables.table_rows(conn, self.where, table)

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        self.closed = True
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.where!r})"


__all__ = ["PostgresStore"]
