"""Batch versions, the alias and the realtime generations of a view in Cassandra.

The moves of :mod:`fluvial.serving.postgres.versions`, on a transaction's
:class:`~fluvial.serving.cassandra.buffer.Buffer`.  One difference: Cassandra 2.1
cannot delete a range of parts, so the realtime generations still live are named
in the view row (``rt_floor`` to ``rt_gen``); dropping generations moves the floor
(what queries read) and deletes their partitions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from fluvial.aggregators.base import Aggregator
from fluvial.errors import ConfigError, StoreError
from fluvial.serving.base import REALTIME, UNSET, Part, _Unset
from fluvial.serving.cassandra.buffer import Buffer
from fluvial.serving.cassandra.catalog import Catalog
from fluvial.serving.stored import check_shape, dump_aggregator
from fluvial.windows.shapes import WindowShape


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def begin(cat: Catalog, buf: Buffer, view: str, *, aggregator: Aggregator[Any, Any, Any] | None = None,
          window: WindowShape | _Unset | None = UNSET) -> int:
    """Create the next (empty) batch version of ``view``."""
    row = cat.row(buf, view)
    version, blob, agg_spec, window_spec = (row["next_version"], row["aggregator"], row["agg_spec"],
                                            row["window_spec"])
    if aggregator is not None:
        blob = dump_aggregator(view, aggregator)
        agg_spec = json.dumps(aggregator.spec(), sort_keys=True)
    if not isinstance(window, _Unset):
        check_shape(view, window)
        window_spec = json.dumps(window.spec(), sort_keys=True) if window is not None else None
    buf.update("fluvial_views", (view,), next_version=version + 1, updated_ms=_now_ms())
    buf.put("fluvial_versions", {"view_id": row["view_id"], "version": version, "created_ms": _now_ms(),
                                 "aggregator": blob, "agg_spec": agg_spec, "window_spec": window_spec})
    return int(version)


def seal_realtime(cat: Catalog, buf: Buffer, view: str) -> int:
    """Close the open realtime generation of ``view``; return its number."""
    row = cat.row(buf, view)
    buf.update("fluvial_views", (view,), rt_gen=row["rt_gen"] + 1, sealed_gen=row["rt_gen"],
               sealed_late=row["late_events"])
    return int(row["rt_gen"])


def drop_generations(buf: Buffer, row: dict[str, Any], through: int | None) -> None:
    """Drop the live realtime generations up to ``through`` (``None``: all of them, the open one too)."""
    floor, gen = row["rt_floor"], row["rt_gen"]
    last = gen if through is None else min(int(through), gen)
    for g in range(floor, last + 1):
        buf.drop_part(row["view_id"], -g)
    if through is None:
        new_floor = gen
    else:
        new_floor = max(floor, min(int(through) + 1, gen))
    buf.update("fluvial_views", (row["name"],), rt_floor=new_floor)


def publish(cat: Catalog, buf: Buffer, view: str, version: int, cutoff: Mapping[int, int], *,
            drop_realtime: bool = False, realtime_through: int | None = None,
            tails: Sequence[Any] | None = None) -> None:
    """Switch the alias of ``view`` to ``version`` (see ``PostgresStore.publish_version``)."""
    try:
        cutoff_json = json.dumps({str(int(p)): int(o) for p, o in dict(cutoff).items()})
        tails_json = None if tails is None else json.dumps(list(tails))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cutoff must map partition numbers to offsets, got {cutoff!r} "
                          f"(tails {tails!r})") from exc
    meta = cat.meta(buf, view)
    cat.part_no(buf, meta, version)
    now = _now_ms()
    vrow = buf.get("fluvial_versions", meta.view_id, version)
    assert vrow is not None
    row = cat.row(buf, view)
    if vrow["aggregator"] is not None and (bytes(vrow["aggregator"]) != bytes(row["aggregator"])
                                           or vrow["window_spec"] != row["window_spec"]):
        row = buf.update("fluvial_views", (view,), aggregator=vrow["aggregator"], agg_spec=vrow["agg_spec"],
                         window_spec=vrow["window_spec"], agg_rev=row["agg_rev"] + 1)
    buf.update("fluvial_versions", (meta.view_id, version), cutoff=cutoff_json, published_ms=now,
               cutoff_tails=tails_json if tails_json is not None else vrow["cutoff_tails"])
    if meta.alias != version:
        row = buf.update("fluvial_views", (view,), alias_version=version, previous_version=meta.alias,
                         updated_ms=now)
    _publish_late(buf, view, meta.view_id, version, drop_realtime=drop_realtime, realtime_through=realtime_through)
    if drop_realtime:
        drop_generations(buf, cat.row(buf, view), realtime_through)


def _publish_late(buf: Buffer, view: str, view_id: int, version: int, *, drop_realtime: bool,
                  realtime_through: int | None) -> None:
    """Late counts at a switch (see :func:`fluvial.serving.postgres.versions._publish_late`)."""
    vrow = buf.get("fluvial_versions", view_id, version)
    row = buf.get("fluvial_views", view)
    assert vrow is not None and row is not None
    own = vrow["late_events"]
    if own is None:
        covered = (row["sealed_late"] if realtime_through is not None and row["sealed_gen"] == realtime_through
                   else row["late_events"])
        buf.update("fluvial_versions", (view_id, version), late_events=covered)
    elif drop_realtime and realtime_through is None:
        buf.update("fluvial_views", (view,), late_events=own)


def add_late_events(cat: Catalog, buf: Buffer, view: str, n: int, *, part: Part = REALTIME) -> None:
    """Count ``n`` late events for the served view, or for the batch version ``part``."""
    meta = cat.meta(buf, view)
    if part == REALTIME:
        row = cat.row(buf, view)
        buf.update("fluvial_views", (view,), late_events=row["late_events"] + int(n), updated_ms=_now_ms())
        return
    number = cat.part_no(buf, meta, part)
    vrow = buf.get("fluvial_versions", meta.view_id, number)
    assert vrow is not None
    buf.update("fluvial_versions", (meta.view_id, number), late_events=(vrow["late_events"] or 0) + int(n))


def reset_realtime(cat: Catalog, buf: Buffer, view: str, *, retract: bool = False) -> None:
    """Drop every realtime generation of ``view`` (and with ``retract`` the current batch version)."""
    meta = cat.meta(buf, view)
    drop_generations(buf, cat.row(buf, view), None)
    alias = meta.alias
    if retract and alias is not None:
        buf.update("fluvial_views", (view,), alias_version=None)
        drop(cat, buf, view, meta.view_id, alias)
        alias = None
    vrow = None if alias is None else buf.get("fluvial_versions", meta.view_id, alias)
    buf.update("fluvial_views", (view,), late_events=(vrow["late_events"] or 0) if vrow is not None else 0,
               updated_ms=_now_ms())


def rollback(cat: Catalog, buf: Buffer, view: str) -> int:
    """Switch the alias of ``view`` back to the previous kept version; return it."""
    meta = cat.meta(buf, view)
    if meta.previous is None:
        raise StoreError(f"view {view!r} has no previous version to roll back to "
                         f"(current version: {meta.alias})")
    older = [v for v, c in cat.versions(buf, meta.view_id).items() if c is not None and v < meta.previous]
    buf.update("fluvial_views", (view,), alias_version=meta.previous, previous_version=max(older) if older else None,
               updated_ms=_now_ms())
    return meta.previous


def drop_older(cat: Catalog, buf: Buffer, view: str) -> None:
    """Drop the published versions of ``view`` but the current and the kept previous one."""
    meta = cat.meta(buf, view)
    for old, cutoff in cat.versions(buf, meta.view_id).items():
        if cutoff is not None and old not in (meta.alias, meta.previous):
            drop(cat, buf, view, meta.view_id, old)


def drop_version(cat: Catalog, buf: Buffer, view: str, version: int) -> None:
    """Delete a batch version of ``view`` and its rows (not the current one)."""
    meta = cat.meta(buf, view)
    cat.part_no(buf, meta, version)
    if version == meta.alias:
        raise StoreError(f"version {version} is the current version of view {view!r}: "
                         "publish or roll back to another version before dropping it")
    if version == meta.previous:
        buf.update("fluvial_views", (view,), previous_version=None)
    drop(cat, buf, view, meta.view_id, version)


def drop(cat: Catalog, buf: Buffer, view: str, view_id: int, version: int) -> None:
    """Delete a version and its rows, whatever it is."""
    buf.drop_part(view_id, version)
    buf.delete("fluvial_versions", view_id, version)
    cat.touch(buf, view)
