"""``fluvial worker``: a group of processes sharing the speed layer of pipelines, partition by partition.

Each worker, for each pipeline it serves (:mod:`fluvial.state.groups` has the
names and the protocol):

1. checks that the pipeline can run partition by partition
   (:func:`~fluvial.engine.partitioned.check_partitionable`) and marks it as
   run by workers (refused if a single runner's checkpoint exists);
2. joins the group: holds a membership slot, renewed by a heartbeat;
3. every ``lease_ms / 4``: reads the live members, computes the assignment
   (:func:`~fluvial.state.groups.assign`: a fair share each), releases the
   partitions it owns beyond its share (after their micro-batch: cooperative)
   and claims those of its share that are free -- at once when their holder
   released them or died on this host, after ``lease_ms`` when it went silent;
4. runs one micro-batch per owned partition in turn: a
   :class:`~fluvial.engine.stream.StreamRunner` over that partition alone
   (:class:`~fluvial.engine.partitioned.PartitionSlice`), whose commit holds
   the partition's view changes, its checkpoint and the fence of its lease in
   one store transaction.  A worker that was paused past its lease finds its
   commit refused (:class:`~fluvial.errors.LeaseLost`), drops the partition,
   and joins again.

It says (``say``) which partitions it owns whenever that changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from fluvial.config import DEFAULT_STREAM, StreamConfig
from fluvial.engine.partitioned import PartitionSlice, check_partitionable
from fluvial.engine.plan import code_digest, compile_plan
from fluvial.engine.stream import StreamRun, StreamRunner, json_key
from fluvial.errors import ConfigError, Fenced, LogUnreachable, OwnedElsewhere, StoreError
from fluvial.state.checkpoint import Checkpoint
from fluvial.state.groups import (
    assign,
    check_no_single_runner,
    claim_member,
    live_members,
    mark_partitioned,
    marker_code,
    marker_id,
    partition_id,
    slots_for,
)
from fluvial.state.ownership import Owner, Ownership

if TYPE_CHECKING:
    from fluvial.flow.graph import Pipeline
    from fluvial.log.base import LogReader
    from fluvial.serving.base import Txn, ViewStore

__all__ = ["Worker"]
_logger = logging.getLogger("fluvial.layers")


@dataclass
class _Group:
    """This worker's part in one pipeline's group."""

    pipeline: Pipeline
    partitions: int
    member: Ownership | None = None
    slot: int = -1
    members: int = 0
    runs: dict[int, StreamRun] = field(default_factory=dict)
    next_refresh: float = 0.0
    code: str = ""

    def __post_init__(self) -> None:
        self.code = code_digest(compile_plan(self.pipeline))

    @property
    def name(self) -> str:
        return self.pipeline.name


class Worker:
    """One worker process's share of the speed layer of ``pipelines``.

    Args:
        log: The event log (shared by every worker).
        store: The view store (shared: a ``postgresql://`` store for workers on several machines).
        pipelines: The pipelines to serve (each must pass
            :func:`~fluvial.engine.partitioned.check_partitionable`).
        config: Batch interval, records per micro-batch (per partition) and the lease.
        say: Called with a line whenever the partitions this worker owns change.
        out: Where ``print()`` sinks write.
        owner: Who this worker says it is (default: this process).

    Raises:
        UnsupportedOperation: A pipeline needs all events of a key in one place.
        OwnedElsewhere: A pipeline has a single stream runner.
    """

    def __init__(self, *, log: LogReader, store: ViewStore, pipelines: list[Pipeline],
                 config: StreamConfig = DEFAULT_STREAM, say: Callable[[str], None] = print,
                 out: TextIO | None = None, owner: Owner | None = None) -> None:
        if not pipelines:
            raise ConfigError("a worker needs at least one pipeline")
        self.log, self.store, self.config, self.say, self.out = log, store, config, say, out
        self.owner = owner or Owner.this_process()
        for pipeline in pipelines:
            plan = compile_plan(pipeline)
            check_partitionable(plan)
            for name, spec in plan.views.items():
                store.define_view(name, aggregator=spec.aggregator, window=spec.window)
        for pipeline in pipelines:
            mark_partitioned(store, pipeline.name, code_digest(compile_plan(pipeline)))
        self.groups = [_Group(p, log.partitions) for p in pipelines]
        self.records = 0

    def owned(self) -> dict[str, list[int]]:
        """The partitions this worker owns now, per pipeline."""
        return {g.name: sorted(g.runs) for g in self.groups}

    def rebalance(self) -> None:
        """Read the membership and take this worker's share now (``run`` does it every ``lease_ms / 4``)."""
        for group in self.groups:
            group.next_refresh = 0.0
            self._refresh(group)

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; then release everything (the others take it at once)."""
        interval = self.config.batch_interval_ms / 1000
        try:
            while not stop.is_set():
                tick = time.monotonic()
                full = self.step()
                delay = max(interval, 0.02) - (time.monotonic() - tick)
                if not full and delay > 0:
                    stop.wait(delay)
        finally:
            self.close()

    def step(self) -> bool:
        """One round: follow the membership (every ``lease_ms / 4``), then one micro-batch per
        owned partition; whether one of them was full (more is waiting)."""
        full = False
        for group in self.groups:
            self._refresh(group)
            full = self._step(group) or full
        return full

    def close(self) -> None:
        for group in self.groups:
            for p in list(group.runs):
                self._drop(group, p)
            if group.member is not None:
                group.member.release()
                group.member = None

    # -- membership and assignment -------------------------------------------------------
    def _refresh(self, group: _Group) -> None:
        now = time.monotonic()
        if now < group.next_refresh:
            return
        group.next_refresh = now + max(0.05, self.config.lease_ms / 4000)
        before = sorted(group.runs)
        try:
            self._check_code(group)   # a Kappa switch or a rollback moved the pipeline to other code
            if group.member is None or group.member.lost is not None:
                self._join(group)
            live = set(live_members(self.store, group.name, slots_for(group.partitions))) | {group.slot}
            share = set(assign(group.partitions, sorted(live))[group.slot])
            group.members = len(live)
            for p in sorted(set(group.runs) - share):
                self._drop(group, p)   # cooperative: between micro-batches, so its new owner goes on at once
            for p in sorted(share - set(group.runs)):
                self._take(group, p)
        except (StoreError, LogUnreachable) as exc:   # the store or log is out of reach: keep what is held, retry
            _logger.warning("worker: pipeline %r: %s", group.name, exc)
        if sorted(group.runs) != before:
            self.say(f"worker {self.owner.describe()}: pipeline {group.name}: owns partitions "
                     f"{sorted(group.runs)} of {group.partitions} ({group.members} live workers)")

    def _join(self, group: _Group) -> None:
        if group.member is not None:   # lost (this process was paused past its lease): join again
            group.member.release()
        lease = claim_member(self.store, group.name, self.owner, slots=slots_for(group.partitions),
                             lease_ms=self.config.lease_ms)
        group.member = Ownership(self.store, lease)
        group.slot = int(lease.resource.rsplit("#", 1)[1])

    def _take(self, group: _Group, partition: int) -> None:
        name = group.name

        def guard(txn: Txn) -> None:
            check_no_single_runner(txn, name)

        self._check_code(group, partition)

        runner = StreamRunner(
            log=PartitionSlice(self.log, partition), store=self.store,
            batch_interval_ms=self.config.batch_interval_ms, max_batch_records=self.config.max_batch_records,
            runner_id=partition_id(name, partition), start_offsets=[self._start(group, partition)],
            lease_ms=self.config.lease_ms, owner=self.owner, out=self.out, guard=guard, rewind_torn=False)
        try:
            group.runs[partition] = runner.start(group.pipeline)
        except OwnedElsewhere:   # its holder has not let it go yet (or is silent, not yet past its lease)
            return

    def _check_code(self, group: _Group, partition: int | None = None) -> None:
        """Refuse to go on when the pipeline runs other code than this worker (a Kappa switch or a
        rollback moved it; the marker names the code) or ``partition``'s checkpoint does not fit it.
        Safety does not hang on this check: the switch also rewrote every partition's checkpoint,
        so a commit of this worker's would be fenced; this only says so, and stops."""
        plan = compile_plan(group.pipeline)
        with self.store.transaction() as txn:
            blob = None if partition is None else txn.get_checkpoint(partition_id(group.name, partition))
            code = marker_code(txn.get_checkpoint(marker_id(group.name)))
        if (blob is None or plan.fits(Checkpoint.loads(blob).fingerprint)) and code in (None, group.code):
            return
        where = "" if partition is None else f", partition {partition}"
        raise ConfigError(
            f"pipeline {group.name!r}{where}: its checkpoint was written by other flow code than "
            "this worker runs (a `fluvial reprocess --flow` or a `fluvial rollback` switched the pipeline to it). "
            "Restart the workers with the pipeline's current flow file")

    def _start(self, group: _Group, partition: int) -> int:
        """Where partition ``partition`` starts without a checkpoint: the views' batch cut-off
        (versions published before the workers took the pipeline), else the start of the log."""
        cutoffs = {json_key(self.store.view(name).cutoff) for name in compile_plan(group.pipeline).views}
        cutoffs.discard(None)
        if len(cutoffs) > 1:
            raise ConfigError(f"the views of pipeline {group.name!r} have batch versions with different "
                              "log cut-offs: run the batch layer once for the whole pipeline first")
        if cutoffs:
            return int(dict(cutoffs.pop() or ()).get(partition, 0))
        return self.log.start_offsets()[partition]

    def _drop(self, group: _Group, partition: int) -> None:
        run = group.runs.pop(partition)
        run.runner.release()

    # -- micro-batches ---------------------------------------------------------------------
    def _step(self, group: _Group) -> bool:
        """One micro-batch per owned partition; whether one of them was full (more is waiting)."""
        full = False
        for p, run in list(group.runs.items()):
            try:
                records = run.step()
            except Fenced as exc:   # another worker holds the partition now: this one counted nothing
                self.say(f"worker {self.owner.describe()}: pipeline {group.name}: partition {p} was taken "
                         f"over, its micro-batch is void ({type(exc).__name__})")
                self._lose(group, p)
                continue
            except (StoreError, LogUnreachable, OSError) as exc:   # a store restart, a log election: retry later
                _logger.warning("worker: pipeline %r partition %d: %s", group.name, p, exc)
                self.say(f"worker {self.owner.describe()}: pipeline {group.name}: partition {p}: its micro-batch "
                         f"failed and is void ({type(exc).__name__}); it is taken again from its checkpoint")
                self._lose(group, p)
                continue
            if records:
                self.records += records
                full = full or records >= run.runner.max_batch_records
        return full

    def _lose(self, group: _Group, partition: int) -> None:
        run: Any = group.runs.pop(partition)
        run.runner.release()
        group.next_refresh = 0.0
        self.say(f"worker {self.owner.describe()}: pipeline {group.name}: owns partitions "
                 f"{sorted(group.runs)} of {group.partitions} ({group.members} live workers)")
