"""The tables of the ``save_to`` sink, the same in every store (the seed's ``saveToCassandra``).

A table has named columns and a primary key on its first ``key_columns`` columns.
Rows are sequences in column order or mappings by column name; lists, dicts and
other non-scalars are stored as JSON text.  Writing a row whose key is already
there replaces its other columns (an upsert).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import msgspec

from fluvial.errors import ConfigError, StoreError
from fluvial.serving.keys import check_identifier

_SCALARS = (str, int, float, bytes, type(None))
SYSTEM_TABLES = frozenset({"fluvial_devices"})
"""Tables the store keeps for fluvial itself (the device registry, :mod:`fluvial.layers.devices`):
their names are reserved like every ``fluvial_`` name, but the store writes and reads them."""


def check_columns(table: str, columns: Iterable[str], key_columns: int) -> list[str]:
    """The column names of a ``save_to`` table, checked (identifiers, no two alike, the key
    columns a prefix of them)."""
    columns = list(columns)
    for column in columns:
        check_identifier("column", column)
    if len({c.lower() for c in columns}) != len(columns):
        raise ConfigError(f"table {table!r}: duplicate column names in {columns}")
    if not isinstance(key_columns, int) or not 1 <= key_columns <= len(columns):
        raise ConfigError(f"table {table!r}: key_columns must be between 1 and {len(columns)}, "
                          f"got {key_columns!r}")
    return columns


def column_values(table: str, columns: list[str], rows: Iterable[Any], counter: list[int]) -> Iterator[list[Any]]:
    """The stored values of each row, in ``columns`` order; ``counter[0]`` counts the rows."""
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
        counter[0] += 1
        yield [stored_value(v) for v in values]


def stored_value(value: Any) -> Any:
    """``value`` itself if it is a scalar, else its JSON text."""
    if isinstance(value, _SCALARS):
        return value
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError) as exc:
        raise StoreError(f"cannot store value {value!r} of type {type(value).__name__}: {exc}") from exc
