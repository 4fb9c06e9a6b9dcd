"""Kappa reprocessing: replay the log through (new) flow code into ``VIEW@vN+1``, then switch.

1. Every view of the pipeline that writes ``VIEW`` gets a new, unpublished
   version.  A second stream runner (checkpoint ``reprocess:<pipeline>``)
   replays the log from the chosen point with the new code into those
   versions, while the current versions keep serving.
2. When a micro-batch no longer fills up (the runner read everything the log
   held), it has caught up with the head: the old and new rows are compared
   (keys/windows added, removed, changed).  ``dry_run`` stops here and drops
   the new versions.
3. The switch: the live speed-layer runner of the pipeline stops; then ONE
   store transaction moves each alias to its new version (cut-off = the
   replay runner's offsets), drops the realtime part of the old code, and
   hands the replay runner's checkpoint to the live runner, which restarts
   with the new code exactly where the replay ended.  Readers see the old
   version or the new one, never a mix.  A pipeline run by ``fluvial worker``
   processes is not stopped: the switch writes each partition's share of the
   replay's checkpoint (:func:`~fluvial.state.groups.slice_checkpoint`), so
   every worker's next commit is fenced and it goes on from there (with the
   new code: a worker running other code refuses the partition, and says so).
4. After a grace period the old versions are dropped (unless ``keep_old``);
   until then :func:`rollback` switches back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluvial.engine.partitioned import check_partitionable
from fluvial.engine.plan import code_digest, compile_plan
from fluvial.engine.stream import StreamRunner
from fluvial.errors import ConfigError, StoreError, ViewNotFound
from fluvial.flow.graph import Pipeline
from fluvial.layers.pipelines import FlowSet, Registered
from fluvial.state.checkpoint import Checkpoint, checkpoint_id, initial_checkpoint
from fluvial.state.groups import is_partitioned, marker_blob, marker_id, partition_id, slice_checkpoint

if TYPE_CHECKING:
    from fluvial.log.base import LogReader
    from fluvial.serving.base import ViewStore
    from fluvial.workspace import Workspace

__all__ = ["ReprocessResult", "parse_start", "reprocess", "rollback", "row_diff"]

MAX_EXAMPLES = 5
_TIME_MIN_MS = 10**12  # integers from here on are epoch ms (2001-09-09), below are offsets


@dataclass
class ReprocessResult:
    """What a reprocessing did (also the JSON of the HTTP API)."""

    view: str
    pipeline: str
    start: list[int]
    old_versions: dict[str, int | None] = field(default_factory=dict)
    new_versions: dict[str, int] = field(default_factory=dict)
    diff: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: int = 0
    micro_batches: int = 0
    switched: bool = False
    dry_run: bool = False
    dropped_old: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def parse_start(spec: str | int, log: LogReader) -> list[int]:
    """Per-partition start offsets from ``--from``.

    ``earliest`` (or ``0``): the beginning; an ISO-8601 time or epoch ms (>= 10^12):
    the first offset of each partition whose event time reaches it; a smaller
    integer ``N``: offset N of every partition (capped at its end);
    ``P:O,P:O,...``: explicit offsets (other partitions from the beginning).
    """
    from fluvial.ingest.files import parse_time_ms

    ends = log.end_offsets()
    text = str(spec).strip().lower()
    if text in ("earliest", "beginning", "start", "0"):
        return list(log.start_offsets())
    if ":" in text and "t" not in text:
        offsets = list(log.start_offsets())
        for part in text.split(","):
            try:
                p, o = (int(x) for x in part.split(":"))
            except ValueError:
                raise ConfigError(f"--from {spec!r}: expected PARTITION:OFFSET pairs such as 0:100,1:250") from None
            if not 0 <= p < len(ends) or not 0 <= o <= ends[p]:
                raise ConfigError(f"--from {spec!r}: partition {p} offset {o} is outside the log "
                                  f"(partitions 0..{len(ends) - 1}, ends {ends})")
            offsets[p] = o
        return offsets
    if text.lstrip("-").isdigit() and int(text) < _TIME_MIN_MS:
        n = int(text)
        if n < 0:
            raise ConfigError(f"--from {spec!r}: an offset cannot be negative")
        return [min(n, e) for e in ends]
    try:
        ts = parse_time_ms(str(spec))
    except ValueError as exc:
        raise ConfigError(f"--from {spec!r}: expected 'earliest', an offset, PARTITION:OFFSET pairs, "
                          f"epoch ms or an ISO-8601 time ({exc})") from None
    return [log.offset_for_time(p, ts) for p in range(len(ends))]


def row_diff(old: list[Any], new: list[Any]) -> dict[str, Any]:
    """Keys/windows added, removed and changed between two lists of view rows."""
    from fluvial.serving.keys import encode_key

    def index(rows: list[Any]) -> dict[tuple[bytes, Any], Any]:
        return {(encode_key(r.key), r.window): r for r in rows}

    a, b = index(old), index(new)
    added = [b[k] for k in b.keys() - a.keys()]
    removed = [a[k] for k in a.keys() - b.keys()]
    changed = [(a[k], b[k]) for k in a.keys() & b.keys() if a[k].value != b[k].value]

    def show(row: Any) -> dict[str, Any]:
        return {"key": row.key, "window": row.window, "value": row.value}

    return {
        "old_rows": len(a), "new_rows": len(b),
        "added": len(added), "removed": len(removed), "changed": len(changed),
        "examples": {
            "added": [show(r) for r in added[:MAX_EXAMPLES]],
            "removed": [show(r) for r in removed[:MAX_EXAMPLES]],
            "changed": [{"key": o.key, "window": o.window, "old": o.value, "new": n.value}
                        for o, n in changed[:MAX_EXAMPLES]],
        },
    }


def reprocess(ws: Workspace, flows: FlowSet, view: str, *, start: str | int = "earliest",
              pipeline: Pipeline | None = None, flow_file: Path | None = None, dry_run: bool = False,
              max_batch_records: int = 250_000,
              stop_live: Callable[[str], None] | None = None,
              start_live: Callable[[Registered], None] | None = None,
              progress: Callable[[dict[str, Any]], None] | None = None) -> ReprocessResult:
    """Replay the log into new versions of the views of ``view``'s pipeline, and switch.

    Args:
        ws: A workspace on the data directory (its store belongs to this thread).
        flows: The server's flows (``view`` must be written by one of them).
        start: Where the replay starts (see :func:`parse_start`).
        pipeline: The new code (default: the current code of the pipeline).
        flow_file: The file ``pipeline`` came from (remembered after the switch).
        dry_run: Stop after the diff; drop the new versions.
        stop_live, start_live: Stop / restart the live speed-layer runner of a
            pipeline (a server passes its own; offline, nothing runs).
        progress: Called after every replay micro-batch.
    """
    started = time.perf_counter()
    reg = flows.pipeline_of(view)
    assert reg is not None
    new = pipeline if pipeline is not None else reg.pipeline
    if new.name != reg.name:
        raise ConfigError(f"view {view!r} is written by pipeline {reg.name!r}, but the new flow code "
                          f"defines {new.name!r}: keep the pipeline's name")
    plan = compile_plan(new)
    if view not in plan.views:
        raise ConfigError(f"the new code of pipeline {reg.name!r} does not write view {view!r} "
                          f"(it writes {sorted(plan.views)})")
    store, log = ws.store, ws.log
    if store.checkpoint_token(marker_id(reg.name)) is not None:   # workers run it: they will run the new code
        check_partitionable(plan)
    result = ReprocessResult(view=view, pipeline=reg.name, start=parse_start(start, log), dry_run=dry_run)
    snapshots: dict[str, int] = {}
    for name, spec in plan.views.items():
        try:
            info = store.view(name)
        except ViewNotFound:  # the new code writes a new view
            info = store.define_view(name, aggregator=spec.aggregator, window=spec.window)
        result.old_versions[name] = info.alias_version
        if info.alias_version is None:
            # Served by the speed layer alone (Kappa): what the old code computed becomes a
            # version of its own at the switch, so that it can be rolled back to.
            snapshots[name] = store.begin_version(name)
        # The new version is written with the new code's aggregator and window, which
        # may differ from the current ones; the switch makes them the view's.
        result.new_versions[name] = store.begin_version(name, aggregator=spec.aggregator, window=spec.window)
    replay_id = f"reprocess:{reg.name}"
    with store.transaction() as txn:  # an interrupted earlier replay starts over
        txn.delete_checkpoint(replay_id)
    runner = StreamRunner(log=log, store=store, batch_interval_ms=0, max_batch_records=max_batch_records,
                          runner_id=replay_id, view_parts=result.new_versions, start_offsets=result.start)
    try:
        while True:
            ends = log.end_offsets()
            stats = runner.run(new, until_caught_up=True, max_batches=1)
            result.records += stats.records_in
            result.micro_batches += stats.micro_batches
            offsets = runner.progress.get("offsets") or result.start
            if progress is not None:
                progress({"records": result.records, "micro_batches": result.micro_batches, "offsets": offsets})
            if all(o >= e for o, e in zip(offsets, ends)):
                break   # it has read everything the log held when this micro-batch began: caught up
        for name, version in result.new_versions.items():
            result.diff[name] = row_diff(store.query(name), store.query(name, version=version, realtime=False))
        if dry_run:
            _discard(store, replay_id, [*result.new_versions.items(), *snapshots.items()])
            return _finish(result, started)
        # No batch publish in between: hold the pipeline's batch lock through the switch
        # (taken before the live runner stops, so that it does not pause while a batch run ends).
        with store.exclusive(f"batch-{reg.name}", wait_s=3600) as batch_lease, \
                _paused(reg, stop_live, start_live), _speed_layer(store, reg.name) as speed_lease:
            with store.transaction() as txn:
                txn.fence(batch_lease)
                txn.fence(speed_lease)
                partitioned = is_partitioned(txn, reg.name)
                if partitioned:   # (workers may have taken the pipeline during the replay)
                    check_partitionable(plan)
                blob = txn.get_checkpoint(replay_id)
                if blob is None and result.micro_batches == 0:   # nothing to replay (an empty log, or --from its end)
                    blob = initial_checkpoint(plan, log.partitions, result.start, log=log).dumps()
                if blob is None:
                    raise StoreError(f"the replay checkpoint {replay_id!r} vanished: another reprocessing "
                                     f"of {reg.name!r} ran at the same time; run it again")
                live_cutoff, live_tails = _live_position(txn, reg.name, log.partitions, partitioned)
                for name, snapshot in snapshots.items():
                    txn.snapshot_realtime(name, snapshot)   # keeps the late count of the old code
                    txn.publish(name, snapshot, live_cutoff, drop_realtime=True, tails=live_tails)
                    result.old_versions[name] = snapshot
                replay = Checkpoint.loads(blob)
                cutoff = dict(enumerate(replay.offsets))
                for name, version in result.new_versions.items():
                    # the late events the replay counted become the served count (not added to it)
                    txn.publish(name, version, cutoff, drop_realtime=True, tails=replay.tails)
                if partitioned:   # each worker's next commit is fenced; it goes on from the replay's end
                    txn.set_checkpoint(marker_id(reg.name), marker_blob(code_digest(plan)))
                    for p in range(len(replay.offsets)):
                        txn.set_checkpoint(partition_id(reg.name, p), slice_checkpoint(replay, p).dumps())
                else:   # no realtime rows past the new versions yet (a batch run or workers may take over)
                    replay.micro_batches = 0
                    txn.set_checkpoint(checkpoint_id(reg.name), replay.dumps())
                txn.delete_checkpoint(replay_id)
            result.switched = True
        for name in result.new_versions:
            store.drop_older_versions(name)   # older than the kept previous one
        new_reg = flows.replace(reg.name, new, flow_file) if flow_file is not None else reg
        if pipeline is not None and flow_file is None:
            new_reg = Registered(new, reg.file, reg.architecture, reg.batch_every_s, tuple(plan.views))
            flows.pipelines[reg.name] = new_reg
        if start_live is not None:
            start_live(new_reg)
    except BaseException:
        if not result.switched:
            with contextlib.suppress(Exception):  # the original error matters more; stale versions are harmless
                _discard(store, replay_id, [*result.new_versions.items(), *snapshots.items()])
        raise
    return _finish(result, started)


def drop_old(ws: Workspace, result: ReprocessResult) -> bool:
    """Drop the versions a switch replaced (those that are not current again after a rollback)."""
    dropped = False
    for name, old in result.old_versions.items():
        if old is None:
            continue
        info = ws.store.view(name)
        if old != info.alias_version and old in info.versions:
            ws.store.drop_version(name, old)
            dropped = True
    result.dropped_old = dropped
    return dropped


def rollback(ws: Workspace, flows: FlowSet, view: str, *,
             stop_live: Callable[[str], None] | None = None,
             start_live: Callable[[Registered], None] | None = None) -> dict[str, int]:
    """Switch every view of ``view``'s pipeline back to its previous version.

    The realtime part (written by the current code) is dropped and the speed
    layer restarts from the previous versions' cut-off, with the code that
    wrote them, replaying what came since: nothing is lost or counted twice.
    """
    reg = flows.pipeline_of(view)
    assert reg is not None
    store = ws.store
    targets: dict[str, tuple[int, dict[int, int]]] = {}
    for name in reg.views:
        info = store.view(name)
        if info.previous_version is None or info.previous_version not in info.cutoffs:
            raise StoreError(f"view {name!r} has no previous version to roll back to (versions: "
                             f"{info.versions}, current: {info.alias_version}); old versions are dropped after "
                             "the grace period unless kept (--keep-old)")
        targets[name] = (info.previous_version, info.cutoffs[info.previous_version])
    previous = flows.previous_file(reg.name)
    code = None
    if previous is not None and previous != reg.file:
        from fluvial.layers.pipelines import load_flow_file

        code = next((p for p in load_flow_file(previous) if p.name == reg.name), None)
    with store.exclusive(f"batch-{reg.name}", wait_s=3600) as batch_lease, \
            _paused(reg, stop_live, start_live), _speed_layer(store, reg.name) as speed_lease, \
            store.transaction() as txn:
        txn.fence(batch_lease)
        txn.fence(speed_lease)
        for name, (version, cutoff) in targets.items():
            txn.publish(name, version, cutoff, drop_realtime=True)
        if is_partitioned(txn, reg.name):
            # every partition starts again at the previous versions' cut-off, with the code that
            # wrote them: each worker's next commit is fenced, and one running other code refuses
            back = compile_plan(code or reg.pipeline)
            txn.set_checkpoint(marker_id(reg.name), marker_blob(code_digest(back)))
            _restart_partitions(txn, ws.log, back, [c for _, c in targets.values()])
        else:
            txn.delete_checkpoint(checkpoint_id(reg.name))
    new_reg = reg
    if code is not None and previous is not None:
        new_reg = flows.replace(reg.name, code, previous)
    if start_live is not None:
        start_live(new_reg)
    return {name: version for name, (version, _) in targets.items()}


@contextlib.contextmanager
def _paused(reg: Registered, stop_live: Callable[[str], None] | None,
            start_live: Callable[[Registered], None] | None) -> Iterator[None]:
    """Stop the live runner of ``reg`` for a switch; if the switch fails, restart it as it was."""
    if stop_live is not None:
        stop_live(reg.name)
    try:
        yield
    except BaseException:
        if start_live is not None:
            start_live(reg)
        raise


def _live_position(txn: Any, pipeline: str, partitions: int, partitioned: bool
                   ) -> tuple[dict[int, int], list[Any] | None]:
    """Where the live speed layer is (the cut-off of a snapshot of its realtime part), and the
    log's tails there: its checkpoint's, or each worker partition's."""
    if not partitioned:
        live = txn.get_checkpoint(checkpoint_id(pipeline))
        live_cp = Checkpoint.loads(live) if live is not None else None
        return (dict(enumerate(live_cp.offsets)) if live_cp is not None else {},
                live_cp.tails if live_cp is not None else None)
    cutoff: dict[int, int] = {}
    tails: list[Any] = []
    for p in range(partitions):
        blob = txn.get_checkpoint(partition_id(pipeline, p))
        cp = Checkpoint.loads(blob) if blob is not None else None
        cutoff[p] = cp.offsets[0] if cp is not None else 0
        tails.append(cp.tails[0] if cp is not None and cp.tails else None)
    return cutoff, tails


