"""The ``save_to`` tables in SQLite (see :mod:`fluvial.serving.tables`).

Each table is a SQLite table of its own, ``WITHOUT ROWID`` with its key columns as
primary key, written with ``INSERT ... ON CONFLICT DO UPDATE``.  Every function
runs inside a transaction or a read snapshot the caller holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from fluvial.errors import ConfigError, StoreError
from fluvial.serving.keys import check_identifier
from fluvial.serving.tables import SYSTEM_TABLES, check_columns, column_values


def check_table(table: Any) -> str:
    check_identifier("table", table)
    if table in SYSTEM_TABLES:
        return table
    if table.lower().startswith(("fluvial_", "sqlite_")):
        raise ConfigError(f"invalid table name {table!r}: names starting with 'fluvial_' or "
                          "'sqlite_' are reserved for the store itself")
    return table


def save_rows(conn: sqlite3.Connection, table: str, columns: Iterable[str], rows: Iterable[Any], *,
              key_columns: int = 1) -> int:
    """Upsert rows into ``table``, creating it if missing; returns the number of rows written."""
    check_table(table)
    columns = check_columns(table, columns, key_columns)
    existing = _table_columns(conn, table)
    wanted = [(c, i + 1 if i < key_columns else 0) for i, c in enumerate(columns)]
    if existing is None:
        keys = _quote_all(columns[:key_columns])
        conn.execute(f"CREATE TABLE \"{table}\" ({_quote_all(columns)}, "
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
    counter = [0]
    try:
        conn.executemany(sql, column_values(table, columns, rows, counter))
    except sqlite3.IntegrityError as exc:
        raise StoreError(f"table {table!r}: {exc} (key columns {columns[:key_columns]} "
                         "cannot be null)") from exc
    return counter[0]


def names(conn: sqlite3.Connection) -> list[str]:
    """The names of the ``save_to`` tables."""
    return [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'fluvial\\_%' "
        "ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")]


def table_rows(conn: sqlite3.Connection, path: str, table: str) -> list[dict[str, Any]]:
    """Every row of a ``save_to`` table, as dicts, sorted by its key columns."""
    columns = _table_columns(conn, table)
    if columns is None:
        raise StoreError(f"no table {table!r} in {path!r}; tables: {names(conn)}")
    column_names = [name for name, _ in columns]
    order = [name for name, pk in sorted(columns, key=lambda c: c[1]) if pk] or column_names
    cursor = conn.execute(f"SELECT {_quote_all(column_names)} FROM \"{table}\" "
                          f"ORDER BY {_quote_all(order)}")
    return [dict(zip(column_names, row)) for row in cursor]


def _table_columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, int]] | None:
    info = conn.execute(f"PRAGMA table_info(\"{table}\")").fetchall()
    return [(row[1], row[5]) for row in info] if info else None


def _quote_all(names: list[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)
