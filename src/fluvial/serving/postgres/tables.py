"""The ``save_to`` tables in PostgreSQL (see :mod:`fluvial.serving.tables`).

Each table is a PostgreSQL table of its own in the store's schema, its key columns
as primary key, written with ``INSERT ... ON CONFLICT DO UPDATE`` in batches.
``fluvial_tables`` records each table's columns and key.  A column's type is that
of the first value written to it (``BIGINT``, ``DOUBLE PRECISION``, ``TEXT`` or
``BYTEA``; ``TEXT`` when the first rows hold only nulls), so rows come back with the
Python types they were saved with, as from SQLite.  Names are always quoted as
identifiers (:mod:`psycopg.sql`), after :func:`check_table` and the column checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fluvial.errors import ConfigError, StoreError
from fluvial.serving.keys import check_identifier
from fluvial.serving.tables import check_columns, column_values

if TYPE_CHECKING:
    import psycopg

_TYPES = ((bool, "BIGINT"), (int, "BIGINT"), (float, "DOUBLE PRECISION"), (str, "TEXT"), (bytes, "BYTEA"))


def check_table(table: Any) -> str:
    check_identifier("table", table)
    if table.lower().startswith(("fluvial_", "pg_")):
        raise ConfigError(f"invalid table name {table!r}: names starting with 'fluvial_' or "
                          "'pg_' are reserved for the store itself")
    return table


def _column_type(values: list[list[Any]], i: int) -> str:
    for row in values:
        value = row[i]
        if value is not None:
            return next(name for t, name in _TYPES if isinstance(value, t))
    return "TEXT"


def save_rows(conn: psycopg.Connection[Any], table: str, columns: Iterable[str], rows: Iterable[Any], *,
              key_columns: int = 1) -> int:
    """Upsert rows into ``table``, creating it if missing; returns the number of rows written."""
    import psycopg
    from psycopg import sql

    check_table(table)
    columns = check_columns(table, columns, key_columns)
    counter = [0]
    values = [[int(v) if isinstance(v, bool) else v for v in row]
              for row in column_values(table, columns, rows, counter)]
    existing = _table_columns(conn, table)
    if existing is None:
        defs = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_column_type(values, i)))
                                  for i, c in enumerate(columns))
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
    latest = {tuple(row[:key_columns]): row for row in values}   # one statement may not touch a row twice
    try:
        with conn.cursor() as cursor:
            cursor.executemany(statement, list(latest.values()))
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
        raise StoreError(f"table {table!r}: {str(exc).strip()} (key columns {columns[:key_columns]} cannot "
                         "be null; a column keeps the type of the first value saved to it)") from exc
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
