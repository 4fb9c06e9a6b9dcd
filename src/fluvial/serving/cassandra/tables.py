"""The ``save_to`` tables in Cassandra (see :mod:`fluvial.serving.tables`): the seed's
``saveToCassandra("spark", "wordcount")``.

Each table is a Cassandra table of its own in the store's keyspace, its key columns
the partition key, every column ``text`` holding the JSON of the value, so that each
value comes back with the type it was saved with (``1``, ``1.5``, ``"x"``; non-scalars
as their JSON text, as in every store); byte strings are refused.  Names are quoted
(``"wordCount"`` keeps its case).  ``fluvial_tables`` records each table's columns and
key.  The table is created (DDL) when first saved to, before the commit; its rows are
written by the commit (:mod:`.commit`) with the commit's timestamp, so a micro-batch
applied twice writes the same cells, and a late re-application never wins over a
newer commit.  Rows written to these tables by other programs with ordinary (current
time) timestamps always win over fluvial's: leave the tables to fluvial.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import msgspec

from fluvial.errors import ConfigError, StoreError
from fluvial.serving.cassandra.buffer import Buffer
from fluvial.serving.cassandra.db import Db
from fluvial.serving.keys import check_identifier
from fluvial.serving.tables import SYSTEM_TABLES, check_columns, column_values

_MAX_NAME = 48


def quote(name: str) -> str:
    return '"' + name + '"'


def check_table(table: Any) -> str:
    check_identifier("table", table)
    if table in SYSTEM_TABLES:
        return table
    if table.lower().startswith("fluvial_") or len(table) > _MAX_NAME:
        raise ConfigError(f"invalid table name {table!r}: names starting with 'fluvial_' are reserved for the "
                          f"store itself, and Cassandra table names have at most {_MAX_NAME} characters")
    return table


def _json(table: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        raise StoreError(f"table {table!r}: a byte string ({value[:20]!r}...) cannot be saved in a "
                         "Cassandra store's table; decode it to text first (map before save_to)")
    return msgspec.json.encode(int(value) if isinstance(value, bool) else value).decode()


def save_rows(db: Db, buf: Buffer, table: str, columns: Iterable[str], rows: Iterable[Any], *,
              key_columns: int = 1) -> int:
    """Upsert rows into ``table``, creating it if missing; returns the number of rows written."""
    check_table(table)
    cols: list[str] = check_columns(table, columns, key_columns)
    counter = [0]
    values = [[_json(table, v) for v in row] for row in column_values(table, cols, rows, counter)]
    for row in values:
        if any(v is None for v in row[:key_columns]):
            raise StoreError(f"table {table!r}: row {row} has a null in its key columns "
                             f"{cols[:key_columns]} (key columns cannot be null)")
    existing = buf.get("fluvial_tables", table)
    if existing is None:
        defs = ", ".join(f"{quote(c)} text" for c in cols)
        db.run(f"CREATE TABLE IF NOT EXISTS {quote(table)} ({defs}, "
               f"PRIMARY KEY (({', '.join(map(quote, cols[:key_columns]))})))")
        buf.put("fluvial_tables", {"name": table, "columns": json.dumps(cols), "key_columns": key_columns})
    else:
        old = json.loads(existing["columns"])
        if [c.lower() for c in old] != [c.lower() for c in cols] or existing["key_columns"] != key_columns:
            raise ConfigError(
                f"table {table!r} exists with columns {old} (key: {old[:existing['key_columns']]}), "
                f"not {cols} (key: {cols[:key_columns]}); save to a new table name or drop the old table")
        cols = old
    buf.save(table, cols, key_columns, values)
    return counter[0]


def names(buf: Buffer) -> list[str]:
    return [row["name"] for row in buf.scan("fluvial_tables")]


def table_rows(db: Db, buf: Buffer, table: str) -> list[dict[str, Any]]:
    """Every row of a ``save_to`` table, as dicts, sorted by its key columns."""
    existing = buf.get("fluvial_tables", table)
    if existing is None:
        raise StoreError(f"no table {table!r} in {db.where}; tables: {names(buf)}")
    columns, key_columns = json.loads(existing["columns"]), existing["key_columns"]
    decode = msgspec.json.decode
    rows = [dict(zip(columns, (None if v is None else decode(v) for v in row)))
            for row in db.run(f"SELECT {', '.join(map(quote, columns))} FROM {quote(table)}")]
    rows.sort(key=lambda r: [_order(r[c]) for c in columns[:key_columns]])
    return rows


def _order(value: Any) -> tuple[int, Any]:
    """A sort key over mixed JSON values: numbers, then strings, then the rest by their JSON text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return 0, value
    if isinstance(value, str):
        return 1, value
    return 2, json.dumps(value, sort_keys=True)