def _restart_partitions(txn: Any, log: LogReader, plan: Any, cutoffs: list[dict[int, int]]) -> None:
    from fluvial.engine.partitioned import PartitionSlice

    if any(c != cutoffs[0] for c in cutoffs):
        raise StoreError(f"the previous versions of pipeline {plan.name!r}'s views end at different log "
                         f"cut-offs ({cutoffs}): workers cannot start every view at once; run a batch run first")
    cut = cutoffs[0] if cutoffs else {}
    for p in range(log.partitions):
        start = int(cut.get(p, 0))
        txn.set_checkpoint(partition_id(plan.name, p),
                           initial_checkpoint(plan, 1, [start], log=PartitionSlice(log, p)).dumps())


def _discard(store: ViewStore, replay_id: str, versions: list[tuple[str, int]]) -> None:
    with store.transaction() as txn:
        txn.delete_checkpoint(replay_id)
    for name, version in versions:
        info = store.view(name)
        if version in info.versions and version != info.alias_version:
            store.drop_version(name, version)


def _finish(result: ReprocessResult, started: float) -> ReprocessResult:
    result.seconds = time.perf_counter() - started
    return result


@contextlib.contextmanager
def _speed_layer(store: ViewStore, pipeline: str) -> Iterator[Any]:
    """Hold the speed layer's claim on ``pipeline`` (its live runner paused) while the switch
    rewrites its checkpoint; a speed runner of another process is not paused: refuse."""
    from fluvial.state.ownership import exclusive

    with exclusive(store, checkpoint_id(pipeline), wait_s=5.0,
                   hint="Its speed layer runs in another process: stop that runner first, then "
                        "reprocess or roll back (the server restarts its own).") as lease:
        yield lease
