"""The view store protocol: what the serving layer needs from a database.

A *view* is a table keyed by ``(key, window)`` whose rows hold aggregate
accumulators.  It has *parts*: batch versions ``name@v1, name@v2, ...`` behind
an alias (the current batch version), and one ``"realtime"`` part written by
the speed layer.  A query returns ``batch ⊕ realtime``: the parts of each key
are merged with the aggregator's ``merge`` and composed into windows with
:func:`fluvial.windows.compose`, then turned into values with ``result()``.

Rows have one shape everywhere (API, CLI, exports)::

    {"key": <key or null>, "window": [start_ms, end_ms] or null, "value": <aggregate>}

Keys are ``str``, ``int``, ``float``, ``bool``, ``None`` or tuples/lists of
them.  Stores compare them by a canonical encoding (JSON text, tuples as
arrays): ``1``, ``1.0`` and ``True`` are three different keys, and tuple keys
come back as lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

import msgspec

from fluvial.aggregators.base import Aggregator
from fluvial.windows.shapes import WindowShape

Window = tuple[int, int]
Key = Any  # str | int | float | bool | None | list/tuple of keys
Part = Literal["realtime"] | int
"""A view part: ``"realtime"`` or a batch version number (>= 1)."""

REALTIME: Literal["realtime"] = "realtime"


class _Unset:
    """Marker for "no key filter" (``None`` is a valid key)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class Row(msgspec.Struct, frozen=True):
    """One row of a view: ``{"key": ..., "window": [start_ms, end_ms] | null, "value": ...}``.

    ``msgspec.json.encode(row)`` gives the JSON shape of DESIGN.md.
    """

    key: Any
    window: tuple[int, int] | None
    value: Any


class ViewInfo(msgspec.Struct, frozen=True):
    """Metadata of a view.

    Attributes:
        name: The view name.
        alias_version: The batch version queries read (``None`` before the first publish).
        previous_version: The version ``rollback()`` would switch back to, if any.
        versions: Every batch version that exists (published, kept or being built).
        window: ``WindowShape.spec()`` of the view, ``None`` for views without window.
        aggregator: ``Aggregator.spec()`` of the view's aggregator.
        cutoffs: Per published version, the log cut-off it covers (partition -> offset).
        created_ms: When the view was defined (epoch ms).
        updated_ms: When its metadata or rows last changed (epoch ms).
        late_events: Events the speed layer counted as late for this view.
    """

    name: str
    alias_version: int | None
    previous_version: int | None
    versions: list[int]
    window: dict[str, Any] | None
    aggregator: dict[str, Any]
    cutoffs: dict[int, dict[int, int]]
    created_ms: int
    updated_ms: int
    late_events: int

    @property
    def cutoff(self) -> dict[int, int] | None:
        """The cut-off of the current batch version (``None`` before the first publish)."""
        if self.alias_version is None:
            return None
        return self.cutoffs.get(self.alias_version)


class Txn(Protocol):
    """Writes bound to ONE database transaction (all or nothing)."""

    def merge_rows(self, view: str, rows: Iterable[tuple[Key, Window | None, Any]], *,
                   part: Part = REALTIME) -> int:
        """Merge ``(key, window, acc)`` rows into a part with the view's ``merge``."""
        ...

    def put_rows(self, view: str, rows: Iterable[tuple[Key, Window | None, Any]], *,
                 part: Part = REALTIME) -> int:
        """Overwrite ``(key, window, acc)`` rows of a part."""
        ...

    def delete_part(self, view: str, part: Part) -> int:
        """Delete every row of a part; returns how many were deleted."""
        ...

    def seal_realtime(self, view: str) -> int:
        """Close the open realtime generation (later realtime writes start a new one); return it."""
        ...

    def publish(self, view: str, version: int, cutoff: dict[int, int], *,
                drop_realtime: bool = False, realtime_through: int | None = None) -> None:
        """Switch the alias to ``version`` inside this transaction (see ``ViewStore.publish_version``)."""
        ...

    def set_checkpoint(self, runner_id: str, blob: bytes) -> None: ...

    def get_checkpoint(self, runner_id: str) -> bytes | None: ...

    def add_late_events(self, view: str, n: int) -> None: ...

    def save_rows(self, table: str, columns: list[str], rows: Iterable[Any], *,
                  key_columns: int = 1) -> int:
        """Upsert rows into a user table (the ``save_to`` sink)."""
        ...


class ViewStore(Protocol):
    """Where views, their versions, checkpoints and ``save_to`` tables live."""

    def define_view(self, name: str, *, aggregator: Aggregator[Any, Any, Any],
                    window: WindowShape | None = None) -> ViewInfo: ...

    def transaction(self) -> AbstractContextManager[Txn]: ...

    def begin_version(self, view: str) -> int: ...

    def publish_version(self, view: str, version: int, cutoff: dict[int, int], *,
                        drop_realtime: bool = False, realtime_through: int | None = None) -> None: ...

    def rollback(self, view: str) -> int: ...

    def drop_version(self, view: str, version: int) -> None: ...

    def query(self, view: str, *, key: Key = UNSET, from_ms: int | None = None,
              to_ms: int | None = None, version: int | None = None,
              realtime: bool = True) -> list[Row]: ...

    def views(self) -> list[ViewInfo]: ...

    def view(self, name: str) -> ViewInfo: ...

    def table_rows(self, table: str) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...
