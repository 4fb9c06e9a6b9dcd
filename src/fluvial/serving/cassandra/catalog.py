"""The views of a Cassandra store: their definitions, metadata and parts.

``fluvial_views`` holds a row per view (keyed by name): its number, aggregator
(cloudpickled, with a revision), window, the alias (the current batch version), the
version a rollback returns to, the realtime generations still live (``rt_floor`` to
``rt_gen``, the open one) and the served late count.  ``fluvial_versions`` holds a
row per batch version.  A query reads which parts to read from the ONE view row
(:mod:`.commit`: a row is written whole, at once), so a switch of the alias and of
the live generations is seen at once or not at all.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from typing import Any

from fluvial.aggregators.base import Aggregator
from fluvial.errors import ConfigError, ViewNotFound
from fluvial.serving.base import REALTIME, Part, ViewInfo
from fluvial.serving.cassandra.buffer import Buffer
from fluvial.serving.keys import check_view_name
from fluvial.serving.stored import ViewMeta, load_aggregator
from fluvial.windows.shapes import shape_from_spec

__all__ = ["Catalog", "LiveMeta"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclasses.dataclass(frozen=True)
class LiveMeta:
    """A view's :class:`ViewMeta` and the realtime generations a query reads (``floor..rt_gen``)."""

    meta: ViewMeta
    floor: int


