"""Batch versions, the alias and the realtime generations of a view in PostgreSQL.

A view's rows are in parts: batch versions ``1, 2, ...`` (written by batch runs
and replays, served once published) and realtime generations (written by the speed
layer; generation ``g`` is stored as part ``-g``).  A query reads the alias, the
current batch version, and every realtime generation still stored.  Here are the
moves between them, each inside the caller's write transaction:

- :func:`begin`: a new, empty version, with the aggregator and window it is written with;
- :func:`seal_realtime`: close the open generation where a batch run reads its cut-off;
- :func:`publish`: switch the alias to a version, dropping the generations it covers;
- :func:`rollback`, :func:`drop_version`, :func:`drop_older`: back to the kept previous
  version, and cleaning up;
- :func:`reset_realtime`: drop every generation (the speed layer recomputes them).

Late counts follow the served version: see :func:`publish` and :func:`add_late_events`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from fluvial.aggregators.base import Aggregator
from fluvial.errors import ConfigError, StoreError
from fluvial.serving.base import REALTIME, UNSET, Part, _Unset
from fluvial.serving.postgres.catalog import Catalog, one
from fluvial.serving.stored import check_shape, dump_aggregator
from fluvial.windows.shapes import WindowShape


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def begin(catalog: Catalog, view: str, *, aggregator: Aggregator[Any, Any, Any] | None = None,
          window: WindowShape | _Unset | None = UNSET) -> int:
    """Create the next (empty) batch version of ``view`` (see ``PostgresStore.begin_version``)."""
    conn = catalog.conn
    meta = catalog.meta(view)
    row = one(conn.execute("SELECT next_version, aggregator, agg_spec, window_spec FROM fluvial_views "
                           "WHERE view_id = %s", (meta.view_id,)))
    version, blob, agg_spec, window_spec = row
    if aggregator is not None:
        blob = dump_aggregator(view, aggregator)
        agg_spec = json.dumps(aggregator.spec(), sort_keys=True)
    if not isinstance(window, _Unset):
        check_shape(view, window)
        window_spec = json.dumps(window.spec(), sort_keys=True) if window is not None else None
    conn.execute("UPDATE fluvial_views SET next_version = %s, updated_ms = %s WHERE view_id = %s",
                 (version + 1, _now_ms(), meta.view_id))
    conn.execute("INSERT INTO fluvial_versions (view_id, version, created_ms, aggregator, agg_spec, "
                 "window_spec) VALUES (%s, %s, %s, %s, %s, %s)",
                 (meta.view_id, version, _now_ms(), blob, agg_spec, window_spec))
    return int(version)


def seal_realtime(catalog: Catalog, view: str) -> int:
    """Close the open realtime generation of ``view``; return its number."""
    meta = catalog.meta(view)
    # The late count at the seal is what the batch version publishing these generations
    # takes over (the count of the code that wrote the view, up to the cut-off).
    catalog.conn.execute("UPDATE fluvial_views SET rt_gen = rt_gen + 1, sealed_gen = rt_gen, "
                         "sealed_late = late_events WHERE view_id = %s", (meta.view_id,))
    return meta.rt_gen


def publish(catalog: Catalog, view: str, version: int, cutoff: Mapping[int, int], *,
            drop_realtime: bool = False, realtime_through: int | None = None,
            tails: Sequence[Any] | None = None) -> None:
    """Switch the alias of ``view`` to ``version`` (see ``PostgresStore.publish_version``)."""
    try:
        cutoff_json = json.dumps({str(int(p)): int(o) for p, o in dict(cutoff).items()})
        tails_json = None if tails is None else json.dumps(list(tails))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cutoff must map partition numbers to offsets, got {cutoff!r} "
                          f"(tails {tails!r})") from exc
    conn = catalog.conn
    meta = catalog.meta(view)
    catalog.part_no(meta, version)
    now = _now_ms()
    spec = conn.execute("SELECT aggregator, agg_spec, window_spec FROM fluvial_versions "
                        "WHERE view_id = %s AND version = %s AND aggregator IS NOT NULL",
                        (meta.view_id, version)).fetchone()
    if spec is not None:  # the realtime part that follows this version uses its code
        conn.execute("UPDATE fluvial_views SET aggregator = %s, agg_spec = %s, window_spec = %s, "
                     "agg_rev = agg_rev + 1 WHERE view_id = %s AND (aggregator IS DISTINCT FROM %s OR "
                     "window_spec IS DISTINCT FROM %s)", (spec[0], spec[1], spec[2], meta.view_id, spec[0], spec[2]))
    conn.execute("UPDATE fluvial_versions SET cutoff = %s, published_ms = %s, "
                 "cutoff_tails = COALESCE(%s, cutoff_tails) WHERE view_id = %s AND version = %s",
                 (cutoff_json, now, tails_json, meta.view_id, version))
    if meta.alias != version:
        conn.execute("UPDATE fluvial_views SET alias_version = %s, previous_version = %s, updated_ms = %s "
                     "WHERE view_id = %s", (version, meta.alias, now, meta.view_id))
    _publish_late(catalog, meta.view_id, version, drop_realtime=drop_realtime, realtime_through=realtime_through)
    if drop_realtime:
        lowest = -(2**62) if realtime_through is None else -int(realtime_through)
        conn.execute("DELETE FROM fluvial_rows WHERE view_id = %s AND part <= 0 AND part >= %s",
                     (meta.view_id, lowest))


def _publish_late(catalog: Catalog, view_id: int, version: int, *, drop_realtime: bool,
                  realtime_through: int | None) -> None:
    """Late counts at a switch: each late event counts once per version.

    A batch version counts no late event itself: it takes over the count of the
    realtime generations it covers (the count at their seal), and the served count
    goes on.  A version with a count of its own (written by a replay, a snapshot of
    the realtime part, or published before) brings it back when it replaces the
    whole realtime part: a reprocessing, a dry run or a rollback adds nothing twice.
    """
    conn = catalog.conn
    (own,) = one(conn.execute("SELECT late_events FROM fluvial_versions WHERE view_id = %s AND version = %s",
                              (view_id, version)))
    if own is None:
        sealed_gen, sealed_late, live = one(conn.execute(
            "SELECT sealed_gen, sealed_late, late_events FROM fluvial_views WHERE view_id = %s",
            (view_id,)))
        covered = sealed_late if realtime_through is not None and sealed_gen == realtime_through else live
        conn.execute("UPDATE fluvial_versions SET late_events = %s WHERE view_id = %s AND version = %s",
                     (covered, view_id, version))
    elif drop_realtime and realtime_through is None:
        conn.execute("UPDATE fluvial_views SET late_events = %s WHERE view_id = %s", (own, view_id))


def add_late_events(catalog: Catalog, view: str, n: int, *, part: Part = REALTIME) -> None:
    """Count ``n`` late events for the served view, or for the batch version ``part``."""
    meta = catalog.meta(view)
    if part == REALTIME:
        catalog.conn.execute("UPDATE fluvial_views SET late_events = late_events + %s, updated_ms = %s "
                             "WHERE view_id = %s", (int(n), _now_ms(), meta.view_id))
        return
    catalog.conn.execute("UPDATE fluvial_versions SET late_events = COALESCE(late_events, 0) + %s "
                         "WHERE view_id = %s AND version = %s", (int(n), meta.view_id, catalog.part_no(meta, part)))


def reset_realtime(catalog: Catalog, view: str, *, retract: bool = False) -> None:
    """Drop every realtime generation of ``view`` (see ``PostgresTxn.reset_realtime``)."""
    conn = catalog.conn
    meta = catalog.meta(view)
    conn.execute("DELETE FROM fluvial_rows WHERE view_id = %s AND part <= 0", (meta.view_id,))
    alias = meta.alias
    if retract and alias is not None:
        conn.execute("UPDATE fluvial_views SET alias_version = NULL WHERE view_id = %s", (meta.view_id,))
        drop(catalog, meta.view_id, alias)
        alias = None
    row = None if alias is None else conn.execute(
        "SELECT late_events FROM fluvial_versions WHERE view_id = %s AND version = %s",
        (meta.view_id, alias)).fetchone()
    conn.execute("UPDATE fluvial_views SET late_events = %s, updated_ms = %s WHERE view_id = %s",
                 ((row[0] or 0) if row is not None else 0, _now_ms(), meta.view_id))


def rollback(catalog: Catalog, view: str) -> int:
    """Switch the alias of ``view`` back to the previous kept version; return it."""
    meta = catalog.meta(view)
    if meta.previous is None:
        raise StoreError(f"view {view!r} has no previous version to roll back to "
                         f"(current version: {meta.alias})")
    older = [v for v, c in catalog.versions(meta.view_id).items()
             if c is not None and v < meta.previous]
    catalog.conn.execute("UPDATE fluvial_views SET alias_version = %s, previous_version = %s, "
                         "updated_ms = %s WHERE view_id = %s",
                         (meta.previous, max(older) if older else None, _now_ms(), meta.view_id))
    return meta.previous


def drop_older(catalog: Catalog, view: str) -> None:
    """Drop the published versions of ``view`` but the current and the kept previous one."""
    meta = catalog.meta(view)
    for old, cutoff in catalog.versions(meta.view_id).items():
        if cutoff is not None and old not in (meta.alias, meta.previous):
            drop(catalog, meta.view_id, old)


def drop_version(catalog: Catalog, view: str, version: int) -> None:
    """Delete a batch version of ``view`` and its rows (not the current one)."""
    meta = catalog.meta(view)
    catalog.part_no(meta, version)
    if version == meta.alias:
        raise StoreError(f"version {version} is the current version of view {view!r}: "
                         "publish or roll back to another version before dropping it")
    if version == meta.previous:
        catalog.conn.execute("UPDATE fluvial_views SET previous_version = NULL WHERE view_id = %s",
                             (meta.view_id,))
    drop(catalog, meta.view_id, version)


def drop(catalog: Catalog, view_id: int, version: int) -> None:
    """Delete a version and its rows, whatever it is."""
    catalog.conn.execute("DELETE FROM fluvial_rows WHERE view_id = %s AND part = %s", (view_id, version))
    catalog.conn.execute("DELETE FROM fluvial_versions WHERE view_id = %s AND version = %s",
                         (view_id, version))
    catalog.touch(view_id)
