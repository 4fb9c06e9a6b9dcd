"""The embedded view store: one SQLite file in WAL mode.

Safe for one writer process and any number of reader processes: writes run in
``BEGIN IMMEDIATE`` transactions, every query reads one snapshot, and a reader
never waits for the writer (WAL).  Accumulators are pickled; the view's
aggregator is stored with ``cloudpickle`` so that user aggregators (lambdas)
can merge rows inside SQLite: ``merge_rows`` is one ``INSERT ... ON CONFLICT DO
UPDATE SET acc = fluvial_merge(...)`` statement run with ``executemany``.

Example:
    >>> from fluvial.serving.sqlite import SqliteStore
    >>> from fluvial.aggregators.base import Aggregator
    >>> class Count(Aggregator):
    ...     name = "count"
    ...     def zero(self): return 0
    ...     def add(self, acc, value): return acc + 1
    ...     def merge(self, a, b): return a + b
    >>> with SqliteStore(":memory:") as store:
    ...     _ = store.define_view("hits", aggregator=Count())
    ...     with store.transaction() as txn:
    ...         _ = txn.merge_rows("hits", [("a", None, 2), ("a", None, 3)])
    ...     store.query("hits")
    [Row(key='a', window=None, value=5)]
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from os import PathLike
from typing import Any, Self

import msgspec

from fluvial.aggregators.base import Aggregator
from fluvial.errors import CheckpointFenced, ConfigError, StoreError, ViewNotFound
from fluvial.serving import sqlite_leases
from fluvial.serving.base import REALTIME, UNSET, Key, Part, Row, ViewInfo, Window, _Unset
from fluvial.serving.compose import compose_rows, stored_starts
from fluvial.serving.keys import check_identifier, check_view_name, encode_key
from fluvial.serving.stored import (
    ACC_PROTOCOL,
    ViewMeta,
    check_aggregator,
    check_shape,
    dump_aggregator,
    encode_rows,
    gc_paused,
    load_aggregator,
    primary_key,
)
from fluvial.state import ownership
from fluvial.state.ownership import DEFAULT_LEASE_MS, Holder, Lease, Owner
from fluvial.windows.shapes import WindowShape, shape_from_spec

SCHEMA_VERSION = 4
DEFAULT_BUSY_TIMEOUT_MS = 10_000

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS fluvial_views (
        view_id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        aggregator BLOB NOT NULL,
        agg_spec TEXT NOT NULL,
        agg_rev INTEGER NOT NULL DEFAULT 1,
        window_spec TEXT,
        alias_version INTEGER,
        previous_version INTEGER,
        next_version INTEGER NOT NULL DEFAULT 1,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        late_events INTEGER NOT NULL DEFAULT 0,
        rt_gen INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS fluvial_versions (
        view_id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        cutoff TEXT,
        created_ms INTEGER NOT NULL,
        published_ms INTEGER,
        aggregator BLOB,
        agg_spec TEXT,
        window_spec TEXT,
        PRIMARY KEY (view_id, version)) WITHOUT ROWID""",
    # part: a batch version (>= 1), or realtime generation g stored as -g (generation 0 is part 0)
    """CREATE TABLE IF NOT EXISTS fluvial_rows (
        view_id INTEGER NOT NULL,
        part INTEGER NOT NULL,
        key BLOB NOT NULL,
        wstart INTEGER NOT NULL,
        wend INTEGER NOT NULL,
        acc BLOB,
        PRIMARY KEY (view_id, part, key, wstart, wend)) WITHOUT ROWID""",
    # Rows whose merge gave zero get acc NULL inside merge_rows, then are deleted.
    "CREATE INDEX IF NOT EXISTS fluvial_rows_zero ON fluvial_rows (view_id, part) WHERE acc IS NULL",
    """CREATE TABLE IF NOT EXISTS fluvial_checkpoints (
        runner_id TEXT PRIMARY KEY,
        blob BLOB NOT NULL,
        updated_ms INTEGER NOT NULL)""",
]

_VIEW_COLUMNS = ("view_id, name, agg_rev, agg_spec, window_spec, alias_version, previous_version, "
                 "created_ms, updated_ms, late_events")
_SCHEMA_CREATES = 2
"""``_SCHEMA`` creates this schema version; a new store then takes the migrations after it."""
_MIGRATIONS = {1: ["ALTER TABLE fluvial_views ADD COLUMN rt_gen INTEGER NOT NULL DEFAULT 0",
                   "ALTER TABLE fluvial_versions ADD COLUMN aggregator BLOB",
                   "ALTER TABLE fluvial_versions ADD COLUMN agg_spec TEXT",
                   "ALTER TABLE fluvial_versions ADD COLUMN window_spec TEXT"],
               # late counts per version and at the last seal; cut-off identities; checkpoint fencing
               2: ["ALTER TABLE fluvial_views ADD COLUMN sealed_gen INTEGER",
                   "ALTER TABLE fluvial_views ADD COLUMN sealed_late INTEGER",
                   "ALTER TABLE fluvial_versions ADD COLUMN late_events INTEGER",
                   "ALTER TABLE fluvial_versions ADD COLUMN cutoff_tails TEXT",
                   "ALTER TABLE fluvial_checkpoints ADD COLUMN token INTEGER NOT NULL DEFAULT 0"],
               # ownership epochs: runners fence each other
               3: [sqlite_leases.LEASES_TABLE]}