class Catalog:
    """The view metadata read through a :class:`Buffer`, each aggregator loaded once per revision."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._aggs: dict[int, tuple[int, Aggregator[Any, Any, Any]]] = {}
        self._version_aggs: dict[tuple[int, int], Aggregator[Any, Any, Any]] = {}

    def names(self, buf: Buffer) -> list[str]:
        return [row["name"] for row in buf.scan("fluvial_views")]

    def not_found(self, buf: Buffer, name: str) -> ViewNotFound:
        return ViewNotFound(
            f"no view named {name!r} in {self.where!r}; existing views: {self.names(buf) or 'none'}. "
            "Run the flow that writes it (to_view), or define it with "
            "store.define_view(name, aggregator=..., window=...)")

    def row(self, buf: Buffer, name: str) -> dict[str, Any]:
        row = buf.get("fluvial_views", name)
        if row is None:
            check_view_name(name)
            raise self.not_found(buf, name)
        return row

    def live(self, buf: Buffer, name: str) -> LiveMeta:
        """The metadata of a view (its own aggregator and window) and its live generations."""
        row = self.row(buf, name)
        view_id, rev = row["view_id"], row["agg_rev"]
        cached = self._aggs.get(view_id)
        if cached is None or cached[0] != rev:
            cached = self._aggs[view_id] = (rev, load_aggregator(name, bytes(row["aggregator"])))
        spec = row["window_spec"]
        shape = shape_from_spec(json.loads(spec)) if spec is not None else None
        meta = ViewMeta(view_id, name, cached[1], shape, row["alias_version"], row["previous_version"],
                        row["rt_gen"])
        return LiveMeta(meta, row["rt_floor"])

    def meta(self, buf: Buffer, name: str) -> ViewMeta:
        return self.live(buf, name).meta

    def meta_of(self, buf: Buffer, name: str, part: Part | None) -> ViewMeta:
        """The metadata of a view, with the aggregator and window of batch version ``part``
        when that version has its own (a reprocessing with changed code)."""
        meta = self.meta(buf, name)
        if part is None or part == REALTIME or part == meta.alias or not isinstance(part, int):
            return meta
        row = buf.get("fluvial_versions", meta.view_id, part)
        if row is None or row["aggregator"] is None:
            return meta
        key = (meta.view_id, int(part))
        agg = self._version_aggs.get(key)
        if agg is None:
            agg = self._version_aggs[key] = load_aggregator(name, bytes(row["aggregator"]))
        shape = shape_from_spec(json.loads(row["window_spec"])) if row["window_spec"] is not None else None
        return dataclasses.replace(meta, agg=agg, shape=shape)

    def versions(self, buf: Buffer, view_id: int) -> dict[int, dict[int, int] | None]:
        """Every batch version of a view, with its cut-off (``None``: not published)."""
        return {row["version"]: ({int(p): o for p, o in json.loads(row["cutoff"]).items()}
                                 if row["cutoff"] is not None else None)
                for row in buf.scan("fluvial_versions", view_id=view_id)}

    def part_no(self, buf: Buffer, meta: ViewMeta, part: Part) -> int:
        """The stored part of ``part``: the version, or ``-g`` for the open realtime generation."""
        if part == REALTIME:
            return -meta.rt_gen
        if isinstance(part, int) and not isinstance(part, bool) and part >= 1:
            if buf.get("fluvial_versions", meta.view_id, part) is not None:
                return part
            raise ConfigError(f"view {meta.name!r} has no version {part}; existing versions: "
                              f"{list(self.versions(buf, meta.view_id))} (begin_version() creates one)")
        raise ConfigError(f"part must be 'realtime' or a version number >= 1, got {part!r}")

    def info(self, buf: Buffer, row: dict[str, Any]) -> ViewInfo:
        versions = buf.scan("fluvial_versions", view_id=row["view_id"])
        cutoffs = {v["version"]: {int(p): o for p, o in json.loads(v["cutoff"]).items()}
                   for v in versions if v["cutoff"] is not None}
        tails = {v["version"]: json.loads(v["cutoff_tails"]) for v in versions if v["cutoff_tails"] is not None}
        return ViewInfo(
            name=row["name"], alias_version=row["alias_version"], previous_version=row["previous_version"],
            versions=[v["version"] for v in versions],
            window=json.loads(row["window_spec"]) if row["window_spec"] is not None else None,
            aggregator=json.loads(row["agg_spec"]), cutoffs=cutoffs, created_ms=row["created_ms"],
            updated_ms=row["updated_ms"], late_events=row["late_events"], cutoff_tails=tails)

    def view(self, buf: Buffer, name: str) -> ViewInfo:
        return self.info(buf, self.row(buf, name))

    def views(self, buf: Buffer) -> list[ViewInfo]:
        return [self.info(buf, row) for row in buf.scan("fluvial_views")]

    def define(self, buf: Buffer, name: str, blob: bytes, agg_spec: dict[str, Any],
               window_spec: dict[str, Any] | None) -> None:
        """Create a view, or check an existing one against the specs and store ``blob`` if it changed."""
        now = _now_ms()
        row = buf.get("fluvial_views", name)
        if row is None:
            buf.put("fluvial_views", {
                "name": name, "view_id": secrets.randbits(62) + 1, "aggregator": blob,
                "agg_spec": json.dumps(agg_spec, sort_keys=True), "agg_rev": 1,
                "window_spec": json.dumps(window_spec, sort_keys=True) if window_spec is not None else None,
                "next_version": 1, "created_ms": now, "updated_ms": now, "late_events": 0, "rt_gen": 0,
                "rt_floor": 0})
            return
        old_window = json.loads(row["window_spec"]) if row["window_spec"] is not None else None
        if old_window != window_spec:
            raise ConfigError(
                f"view {name!r} already exists with window {old_window}, not {window_spec}: "
                "a view's window cannot change. Write to a new view name (or reprocess into "
                "one), or drop the old view first")
        if json.loads(row["agg_spec"]) != agg_spec:
            raise ConfigError(
                f"view {name!r} already exists with aggregator {json.loads(row['agg_spec'])}, not "
                f"{agg_spec}: accumulators of different aggregators cannot be merged. "
                "Write to a new view name")
        if blob != bytes(row["aggregator"]):
            buf.update("fluvial_views", (name,), aggregator=blob, agg_rev=row["agg_rev"] + 1, updated_ms=now)

    def touch(self, buf: Buffer, name: str) -> None:
        buf.update("fluvial_views", (name,), updated_ms=_now_ms())
