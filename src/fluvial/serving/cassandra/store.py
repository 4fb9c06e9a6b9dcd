"""The Cassandra view store: connecting, its transactions, queries.

A :class:`CassandraStore` owns one driver session.  Each write runs as one
transaction of the commit protocol (:mod:`.commit`): take the store's write lock,
buffer reads and writes (:class:`~.buffer.Buffer`), then record, commit and apply
them.  Reads outside a transaction read the store as it is: see :mod:`.commit` for
what a query may see.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Self

from fluvial.aggregators.base import Aggregator
from fluvial.errors import ConfigError, StoreError, StoreUnavailable
from fluvial.serving.base import UNSET, Key, Row, ViewInfo, _Unset
from fluvial.serving.cassandra import leases, tables, versions
from fluvial.serving.cassandra.address import parse_url
from fluvial.serving.cassandra.buffer import Buffer
from fluvial.serving.cassandra.catalog import Catalog, LiveMeta
from fluvial.serving.cassandra.commit import WriteLock
from fluvial.serving.cassandra.db import Db, driver_errors, transient
from fluvial.serving.cassandra.txn import CassandraTxn
from fluvial.serving.compose import compose_rows, stored_starts
from fluvial.serving.keys import check_view_name, encode_key
from fluvial.serving.stored import check_aggregator, check_shape, dump_aggregator, gc_paused
from fluvial.state import ownership
from fluvial.state.ownership import DEFAULT_LEASE_MS, Holder, Lease, Owner
from fluvial.windows.shapes import WindowShape

__all__ = ["CassandraStore"]


def _failed(what: str, exc: BaseException) -> StoreError:
    """The store's error for a driver failure: :class:`StoreUnavailable` when no replica answered
    (nothing of the transaction was kept; the runner retries from its checkpoint), else StoreError."""
    if transient(exc):
        return StoreUnavailable(f"{what}: not enough Cassandra replicas answered ({exc}); nothing of this "
                                "transaction was kept, or its commit point passed and the next writer applies it")
    return StoreError(f"{what}: {exc}")


class CassandraStore:
    """A :class:`~fluvial.serving.base.ViewStore` in one Cassandra keyspace.

    Args:
        url: ``cassandra://HOST[,HOST...][:PORT]/KEYSPACE[?replication_factor=N&consistency=LEVEL]``;
            the keyspace (and its tables) are created if missing.

    A store object belongs to one thread; open one per thread or process (:meth:`reopen`).

    Raises:
        ConfigError: A malformed URL.
        StoreError: No node can be reached (the message names hosts and port).
        MissingDependency: The ``cassandra`` extra is not installed.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.target = parse_url(url)
        self.where = self.target.where()
        self.closed = False
        self._db = Db(self.target)
        self._lock = WriteLock(self._db)
        self._catalog = Catalog(self.where)
        self._txn: CassandraTxn | None = None

    # -- plumbing ---------------------------------------------------------------

    def _reader(self) -> Buffer:
        return Buffer(self._db, writable=False) if self._txn is None else self._txn._buf

    @contextmanager
    def _write(self) -> Iterator[Buffer]:
        """One transaction of the commit protocol: everything written to the buffer, or nothing."""
        errors = driver_errors()
        if self._txn is not None:
            raise StoreError("this store has a transaction open: do the write through its Txn, "
                             "or after the transaction ends")
        try:
            held = self._lock.acquire()
        except errors as exc:
            raise _failed(f"cannot begin a transaction on {self.where}", exc) from exc
        buf = Buffer(self._db, writable=True, keep=lambda: self._lock.keep(held))
        try:
            yield buf
            self._lock.commit(held, buf.ops())
        except BaseException as exc:
            self._lock.release(held)   # a no-op once the commit point passed (the lock is free then)
            if isinstance(exc, errors):
                raise _failed(self.where, exc) from exc
            raise

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
        with self._write() as buf:
            self._catalog.define(buf, name, blob, aggregator.spec(), window_spec)
        return self.view(name)

    def views(self) -> list[ViewInfo]:
        return self._catalog.views(self._reader())

    def view(self, name: str) -> ViewInfo:
        """The metadata of a view (:class:`ViewNotFound` lists the existing ones)."""
        return self._catalog.view(self._reader(), name)

    def aggregator(self, name: str) -> Aggregator[Any, Any, Any]:
        """The aggregator object stored with a view."""
        return self._catalog.meta(self._reader(), name).agg

    # -- writes -----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[CassandraTxn]:
        """One atomic write: everything done through the yielded Txn, or nothing (:mod:`.commit`)."""
        with self._write() as buf:
            txn = self._txn = CassandraTxn(self._db, buf, self._catalog)
            try:
                yield txn
            finally:
                txn._open = False
                self._txn = None

    def checkpoint_token(self, runner_id: str) -> int | None:
        """The fencing token of a runner's checkpoint, read without the write lock."""
        row = self._reader().get("fluvial_checkpoints", runner_id)
        return int(row["fence_token"]) if row is not None else None

    # -- ownership (see fluvial.state.ownership) --------------------------------

    def claim(self, resource: str, owner: Owner, *, lease_ms: int = DEFAULT_LEASE_MS, take_over: bool = False,
              hint: str = "") -> Lease:
        """Take the next epoch of ``resource`` (free, ran out, its holder gone, or ``take_over``).

        Raises:
            OwnedElsewhere: A live process holds it; the message names it and ends with ``hint``.
        """
        return leases.claim(self._db, resource, owner, lease_ms=lease_ms, take_over=take_over, hint=hint)

    def renew(self, lease: Lease) -> None:
        """Keep ``lease`` alive. Raises :class:`~fluvial.errors.LeaseLost` if it was taken over."""
        leases.fence(self._db, lease)

    def release(self, lease: Lease) -> None:
        """Free the resource of ``lease`` if it still holds it."""
        leases.release(self._db, lease)

    def holder(self, resource: str) -> Holder | None:
        """Who holds ``resource`` (``owner`` None: released; ``None``: never claimed)."""
        return leases.holder(self._db, resource)

    def reopen(self) -> CassandraStore:
        """A new session on this store, for another thread."""
        return CassandraStore(self.url)

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

    # -- versions (see fluvial.serving.cassandra.versions) ----------------------

    def begin_version(self, view: str, *, aggregator: Aggregator[Any, Any, Any] | None = None,
                      window: WindowShape | _Unset | None = UNSET) -> int:
        """Create the next (empty) batch version of a view."""
        with self._write() as buf:
            return versions.begin(self._catalog, buf, view, aggregator=aggregator, window=window)

    def publish_version(self, view: str, version: int, cutoff: Mapping[int, int], *,
                        drop_realtime: bool = False, realtime_through: int | None = None,
                        tails: Sequence[Any] | None = None) -> None:
        """Atomically make ``version`` the current batch version of ``view``."""
        with self.transaction() as txn:
            txn.publish(view, version, cutoff, drop_realtime=drop_realtime,
                        realtime_through=realtime_through, tails=tails)
        self.drop_older_versions(view)

    def drop_older_versions(self, view: str) -> None:
        """Drop the published versions other than the current and the kept previous one."""
        with self._write() as buf:
            versions.drop_older(self._catalog, buf, view)

    def rollback(self, view: str) -> int:
        """Switch the alias back to the previous kept version; returns it."""
        with self._write() as buf:
            return versions.rollback(self._catalog, buf, view)

    def drop_version(self, view: str, version: int) -> None:
        """Delete a batch version and its rows (not the current one)."""
        with self._write() as buf:
            versions.drop_version(self._catalog, buf, view, version)

    # -- queries ----------------------------------------------------------------

    def query_with_version(self, view: str, **filters: Any) -> tuple[int | None, list[Row]]:
        """:meth:`query`, and the batch version it read (from the same read of the view row)."""
        version = filters.get("version")
        live = self._catalog.live(self._reader(), view)
        rows = self._query(live, **filters)
        return (live.meta.alias if version is None else version), rows

    def query(self, view: str, *, key: Key = UNSET, from_ms: int | None = None,
              to_ms: int | None = None, version: int | None = None,
              realtime: bool = True) -> list[Row]:
        """Rows of ``view``: the current batch version ⊕ the live realtime generations (not a
        snapshot: see :mod:`.commit`)."""
        return self._query(self._catalog.live(self._reader(), view), key=key, from_ms=from_ms, to_ms=to_ms,
                           version=version, realtime=realtime)

    def _query(self, live: LiveMeta, *, key: Key = UNSET, from_ms: int | None = None,
               to_ms: int | None = None, version: int | None = None, realtime: bool = True) -> list[Row]:
        buf = self._reader()
        meta = live.meta
        if version is not None:
            meta = self._catalog.meta_of(buf, meta.name, version)
        if meta.shape is None and (from_ms is not None or to_ms is not None):
            raise ConfigError(f"view {meta.name!r} has no window: from_ms/to_ms do not apply")
        batch = self._catalog.part_no(buf, meta, version) if version is not None else meta.alias
        parts = [] if batch is None else [batch]
        if realtime:
            parts += [-g for g in range(meta.rt_gen, live.floor - 1, -1)]
        low, high = stored_starts(meta.shape, from_ms, to_ms)
        fetched = []
        with gc_paused():
            for part in parts:
                got = (buf.part_rows(meta.view_id, part) if key is UNSET
                       else buf.key_rows(meta.view_id, part, encode_key(key)))
                fetched.append([r for r in got if (low is None or r[1] >= low) and (high is None or r[1] < high)])
            return compose_rows(meta.agg, meta.shape, fetched, from_ms, to_ms)

    # -- save_to tables (see fluvial.serving.cassandra.tables) -------------------

    def tables(self) -> list[str]:
        """Names of the ``save_to`` tables."""
        return tables.names(self._reader())

    def table_rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of a ``save_to`` table, as dicts, sorted by its key columns."""
        tables.check_table(table)
        return tables.table_rows(self._db, self._reader(), table)

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CassandraStore({self.where!r})"