"""Statements taking a store from schema version N to N + 1."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """Switch to WAL.  The first switch of a new file needs it to itself, and SQLite reports
    "database is locked" at once to processes that open it at the same moment (the busy
    timeout does not apply): try again until the timeout."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class _MergeFailed(Exception):
    pass


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
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None,
                                         timeout=busy_timeout_ms / 1000)
            self._conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            _wal(self._conn, busy_timeout_ms)
            self._conn.execute(f"PRAGMA synchronous = {sync}")
            self._conn.execute("PRAGMA cache_size = -65536")  # 64 MiB of pages: views of 100k+ rows
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the view store {self.path!r}: {exc}") from exc
        self._conn.create_function("fluvial_merge", 3, self._sql_merge)
        self._aggs: dict[int, tuple[int, Aggregator[Any, Any, Any]]] = {}
        self._version_aggs: dict[tuple[int, int], Aggregator[Any, Any, Any]] = {}
        self._merging: Aggregator[Any, Any, Any] | None = None
        self._txn: SqliteTxn | None = None
        self._merge_error: BaseException | None = None
        self._zeroed = 0
        self._init_schema()

    # -- plumbing ---------------------------------------------------------------

    def _init_schema(self) -> None:
        (current,) = self._conn.execute("PRAGMA user_version").fetchone()
        if current == SCHEMA_VERSION:
            return
        if current > SCHEMA_VERSION:
            raise StoreError(f"{self.path!r} has view store schema {current}; this fluvial knows "
                             f"{SCHEMA_VERSION}: upgrade fluvial")
        with self._write():
            # Read again under the write lock: processes opening a new store at the same
            # moment would otherwise each run the migrations ("duplicate column name").
            (current,) = self._conn.execute("PRAGMA user_version").fetchone()
            if current == SCHEMA_VERSION:
                return
            if current == 0:
                for statement in _SCHEMA:
                    self._conn.execute(statement)
                current = _SCHEMA_CREATES
            for version in range(current, SCHEMA_VERSION):
                for statement in _MIGRATIONS[version]:
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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
            self._conn.execute("ROLLBACK")
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._conn.execute("ROLLBACK")
            raise StoreError(f"commit failed on {self.path!r}: {exc}") from exc

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

    def _sql_merge(self, view_id: int, old: bytes | None, new: bytes) -> bytes | None:
        try:
            if old is None:  # zeroed earlier in the same statement, not yet deleted
                return new
            agg = self._merging if self._merging is not None else self._aggs[view_id][1]
            merged = agg.merge(pickle.loads(old), pickle.loads(new))
            if agg.is_zero(merged):
                self._zeroed += 1
                return None
            return pickle.dumps(merged, ACC_PROTOCOL)
        except BaseException as exc:
            self._merge_error = exc
            raise _MergeFailed() from exc

    def _view_names(self) -> list[str]:
        return [name for (name,) in self._conn.execute("SELECT name FROM fluvial_views ORDER BY name")]

    def _not_found(self, name: str) -> ViewNotFound:
        names = self._view_names()
        return ViewNotFound(
            f"no view named {name!r} in {self.path!r}; existing views: {names or 'none'}. "
            "Run the flow that writes it (to_view), or define it with "
            "store.define_view(name, aggregator=..., window=...)"
        )

    def _meta_of(self, name: str, part: Part | None) -> ViewMeta:
        """The metadata of a view, with the aggregator and window of batch version ``part``
        when that version has its own (a reprocessing with changed code)."""
        meta = self._meta(name)
        if part is None or part == REALTIME or part == meta.alias:
            return meta
        row = self._conn.execute("SELECT aggregator, window_spec FROM fluvial_versions "
                                 "WHERE view_id = ? AND version = ? AND aggregator IS NOT NULL",
                                 (meta.view_id, part)).fetchone()
        if row is None:
            return meta
        key = (meta.view_id, int(part))  # type: ignore[arg-type]
        agg = self._version_aggs.get(key)
        if agg is None:
            agg = self._version_aggs[key] = load_aggregator(name, row[0])
        shape = shape_from_spec(json.loads(row[1])) if row[1] is not None else None
        return dataclasses.replace(meta, agg=agg, shape=shape)

    def _meta(self, name: str) -> ViewMeta:
        row = self._conn.execute(
            "SELECT view_id, agg_rev, window_spec, alias_version, previous_version, rt_gen "
            "FROM fluvial_views WHERE name = ?", (name,)).fetchone()
        if row is None:
            check_view_name(name)
            raise self._not_found(name)
        view_id, rev, window_spec, alias, previous, rt_gen = row
        cached = self._aggs.get(view_id)
        if cached is None or cached[0] != rev:
            (blob,) = self._conn.execute("SELECT aggregator FROM fluvial_views WHERE view_id = ?",
                                         (view_id,)).fetchone()
            cached = self._aggs[view_id] = (rev, load_aggregator(name, blob))
        shape = shape_from_spec(json.loads(window_spec)) if window_spec is not None else None
        return ViewMeta(view_id, name, cached[1], shape, alias, previous, rt_gen)

    def _versions(self, view_id: int) -> dict[int, dict[int, int] | None]:
        out: dict[int, dict[int, int] | None] = {}
        for version, cutoff in self._conn.execute(
                "SELECT version, cutoff FROM fluvial_versions WHERE view_id = ? ORDER BY version",
                (view_id,)):
            out[version] = ({int(p): o for p, o in json.loads(cutoff).items()}
                            if cutoff is not None else None)
        return out

    def _part_no(self, meta: ViewMeta, part: Part) -> int:
        if part == REALTIME:
            return -meta.rt_gen  # the open realtime generation
        if isinstance(part, int) and not isinstance(part, bool) and part >= 1:
            if self._conn.execute("SELECT 1 FROM fluvial_versions WHERE view_id = ? AND version = ?",
                                  (meta.view_id, part)).fetchone():
                return part
            raise ConfigError(f"view {meta.name!r} has no version {part}; existing versions: "
                              f"{list(self._versions(meta.view_id))} (begin_version() creates one)")
        raise ConfigError(f"part must be 'realtime' or a version number >= 1, got {part!r}")

    def _info(self, row: tuple[Any, ...]) -> ViewInfo:
        view_id, name, _rev, agg_spec, window_spec, alias, previous, created, updated, late = row
        versions = self._versions(view_id)
        tails = {version: json.loads(text) for version, text in self._conn.execute(
            "SELECT version, cutoff_tails FROM fluvial_versions WHERE view_id = ? AND cutoff_tails IS NOT NULL",
            (view_id,))}
        return ViewInfo(
            name=name, alias_version=alias, previous_version=previous, versions=list(versions),
            window=json.loads(window_spec) if window_spec is not None else None,
            aggregator=json.loads(agg_spec),
            cutoffs={v: c for v, c in versions.items() if c is not None},
            created_ms=created, updated_ms=updated, late_events=late, cutoff_tails=tails)

    def _touch(self, view_id: int) -> None:
        self._conn.execute("UPDATE fluvial_views SET updated_ms = ? WHERE view_id = ?",
                           (_now_ms(), view_id))

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
        now = _now_ms()
        with self._write() as conn:
            row = conn.execute("SELECT view_id, window_spec, agg_spec, aggregator FROM fluvial_views "
                               "WHERE name = ?", (name,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO fluvial_views (name, aggregator, agg_spec, window_spec, created_ms, "
                    "updated_ms) VALUES (?, ?, ?, ?, ?, ?)",
                    (name, blob, json.dumps(agg_spec, sort_keys=True),
                     json.dumps(window_spec, sort_keys=True) if window_spec is not None else None,
                     now, now))
            else:
                view_id, old_window, old_agg, old_blob = row
                old_window = json.loads(old_window) if old_window is not None else None
                if old_window != window_spec:
                    raise ConfigError(
                        f"view {name!r} already exists with window {old_window}, not {window_spec}: "
                        "a view's window cannot change. Write to a new view name (or reprocess into "
                        "one), or drop the old view first")
                if json.loads(old_agg) != agg_spec:
                    raise ConfigError(
                        f"view {name!r} already exists with aggregator {json.loads(old_agg)}, not "
                        f"{agg_spec}: accumulators of different aggregators cannot be merged. "
                        "Write to a new view name")
                if blob != old_blob:
                    conn.execute("UPDATE fluvial_views SET aggregator = ?, agg_rev = agg_rev + 1, "
                                 "updated_ms = ? WHERE view_id = ?", (blob, now, view_id))
        return self.view(name)

    def views(self) -> list[ViewInfo]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_VIEW_COLUMNS} FROM fluvial_views ORDER BY name").fetchall()
            return [self._info(row) for row in rows]

    def view(self, name: str) -> ViewInfo:
        """The metadata of a view (:class:`ViewNotFound` lists the existing ones)."""
        with self._read() as conn:
            row = conn.execute(f"SELECT {_VIEW_COLUMNS} FROM fluvial_views WHERE name = ?",
                               (name,)).fetchone()
            if row is None:
                check_view_name(name)
                raise self._not_found(name)
            return self._info(row)

    def aggregator(self, name: str) -> Aggregator[Any, Any, Any]:
        """The aggregator object stored with a view."""
        with self._read():
            return self._meta(name).agg

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
            txn = self._txn = SqliteTxn(self)
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
            return sqlite_leases.claim(conn, resource, owner, lease_ms=lease_ms, take_over=take_over, hint=hint)

    def renew(self, lease: Lease) -> None:
        """Keep ``lease`` alive. Raises :class:`~fluvial.errors.LeaseLost` if it was taken over."""
        with self._write() as conn:
            sqlite_leases.fence(conn, lease, repr(self.path))

    def release(self, lease: Lease) -> None:
        """Free the resource of ``lease`` if it still holds it."""
        with self._write() as conn:
            sqlite_leases.release(conn, lease)

    def holder(self, resource: str) -> Holder | None:
        """Who holds ``resource`` (``owner`` None: released; ``None``: never claimed)."""
        with self._read() as conn:
            return sqlite_leases.holder(conn, resource)

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

    # -- versions ---------------------------------------------------------------

    def begin_version(self, view: str, *, aggregator: Aggregator[Any, Any, Any] | None = None,
                      window: WindowShape | _Unset | None = UNSET) -> int:
        """Create the next (empty) batch version of a view; write it with ``part=version``.

        Every version records the aggregator and window it is written with: the
        view's (default), or, for a reprocessing with changed code, its own
        (``aggregator``/``window``).  Publishing a version makes its aggregator
        and window the view's, for the realtime part that follows it.
        """
        with self._write() as conn:
            meta = self._meta(view)
            row = conn.execute("SELECT next_version, aggregator, agg_spec, window_spec FROM fluvial_views "
                               "WHERE view_id = ?", (meta.view_id,)).fetchone()
            version, blob, agg_spec, window_spec = row
            if aggregator is not None:
                blob = dump_aggregator(view, aggregator)
                agg_spec = json.dumps(aggregator.spec(), sort_keys=True)
            if not isinstance(window, _Unset):
                check_shape(view, window)
                window_spec = json.dumps(window.spec(), sort_keys=True) if window is not None else None
            conn.execute("UPDATE fluvial_views SET next_version = ?, updated_ms = ? WHERE view_id = ?",
                         (version + 1, _now_ms(), meta.view_id))
            conn.execute("INSERT INTO fluvial_versions (view_id, version, created_ms, aggregator, agg_spec, "
                         "window_spec) VALUES (?, ?, ?, ?, ?, ?)",
                         (meta.view_id, version, _now_ms(), blob, agg_spec, window_spec))
        return int(version)

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
            meta = self._meta(view)
            for old, cutoff in self._versions(meta.view_id).items():
                if cutoff is not None and old not in (meta.alias, meta.previous):
                    self._drop(meta.view_id, old)

    def rollback(self, view: str) -> int:
        """Switch the alias back to the previous kept version; returns it.

        The version rolled back from is kept (inspect it with
        ``query(view, version=...)``); remove it with :meth:`drop_version`.
        """
        with self._write() as conn:
            meta = self._meta(view)
            if meta.previous is None:
                raise StoreError(f"view {view!r} has no previous version to roll back to "
                                 f"(current version: {meta.alias})")
            older = [v for v, c in self._versions(meta.view_id).items()
                     if c is not None and v < meta.previous]
            conn.execute("UPDATE fluvial_views SET alias_version = ?, previous_version = ?, "
                         "updated_ms = ? WHERE view_id = ?",
                         (meta.previous, max(older) if older else None, _now_ms(), meta.view_id))
            return meta.previous

    def drop_version(self, view: str, version: int) -> None:
        """Delete a batch version and its rows (not the current one)."""
        with self._write() as conn:
            meta = self._meta(view)
            self._part_no(meta, version)
            if version == meta.alias:
                raise StoreError(f"version {version} is the current version of view {view!r}: "
                                 "publish or roll back to another version before dropping it")
            if version == meta.previous:
                conn.execute("UPDATE fluvial_views SET previous_version = NULL WHERE view_id = ?",
                             (meta.view_id,))
            self._drop(meta.view_id, version)

    def _drop(self, view_id: int, version: int) -> None:
        self._conn.execute("DELETE FROM fluvial_rows WHERE view_id = ? AND part = ?", (view_id, version))
        self._conn.execute("DELETE FROM fluvial_versions WHERE view_id = ? AND version = ?",
                           (view_id, version))
        self._touch(view_id)

    # -- queries ----------------------------------------------------------------

    def query_with_version(self, view: str, **filters: Any) -> tuple[int | None, list[Row]]:
        """:meth:`query`, and the batch version it read, from one snapshot."""
        with self._read():
            rows = self.query(view, **filters)
            version = filters.get("version")
            return (self._meta(view).alias if version is None else version), rows

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
        with self._read() as conn:
            meta = self._meta_of(view, version)
            shape = meta.shape
            if shape is None and (from_ms is not None or to_ms is not None):
                raise ConfigError(f"view {view!r} has no window: from_ms/to_ms do not apply")
            parts: list[int] = []
            if version is not None:
                parts.append(self._part_no(meta, version))
            elif meta.alias is not None:
                parts.append(meta.alias)
            if realtime:  # every realtime generation not yet covered by a batch version
                parts.extend(p for (p,) in conn.execute(
                    "SELECT DISTINCT part FROM fluvial_rows WHERE view_id = ? AND part <= 0",
                    (meta.view_id,)))
            sql = "SELECT key, wstart, wend, acc FROM fluvial_rows WHERE view_id = ? AND part = ?"
            extra: list[Any] = []
            if key is not UNSET:
                sql += " AND key = ?"
                extra.append(encode_key(key))
            low, high = stored_starts(shape, from_ms, to_ms)  # push the window filter down
            if low is not None:
                sql += " AND wstart >= ?"
                extra.append(low)
            if high is not None:
                sql += " AND wstart < ?"
                extra.append(high)
            fetched = [conn.execute(sql, (meta.view_id, part, *extra)).fetchall() for part in parts]
        with gc_paused():
            return compose_rows(meta.agg, shape, fetched, from_ms, to_ms)

    # -- save_to tables ---------------------------------------------------------

    def tables(self) -> list[str]:
        """Names of the ``save_to`` tables."""
        with self._read() as conn:
            return [name for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'fluvial\\_%' "
                "ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")]

    def table_rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of a ``save_to`` table, as dicts, sorted by its key columns."""
        _check_table(table)
        with self._read() as conn:
            columns = _table_columns(conn, table)
            if columns is None:
                raise StoreError(f"no table {table!r} in {self.path!r}; tables: {self.tables()}")
            names = [name for name, _ in columns]
            order = [name for name, pk in sorted(columns, key=lambda c: c[1]) if pk] or names
            cursor = conn.execute(f"SELECT {_quote_all(names)} FROM \"{table}\" "
                                  f"ORDER BY {_quote_all(order)}")
            return [dict(zip(names, row)) for row in cursor]

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


class SqliteTxn:
    """The writes of one :meth:`SqliteStore.transaction` (see :class:`~fluvial.serving.base.Txn`)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._conn = store._conn
        self._open = True

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("this transaction has ended; open a new one with store.transaction()")

    def merge_rows(self, view: str, rows: Iterable[tuple[Key, Window | None, Any]], *,
                   part: Part = REALTIME) -> int:
        """Merge ``(key, window, acc)`` rows into a part with the view's ``merge``.

        Rows whose accumulator is zero are skipped; a stored row whose merged
        accumulator becomes zero is deleted.  Returns the number of rows read.
        """
        self._check_open()
        store = self._store
        meta = store._meta_of(view, part)
        part_no = store._part_no(meta, part)
        counter = [0]
        # In primary-key order: SQLite then appends to its B-tree instead of inserting at
        # random places (3x faster for a batch version of 100k+ rows).
        with gc_paused():
            params: Any = sorted(encode_rows(meta, part_no, rows, counter, skip_zero=True), key=primary_key)
        store._merge_error = None
        store._merging = meta.agg   # the aggregator of this part (a version may have its own)
        store._zeroed = 0
        try:
            self._conn.executemany(
                "INSERT INTO fluvial_rows (view_id, part, key, wstart, wend, acc) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (view_id, part, key, wstart, wend) "
                "DO UPDATE SET acc = fluvial_merge(view_id, acc, excluded.acc)", params)
        except sqlite3.OperationalError as exc:
            if store._merge_error is not None:
                error, store._merge_error = store._merge_error, None
                raise StoreError(f"view {view!r}: merging rows failed in the aggregator: "
                                 f"{error!r}") from error
            raise StoreError(f"view {view!r}: writing rows failed: {exc}") from exc
        finally:
            store._merging = None
        if store._zeroed:
            self._conn.execute("DELETE FROM fluvial_rows WHERE view_id = ? AND part = ? "
                               "AND acc IS NULL", (meta.view_id, part_no))
        store._touch(meta.view_id)
        return counter[0]

    def put_rows(self, view: str, rows: Iterable[tuple[Key, Window | None, Any]], *,
                 part: Part = REALTIME) -> int:
        """Overwrite ``(key, window, acc)`` rows (for views of "latest" values)."""
        self._check_open()
        store = self._store
        meta = store._meta_of(view, part)
        counter = [0]
        params = encode_rows(meta, store._part_no(meta, part), rows, counter, skip_zero=False)
        self._conn.executemany(
            "INSERT INTO fluvial_rows (view_id, part, key, wstart, wend, acc) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (view_id, part, key, wstart, wend) DO UPDATE SET acc = excluded.acc", params)
        store._touch(meta.view_id)
        return counter[0]

    def delete_part(self, view: str, part: Part) -> int:
        """Delete every row of a part (the version itself stays; ``"realtime"``: every
        realtime generation); returns the count."""
        self._check_open()
        meta = self._store._meta(view)
        if part == REALTIME:
            cursor = self._conn.execute("DELETE FROM fluvial_rows WHERE view_id = ? AND part <= 0",
                                        (meta.view_id,))
        else:
            cursor = self._conn.execute("DELETE FROM fluvial_rows WHERE view_id = ? AND part = ?",
                                        (meta.view_id, self._store._part_no(meta, part)))
        self._store._touch(meta.view_id)
        return cursor.rowcount

    def snapshot_realtime(self, view: str, version: int) -> int:
        """Merge every realtime generation of ``view`` into batch version ``version``
        (the speed layer's part, kept as a version of its own); returns the rows written."""
        self._check_open()
        store = self._store
        meta = store._meta_of(view, version)
        part = store._part_no(meta, version)
        store._merge_error = None
        store._merging = meta.agg
        try:
            cursor = self._conn.execute(
                "INSERT INTO fluvial_rows (view_id, part, key, wstart, wend, acc) "
                "SELECT view_id, ?, key, wstart, wend, acc FROM fluvial_rows WHERE view_id = ? AND part <= 0 "
                "AND acc IS NOT NULL ORDER BY part DESC "
                "ON CONFLICT (view_id, part, key, wstart, wend) DO UPDATE SET "
                "acc = fluvial_merge(view_id, acc, excluded.acc)", (part, meta.view_id))
        except sqlite3.OperationalError as exc:
            error = store._merge_error or exc
            store._merge_error = None
            raise StoreError(f"view {view!r}: copying the realtime part failed: {error!r}") from error
        finally:
            store._merging = None
        self._conn.execute("DELETE FROM fluvial_rows WHERE view_id = ? AND part = ? AND acc IS NULL",
                           (meta.view_id, part))
        # The snapshot holds what the served code computed: it keeps that code's late count.
        self._conn.execute("UPDATE fluvial_versions SET late_events = "
                           "(SELECT late_events FROM fluvial_views WHERE view_id = ?) "
                           "WHERE view_id = ? AND version = ?", (meta.view_id, meta.view_id, part))
        return cursor.rowcount

    def seal_realtime(self, view: str) -> int:
        """Close the open realtime generation of ``view`` and return its number.

        Later ``merge_rows(part="realtime")`` go to a new generation.  A batch
        run seals in the same transaction in which it reads the speed layer's
        checkpoint (its cut-off): every generation up to the sealed one holds
        events before the cut-off, and publishing with ``realtime_through``
        drops exactly those, even while the speed layer keeps committing.
        """
        self._check_open()
        meta = self._store._meta(view)
        # The late count at the seal is what the batch version publishing these generations
        # takes over (the count of the code that wrote the view, up to the cut-off).
        self._conn.execute("UPDATE fluvial_views SET rt_gen = rt_gen + 1, sealed_gen = rt_gen, "
                           "sealed_late = late_events WHERE view_id = ?", (meta.view_id,))
        return meta.rt_gen

    def publish(self, view: str, version: int, cutoff: Mapping[int, int], *,
                drop_realtime: bool = False, realtime_through: int | None = None,
                tails: Sequence[Any] | None = None) -> None:
        """The switch of :meth:`SqliteStore.publish_version`, inside this transaction
        (so that it commits together with, e.g., a stream checkpoint)."""
        self._check_open()
        try:
            cutoff_json = json.dumps({str(int(p)): int(o) for p, o in dict(cutoff).items()})
            tails_json = None if tails is None else json.dumps(list(tails))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"cutoff must map partition numbers to offsets, got {cutoff!r} "
                              f"(tails {tails!r})") from exc
        store, conn = self._store, self._conn
        meta = store._meta(view)
        store._part_no(meta, version)
        now = _now_ms()
        spec = conn.execute("SELECT aggregator, agg_spec, window_spec FROM fluvial_versions "
                            "WHERE view_id = ? AND version = ? AND aggregator IS NOT NULL",
                            (meta.view_id, version)).fetchone()
        if spec is not None:  # the realtime part that follows this version uses its code
            conn.execute("UPDATE fluvial_views SET aggregator = ?, agg_spec = ?, window_spec = ?, "
                         "agg_rev = agg_rev + 1 WHERE view_id = ? AND (aggregator IS NOT ? OR "
                         "window_spec IS NOT ?)", (spec[0], spec[1], spec[2], meta.view_id, spec[0], spec[2]))
        conn.execute("UPDATE fluvial_versions SET cutoff = ?, published_ms = ?, "
                     "cutoff_tails = COALESCE(?, cutoff_tails) WHERE view_id = ? AND version = ?",
                     (cutoff_json, now, tails_json, meta.view_id, version))
        if meta.alias != version:
            conn.execute("UPDATE fluvial_views SET alias_version = ?, previous_version = ?, updated_ms = ? "
                         "WHERE view_id = ?", (version, meta.alias, now, meta.view_id))
        self._publish_late(meta.view_id, version, drop_realtime=drop_realtime, realtime_through=realtime_through)
        if drop_realtime:
            lowest = -(2**62) if realtime_through is None else -int(realtime_through)
            conn.execute("DELETE FROM fluvial_rows WHERE view_id = ? AND part <= 0 AND part >= ?",
                         (meta.view_id, lowest))

    def _publish_late(self, view_id: int, version: int, *, drop_realtime: bool,
                      realtime_through: int | None) -> None:
        """Late counts at a switch: each late event counts once per version.

        A batch version counts no late event itself: it takes over the count of the
        realtime generations it covers (the count at their seal), and the served count
        goes on.  A version with a count of its own (written by a replay, a snapshot of
        the realtime part, or published before) brings it back when it replaces the
        whole realtime part: a reprocessing, a dry run or a rollback adds nothing twice.
        """
        conn = self._conn
        (own,) = conn.execute("SELECT late_events FROM fluvial_versions WHERE view_id = ? AND version = ?",
                              (view_id, version)).fetchone()
        if own is None:
            sealed_gen, sealed_late, live = conn.execute(
                "SELECT sealed_gen, sealed_late, late_events FROM fluvial_views WHERE view_id = ?",
                (view_id,)).fetchone()
            covered = sealed_late if realtime_through is not None and sealed_gen == realtime_through else live
            conn.execute("UPDATE fluvial_versions SET late_events = ? WHERE view_id = ? AND version = ?",
                         (covered, view_id, version))
        elif drop_realtime and realtime_through is None:
            conn.execute("UPDATE fluvial_views SET late_events = ? WHERE view_id = ?", (own, view_id))

    def reset_realtime(self, view: str, *, retract: bool = False) -> None:
        """Drop every realtime generation of ``view``: the speed layer recomputes them.

        The served late count goes back to that of the current batch version (what was
        counted up to its cut-off).  With ``retract`` the current batch version is
        dropped too (it covers events the log no longer holds): queries then read the
        realtime part alone until the next publish.
        """
        self._check_open()
        meta = self._store._meta(view)
        conn = self._conn
        conn.execute("DELETE FROM fluvial_rows WHERE view_id = ? AND part <= 0", (meta.view_id,))
        alias = meta.alias
        if retract and alias is not None:
            conn.execute("UPDATE fluvial_views SET alias_version = NULL WHERE view_id = ?", (meta.view_id,))
            self._store._drop(meta.view_id, alias)
            alias = None
        row = None if alias is None else conn.execute(
            "SELECT late_events FROM fluvial_versions WHERE view_id = ? AND version = ?",
            (meta.view_id, alias)).fetchone()
        conn.execute("UPDATE fluvial_views SET late_events = ?, updated_ms = ? WHERE view_id = ?",
                     ((row[0] or 0) if row is not None else 0, _now_ms(), meta.view_id))

    def set_checkpoint(self, runner_id: str, blob: bytes, *, expect: int | _Unset | None = UNSET) -> int:
        """Write a runner's checkpoint; return its new fencing token.

        With ``expect`` (the token the writer read, ``None``: no checkpoint), the write
        succeeds only if the checkpoint is still that one: otherwise another writer (a
        batch run handing over its cut-off, a switch, a second runner) replaced it, and
        :class:`~fluvial.errors.CheckpointFenced` voids this whole transaction.
        """
        self._check_open()
        if not isinstance(runner_id, str) or not runner_id:
            raise ConfigError(f"runner_id must be a non-empty string, got {runner_id!r}")
        if not isinstance(expect, _Unset):
            current = self.checkpoint_token(runner_id)
            if current != expect:
                raise CheckpointFenced(
                    f"the checkpoint {runner_id!r} in {self._store.path!r} was replaced by another writer "
                    f"(token {current}, this writer read {expect}): its micro-batch is not committed; "
                    "the runner reloads the checkpoint and goes on from there")
        token = secrets.randbits(62) + 1
        self._conn.execute(
            "INSERT INTO fluvial_checkpoints (runner_id, blob, updated_ms, token) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (runner_id) DO UPDATE SET blob = excluded.blob, updated_ms = excluded.updated_ms, "
            "token = excluded.token", (runner_id, bytes(blob), _now_ms(), token))
        return token

    def checkpoint_token(self, runner_id: str) -> int | None:
        """The fencing token of a runner's checkpoint (``None``: it has none)."""
        self._check_open()
        row = self._conn.execute("SELECT token FROM fluvial_checkpoints WHERE runner_id = ?",
                                 (runner_id,)).fetchone()
        return int(row[0]) if row is not None else None

    def fence(self, lease: Lease) -> None:
        """Go on only while ``lease`` holds (renewing it): else :class:`~fluvial.errors.LeaseLost`
        voids this whole transaction, whatever it wrote before."""
        self._check_open()
        sqlite_leases.fence(self._conn, lease, repr(self._store.path))

    def delete_checkpoint(self, runner_id: str) -> None:
        self._check_open()
        self._conn.execute("DELETE FROM fluvial_checkpoints WHERE runner_id = ?", (runner_id,))

    def get_checkpoint(self, runner_id: str) -> bytes | None:
        self._check_open()
        row = self._conn.execute("SELECT blob FROM fluvial_checkpoints WHERE runner_id = ?",
                                 (runner_id,)).fetchone()
        return bytes(row[0]) if row is not None else None

    def add_late_events(self, view: str, n: int, *, part: Part = REALTIME) -> None:
        """Count ``n`` late events: for the served view (its realtime part), or for the
        batch version ``part`` a replay is writing (it counts only once that version is
        served)."""
        self._check_open()
        store = self._store
        meta = store._meta(view)
        if part == REALTIME:
            self._conn.execute("UPDATE fluvial_views SET late_events = late_events + ?, updated_ms = ? "
                               "WHERE view_id = ?", (int(n), _now_ms(), meta.view_id))
            return
        self._conn.execute("UPDATE fluvial_versions SET late_events = COALESCE(late_events, 0) + ? "
                           "WHERE view_id = ? AND version = ?", (int(n), meta.view_id, store._part_no(meta, part)))

    def save_rows(self, table: str, columns: list[str], rows: Iterable[Any], *,
                  key_columns: int = 1) -> int:
        """Upsert rows into a user table (the ``save_to`` sink; the seed's ``saveToCassandra``).

        The table is created if missing, with a primary key on the first
        ``key_columns`` columns.  Rows are sequences in ``columns`` order or
        mappings by column name; lists, dicts and other non-scalars are stored
        as JSON text.  Returns the number of rows written.
        """
        self._check_open()
        _check_table(table)
        columns = list(columns)
        for column in columns:
            check_identifier("column", column)
        if len({c.lower() for c in columns}) != len(columns):
            raise ConfigError(f"table {table!r}: duplicate column names in {columns}")
        if not isinstance(key_columns, int) or not 1 <= key_columns <= len(columns):
            raise ConfigError(f"table {table!r}: key_columns must be between 1 and {len(columns)}, "
                              f"got {key_columns!r}")
        existing = _table_columns(self._conn, table)
        wanted = [(c, i + 1 if i < key_columns else 0) for i, c in enumerate(columns)]
        if existing is None:
            keys = _quote_all(columns[:key_columns])
            self._conn.execute(f"CREATE TABLE \"{table}\" ({_quote_all(columns)}, "
                               f"PRIMARY KEY ({keys})) WITHOUT ROWID")
        elif [(c.lower(), pk) for c, pk in existing] != [(c.lower(), pk) for c, pk in wanted]:
            raise ConfigError(
                f"table {table!r} exists with columns {[c for c, _ in existing]} (key: "
                f"{[c for c, pk in existing if pk]}), not {columns} (key: {columns[:key_columns]}); "
                "save to a new table name or drop the old table")
        others = columns[key_columns:]
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in others)
        conflict = f"DO UPDATE SET {updates}" if others else "DO NOTHING"
        sql = (f"INSERT INTO \"{table}\" ({_quote_all(columns)}) VALUES "
               f"({', '.join('?' * len(columns))}) ON CONFLICT ({_quote_all(columns[:key_columns])}) "
               f"{conflict}")
        count = 0

        def params() -> Iterator[list[Any]]:
            nonlocal count
            for row in rows:
                if isinstance(row, Mapping):
                    try:
                        values = [row[c] for c in columns]
                    except KeyError as exc:
                        raise ConfigError(f"table {table!r}: row {row!r} has no column {exc}") from None
                else:
                    values = list(row)
                    if len(values) != len(columns):
                        raise ConfigError(f"table {table!r}: row {row!r} has {len(values)} values "
                                          f"for {len(columns)} columns {columns}")
                count += 1
                yield [_sql_value(v) for v in values]

        try:
            self._conn.executemany(sql, params())
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"table {table!r}: {exc} (key columns {columns[:key_columns]} "
                             "cannot be null)") from exc
        return count


# -- helpers ------------------------------------------------------------------


def _check_table(table: Any) -> str:
    check_identifier("table", table)
    if table.lower().startswith(("fluvial_", "sqlite_")):
        raise ConfigError(f"invalid table name {table!r}: names starting with 'fluvial_' or "
                          "'sqlite_' are reserved for the store itself")
    return table


def _table_columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, int]] | None:
    info = conn.execute(f"PRAGMA table_info(\"{table}\")").fetchall()
    return [(row[1], row[5]) for row in info] if info else None


def _quote_all(names: list[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


_SCALARS = (str, int, float, bytes, type(None))


def _sql_value(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError) as exc:
        raise StoreError(f"cannot store value {value!r} of type {type(value).__name__}: {exc}") from exc
