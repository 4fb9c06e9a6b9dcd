"""The views of a PostgreSQL store: their definitions, metadata and parts.

``fluvial_views`` holds a row per view: its aggregator (cloudpickled, with a
revision that grows when the flow's code changes it), its window, the alias (the
current batch version), the version a rollback returns to, the open realtime
generation and the served late count.  ``fluvial_versions`` holds a row per batch
version: the cut-off it covers once published, and the aggregator and window of a
version written with changed code.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any

from fluvial.aggregators.base import Aggregator
from fluvial.errors import ConfigError, StoreError, ViewNotFound
from fluvial.serving.base import REALTIME, Part, ViewInfo
from fluvial.serving.keys import check_view_name
from fluvial.serving.stored import ViewMeta, load_aggregator
from fluvial.windows.shapes import shape_from_spec

if TYPE_CHECKING:
    import psycopg

VIEW_COLUMNS = ("view_id, name, agg_rev, agg_spec, window_spec, alias_version, previous_version, "
                "created_ms, updated_ms, late_events")
"""The columns of ``fluvial_views`` that :meth:`Catalog.info` reads."""


def one(cursor: Any) -> tuple[Any, ...]:
    """The row of a statement that returns one (under the write lock, a row read before)."""
    row = cursor.fetchone()
    if row is None:
        raise StoreError("a row of the view store vanished during a transaction (was the schema "
                         "changed by hand?)")
    return tuple(row)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Catalog:
    """The view metadata read through one connection, each aggregator loaded once per revision.

    Every method runs inside a transaction or a read snapshot the caller holds.
    """

    def __init__(self, conn: psycopg.Connection[Any], path: str) -> None:
        self.conn = conn
        self.path = path
        self._aggs: dict[int, tuple[int, Aggregator[Any, Any, Any]]] = {}
        self._version_aggs: dict[tuple[int, int], Aggregator[Any, Any, Any]] = {}

    def names(self) -> list[str]:
        return [name for (name,) in self.conn.execute("SELECT name FROM fluvial_views ORDER BY name")]

    def not_found(self, name: str) -> ViewNotFound:
        names = self.names()
        return ViewNotFound(
            f"no view named {name!r} in {self.path!r}; existing views: {names or 'none'}. "
            "Run the flow that writes it (to_view), or define it with "
            "store.define_view(name, aggregator=..., window=...)"
        )

    def meta(self, name: str) -> ViewMeta:
        """The metadata of a view, with the aggregator and window of the view itself."""
        row = self.conn.execute(
            "SELECT view_id, agg_rev, window_spec, alias_version, previous_version, rt_gen "
            "FROM fluvial_views WHERE name = %s", (name,)).fetchone()
        if row is None:
            check_view_name(name)
            raise self.not_found(name)
        view_id, rev, window_spec, alias, previous, rt_gen = row
        cached = self._aggs.get(view_id)
        if cached is None or cached[0] != rev:
            (blob,) = one(self.conn.execute("SELECT aggregator FROM fluvial_views WHERE view_id = %s",
                                            (view_id,)))
            cached = self._aggs[view_id] = (rev, load_aggregator(name, blob))
        shape = shape_from_spec(json.loads(window_spec)) if window_spec is not None else None
        return ViewMeta(view_id, name, cached[1], shape, alias, previous, rt_gen)

    def meta_of(self, name: str, part: Part | None) -> ViewMeta:
        """The metadata of a view, with the aggregator and window of batch version ``part``
        when that version has its own (a reprocessing with changed code)."""
        meta = self.meta(name)
        if part is None or part == REALTIME or part == meta.alias:
            return meta
        row = self.conn.execute("SELECT aggregator, window_spec FROM fluvial_versions "
                                "WHERE view_id = %s AND version = %s AND aggregator IS NOT NULL",
                                (meta.view_id, part)).fetchone()
        if row is None:
            return meta
        key = (meta.view_id, int(part))
        agg = self._version_aggs.get(key)
        if agg is None:
            agg = self._version_aggs[key] = load_aggregator(name, row[0])
        shape = shape_from_spec(json.loads(row[1])) if row[1] is not None else None
        return dataclasses.replace(meta, agg=agg, shape=shape)

    def loaded_aggregator(self, view_id: int) -> Aggregator[Any, Any, Any]:
        """The aggregator of a view whose metadata was read (:meth:`meta`)."""
        return self._aggs[view_id][1]

    def versions(self, view_id: int) -> dict[int, dict[int, int] | None]:
        """Every batch version of a view, with its cut-off (``None``: not published)."""
        out: dict[int, dict[int, int] | None] = {}
        for version, cutoff in self.conn.execute(
                "SELECT version, cutoff FROM fluvial_versions WHERE view_id = %s ORDER BY version",
                (view_id,)):
            out[version] = ({int(p): o for p, o in json.loads(cutoff).items()}
                            if cutoff is not None else None)
        return out

    def part_no(self, meta: ViewMeta, part: Part) -> int:
        """The stored part of ``part``: the version, or ``-g`` for the open realtime generation."""
        if part == REALTIME:
            return -meta.rt_gen  # the open realtime generation
        if isinstance(part, int) and not isinstance(part, bool) and part >= 1:
            if self.conn.execute("SELECT 1 FROM fluvial_versions WHERE view_id = %s AND version = %s",
                                 (meta.view_id, part)).fetchone():
                return part
            raise ConfigError(f"view {meta.name!r} has no version {part}; existing versions: "
                              f"{list(self.versions(meta.view_id))} (begin_version() creates one)")
        raise ConfigError(f"part must be 'realtime' or a version number >= 1, got {part!r}")

    def info(self, row: tuple[Any, ...]) -> ViewInfo:
        """The :class:`ViewInfo` of a row of :data:`VIEW_COLUMNS`."""
        view_id, name, _rev, agg_spec, window_spec, alias, previous, created, updated, late = row
        versions = self.versions(view_id)
        tails = {version: json.loads(text) for version, text in self.conn.execute(
            "SELECT version, cutoff_tails FROM fluvial_versions WHERE view_id = %s AND cutoff_tails IS NOT NULL",
            (view_id,))}
        return ViewInfo(
            name=name, alias_version=alias, previous_version=previous, versions=list(versions),
            window=json.loads(window_spec) if window_spec is not None else None,
            aggregator=json.loads(agg_spec),
            cutoffs={v: c for v, c in versions.items() if c is not None},
            created_ms=created, updated_ms=updated, late_events=late, cutoff_tails=tails)

    def view(self, name: str) -> ViewInfo:
        row = self.conn.execute(f"SELECT {VIEW_COLUMNS} FROM fluvial_views WHERE name = %s",
                                (name,)).fetchone()
        if row is None:
            check_view_name(name)
            raise self.not_found(name)
        return self.info(row)

    def views(self) -> list[ViewInfo]:
        rows = self.conn.execute(f"SELECT {VIEW_COLUMNS} FROM fluvial_views ORDER BY name").fetchall()
        return [self.info(row) for row in rows]

    def define(self, name: str, blob: bytes, agg_spec: dict[str, Any], window_spec: dict[str, Any] | None) -> None:
        """Create a view, or check an existing one against the specs and store ``blob`` (its
        aggregator) if it changed, in the caller's write transaction."""
        now = _now_ms()
        row = self.conn.execute("SELECT view_id, window_spec, agg_spec, aggregator FROM fluvial_views "
                                "WHERE name = %s", (name,)).fetchone()
        if row is None:
            self.conn.execute(
                "INSERT INTO fluvial_views (name, aggregator, agg_spec, window_spec, created_ms, "
                "updated_ms) VALUES (%s, %s, %s, %s, %s, %s)",
                (name, blob, json.dumps(agg_spec, sort_keys=True),
                 json.dumps(window_spec, sort_keys=True) if window_spec is not None else None,
                 now, now))
            return
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
            self.conn.execute("UPDATE fluvial_views SET aggregator = %s, agg_rev = agg_rev + 1, "
                              "updated_ms = %s WHERE view_id = %s", (blob, now, view_id))

    def touch(self, view_id: int) -> None:
        """Mark the view as changed now (its ``updated_ms``)."""
        self.conn.execute("UPDATE fluvial_views SET updated_ms = %s WHERE view_id = %s",
                          (_now_ms(), view_id))
