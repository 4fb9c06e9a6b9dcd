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

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

import msgspec

from fluvial.aggregators.base import Aggregator
from fluvial.state.base import CheckpointTxn, StateStore
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
        late_events: Late events of the version being served: those the code that wrote it
            counted up to its cut-off (a replay counts its own), plus those the speed layer
            counted since.  A reprocessing, a dry run or a rollback never adds to it twice.
        cutoff_tails: Per published version whose cut-off was read from the log itself, per
            partition, the identity ``[device, seq, append_ms]`` of the last event before the
            cut-off (``None`` at offset 0): whether the log still holds what the version covers.
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
    cutoff_tails: dict[int, list[Any]] = msgspec.field(default_factory=dict)

    @property
    def cutoff(self) -> dict[int, int] | None:
        """The cut-off of the current batch version (``None`` before the first publish)."""
        if self.alias_version is None:
            return None
        return self.cutoffs.get(self.alias_version)

    @property
    def tails(self) -> list[Any] | None:
        """The identities at the cut-off of the current batch version (see ``cutoff_tails``)."""
        if self.alias_version is None:
            return None
        return self.cutoff_tails.get(self.alias_version)


class Txn(CheckpointTxn, Protocol):
    """Writes bound to ONE database transaction (all or nothing): view changes, and the
    checkpoint and fence of :class:`~fluvial.state.base.CheckpointTxn`."""

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
                drop_realtime: bool = False, realtime_through: int | None = None,
                tails: Sequence[Any] | None = None) -> None:
        """Switch the alias to ``version`` inside this transaction (see ``ViewStore.publish_version``)."""
        ...

    def reset_realtime(self, view: str, *, retract: bool = False) -> None:
        """Drop every realtime generation (and with ``retract`` the current batch version)."""
        ...

    def snapshot_realtime(self, view: str, version: int) -> int:
        """Merge every realtime generation of ``view`` into batch version ``version`` (the speed
        layer's rows kept as a version of their own before a Kappa switch); returns the rows written."""
        ...

    def add_late_events(self, view: str, n: int, *, part: Part = REALTIME) -> None:
        """Count late events for the served view, or for the version ``part`` a replay writes."""
        ...

    def save_rows(self, table: str, columns: list[str], rows: Iterable[Any], *,
                  key_columns: int = 1) -> int:
        """Upsert rows into a user table (the ``save_to`` sink)."""
        ...


class ViewStore(StateStore, Protocol):
    """Where views, their versions and ``save_to`` tables live, with the checkpoints and leases
    of :class:`~fluvial.state.base.StateStore` in the same database."""

    def define_view(self, name: str, *, aggregator: Aggregator[Any, Any, Any],
                    window: WindowShape | None = None) -> ViewInfo: ...

    def transaction(self) -> AbstractContextManager[Txn]: ...

    def reopen(self) -> ViewStore | None:
        """Another connection to the same store, for another thread (``None``: not possible)."""
        ...

    def begin_version(self, view: str, *, aggregator: Aggregator[Any, Any, Any] | None = None,
                      window: WindowShape | _Unset | None = UNSET) -> int:
        """Create the next (empty, unpublished) batch version of a view and return its number;
        it records the view's aggregator and window, or (a reprocessing with changed code) its own."""
        ...

    def publish_version(self, view: str, version: int, cutoff: dict[int, int], *,
                        drop_realtime: bool = False, realtime_through: int | None = None,
                        tails: Sequence[Any] | None = None) -> None: ...

    def rollback(self, view: str) -> int: ...

    def drop_older_versions(self, view: str) -> None:
        """Drop published versions other than the current and the kept previous one (idempotent)."""
        ...

    def drop_version(self, view: str, version: int) -> None: ...

    def query(self, view: str, *, key: Key = UNSET, from_ms: int | None = None,
              to_ms: int | None = None, version: int | None = None,
              realtime: bool = True) -> list[Row]: ...

    def query_with_version(self, view: str, **filters: Any) -> tuple[int | None, list[Row]]:
        """:meth:`query` and the batch version it read, from one snapshot."""
        ...

    def aggregator(self, name: str) -> Aggregator[Any, Any, Any]:
        """The aggregator stored with a view."""
        ...

    def tables(self) -> list[str]:
        """The names of the ``save_to`` tables."""
        ...

    def views(self) -> list[ViewInfo]: ...

    def view(self, name: str) -> ViewInfo: ...

    def table_rows(self, table: str) -> list[dict[str, Any]]: ...
