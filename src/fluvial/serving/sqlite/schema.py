"""The tables of the SQLite view store, their migrations, and opening a connection.

The schema version is the file's ``PRAGMA user_version``.  A new file gets
:data:`TABLES` and then the migrations after :data:`TABLES_CREATE`; an older file
is brought up to :data:`SCHEMA_VERSION` in place, once, under the write lock; a
newer one is refused (upgrade fluvial).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from fluvial.errors import StoreError
from fluvial.serving.sqlite.leases import LEASES_TABLE

__all__ = ["DEFAULT_BUSY_TIMEOUT_MS", "MIGRATIONS", "SCHEMA_VERSION", "TABLES", "TABLES_CREATE", "connect",
           "create_or_migrate"]

SCHEMA_VERSION = 4
DEFAULT_BUSY_TIMEOUT_MS = 10_000

TABLES = [
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
"""The tables as schema version :data:`TABLES_CREATE` had them."""
TABLES_CREATE = 2
"""``TABLES`` creates this schema version; a new store then takes the migrations after it."""
MIGRATIONS = {1: ["ALTER TABLE fluvial_views ADD COLUMN rt_gen INTEGER NOT NULL DEFAULT 0",
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
              3: [LEASES_TABLE]}
"""Statements taking a store from schema version N to N + 1."""


def connect(path: str, *, synchronous: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """A connection to the store file ``path`` in WAL mode, in autocommit (transactions
    are begun explicitly)."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
        conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        _wal(conn, busy_timeout_ms)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB of pages: views of 100k+ rows
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the view store {path!r}: {exc}") from exc
    return conn


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


def create_or_migrate(conn: sqlite3.Connection, path: str,
                      write: Callable[[], AbstractContextManager[Any]]) -> None:
    """Bring the store up to :data:`SCHEMA_VERSION`, inside ``write()`` (a write transaction)."""
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    if current == SCHEMA_VERSION:
        return
    if current > SCHEMA_VERSION:
        raise StoreError(f"{path!r} has view store schema {current}; this fluvial knows "
                         f"{SCHEMA_VERSION}: upgrade fluvial")
    with write():
        # Read again under the write lock: processes opening a new store at the same
        # moment would otherwise each run the migrations ("duplicate column name").
        (current,) = conn.execute("PRAGMA user_version").fetchone()
        if current == SCHEMA_VERSION:
            return
        if current == 0:
            for statement in TABLES:
                conn.execute(statement)
            current = TABLES_CREATE
        for version in range(current, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
