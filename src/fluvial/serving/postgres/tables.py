"""The ``save_to`` tables in PostgreSQL (see :mod:`fluvial.serving.tables`).

Each table is a PostgreSQL table of its own in the store's schema, its key columns
as primary key, written with ``INSERT ... ON CONFLICT DO UPDATE`` in batches.
``fluvial_tables`` records each table's columns and key.  Every column is ``JSONB``:
a ``save_to`` sink writes whatever its rows hold, and, as from SQLite's dynamically
typed columns, every value comes back with the type it was saved with (``1``, ``1.5``,
``"x"``; non-scalars as their JSON text, as in every store); byte strings are refused.
In SQL, cast where a type is wanted: ``SELECT device, (n)::bigint FROM device_stats``.
Names are always quoted as identifiers (:mod:`psycopg.sql`), after
:func:`check_table` and the column checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fluvial.errors import ConfigError, StoreError
from fluvial.serving.keys import check_identifier
from fluvial.serving.tables import SYSTEM_TABLES, check_columns, column_values

if TYPE_CHECKING:
    import psycopg


def check_table(table: Any) -> str:
    check_identifier("table", table)
    if table in SYSTEM_TABLES:
        return table
    if table.lower().startswith(("fluvial_", "pg_")):
        raise ConfigError(f"invalid table name {table!r}: names starting with 'fluvial_' or "
                          "'pg_' are reserved for the store itself")
    return table


def _json(table: str, value: Any) -> Any:
    from psycopg.types.json import Jsonb

    if value is None:
        return None
    if isinstance(value, bytes):
        raise StoreError(f"table {table!r}: a byte string ({value[:20]!r}...) cannot be saved in a "
                         "PostgreSQL store's table; decode it to text first (map before save_to)")
    return Jsonb(int(value) if isinstance(value, bool) else value)


def save_rows(conn: psycopg.Connection[Any], table: str, columns: Iterable[str], rows: Iterable[Any], *,
              key_columns: int = 1) -> int:
    """Upsert rows into ``table``, creating it if missing; returns the number of rows written."""
    import psycopg
    from psycopg import sql

    check_table(table)
    columns = check_columns(table, columns, key_columns)
    counter = [0]
    values = [[_json(table, v) for v in row] for row in column_values(table, columns, rows, counter)]
    existing = _table_columns(conn, table)
    if existing is None:
        defs = sql.SQL(", ").join(sql.SQL("{} JSONB").format(sql.Identifier(c)) for c in columns)
        conn.execute(sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY ({}))").format(
            sql.Identifier(table), defs, _names(columns[:key_columns])))
        conn.execute("INSERT INTO fluvial_tables (name, columns, key_columns) VALUES (%s, %s, %s)",
                     (table, json.dumps(columns), key_columns))
    elif [c.lower() for c in existing[0]] != [c.lower() for c in columns] or existing[1] != key_columns:
        raise ConfigError(
            f"table {table!r} exists with columns {existing[0]} (key: {existing[0][:existing[1]]}), "
            f"not {columns} (key: {columns[:key_columns]}); save to a new table name or drop the old table")
    else:
        columns = existing[0]
    others = columns[key_columns:]
    conflict = (sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
        sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in others)) if others
        else sql.SQL("DO NOTHING"))
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {}").format(
        sql.Identifier(table), _names(columns), sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        _names(columns[:key_columns]), conflict)
    try:
        with conn.cursor() as cursor:
            cursor.executemany(statement, values)
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
        raise StoreError(f"table {table!r}: {str(exc).strip()} (key columns {columns[:key_columns]} cannot "
                         "be null)") from exc
    return counter[0]


def names(conn: psycopg.Connection[Any]) -> list[str]:
    """The names of the ``save_to`` tables."""
    return [name for (name,) in conn.execute("SELECT name FROM fluvial_tables ORDER BY name")]


def table_rows(conn: psycopg.Connection[Any], where: str, table: str) -> list[dict[str, Any]]:
    """Every row of a ``save_to`` table, as dicts, sorted by its key columns."""
    from psycopg import sql

    existing = _table_columns(conn, table)
    if existing is None:
        raise StoreError(f"no table {table!r} in {where}; tables: {names(conn)}")
    columns, key_columns = existing
    cursor = conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
        _names(columns), sql.Identifier(table), _names(columns[:key_columns])))
    return [dict(zip(columns, row)) for row in cursor]


def _table_columns(conn: psycopg.Connection[Any], table: str) -> tuple[list[str], int] | None:
    row = conn.execute("SELECT columns, key_columns FROM fluvial_tables WHERE name = %s", (table,)).fetchone()
    return None if row is None else (json.loads(row[0]), int(row[1]))


def _names(names: list[str]) -> Any:
    from psycopg import sql

    return sql.SQL(", ").join(sql.Identifier(name) for name in names)
