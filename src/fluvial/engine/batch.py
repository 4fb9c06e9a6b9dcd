"""The local batch runner: the batch layer on one machine.

A run reads the whole bounded input (the log up to a cut-off, or files) and
writes every view as a new batch version.  When every path from a source
meets an aggregation first (the usual case), the run is two-phase, like a
Spark stage boundary: the input is cut into splits, each split goes through
the narrow operators and is pre-aggregated (in parallel worker processes for
large inputs), the partial aggregates are merged with the aggregator's
``merge``, and the rest of the plan runs once on the merged result.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from fluvial.engine.execute import BatchOutput, Chunk, Executor
from fluvial.engine.files import batch_part, check_file_sinks, write_part
from fluvial.engine.persisted import Persisted, input_key
from fluvial.engine.plan import Plan, compile_plan
from fluvial.engine.sources import LazyLog, Split, log_sources, plan_splits, read_split
from fluvial.engine.targets import save_target
from fluvial.errors import ConfigError
from fluvial.flow.graph import Flow, Node, Pipeline

if TYPE_CHECKING:
    from fluvial.log.base import LogReader
    from fluvial.serving.base import ViewStore

PARALLEL_MIN_RECORDS = 200_000
PARALLEL_MIN_BYTES = 16 * 1024 * 1024


@dataclass
class RunStats:
    """What a run did."""

    pipeline: str
    mode: str
    records_in: int = 0
    micro_batches: int = 0
    late_events: int = 0
    views: dict[str, int] = field(default_factory=dict)   # view -> version written (batch) or rows merged
    seconds: float = 0.0

    @property
    def records_per_s(self) -> float:
        return self.records_in / self.seconds if self.seconds > 0 else 0.0


class Cutoff(NamedTuple):
    """Where a batch run ends: per-partition log offsets (``None``: it reads no log), the
    realtime generation of each view it covers (sealed), and the identities at the
    offsets (see :mod:`fluvial.layers.handover`)."""

    offsets: list[int] | None
    sealed: dict[str, int] | None = None
    tails: list[Any] | None = None
    handover: Any = None   # a fluvial.layers.handover.Handover: the publish moves the speed layer's start


class BatchRunner(LazyLog):
    """Runs pipelines over all of their (bounded) input.

    Args:
        log: The event log, for pipelines that read it.
        store: The serving store that views are written to.
        workers: Worker processes for large inputs (default: the machine's cores; 1 = in-process).
        slice_records: Log records per split.
        progress: Show a progress bar (default: when stderr is a terminal).
        out: Where ``print()`` sinks write.
        cache_dir: Where flows persisted at a ``DISK`` level keep their elements
            (``DATA_DIR/cache`` from a workspace); None: such flows are refused.
        own_log: ``log`` is the log the speed layer reads (not an export of it): a stream
            checkpoint beyond its end is a torn tail, rewound (see
            :func:`~fluvial.layers.handover.take_cutoff`), instead of refused.

    Example:
        >>> p = Pipeline("wc")
        >>> p.from_queue([["to be or not to be"]]).flat_map(str.split).count_by_value().print(3)
        >>> _ = BatchRunner().run(p)  # doctest: +NORMALIZE_WHITESPACE
        -------------------------------------------
        Time: 0 ms
        -------------------------------------------
        (to,2)
        (be,2)
        (or,1)
        ...
        <BLANKLINE>
    """

    def __init__(self, *, log: LogReader | Callable[[], LogReader] | None = None, store: ViewStore | None = None,
                 workers: int | None = None,
                 slice_records: int = 100_000, progress: bool | None = None,
                 out: TextIO | None = None, own_log: bool = False,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        self._log = log
        self.persisted = Persisted(None if cache_dir is None else Path(cache_dir))
        self.own_log = own_log
        self._store = store
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self.slice_records = slice_records
        self.progress = progress
        self.out = out
        self._lease: Any = None   # the batch lease of the pipeline being run

    # -- public ------------------------------------------------------------------
    def run(self, pipeline: Pipeline, *, cutoff: list[int] | None = None) -> RunStats:
        """Compute every sink of ``pipeline`` over the whole input; views get a new version."""
        plan = compile_plan(pipeline)
        if not self.has_store or not plan.views:
            return self._run(plan, cutoff)
        # One batch run of a pipeline at a time (two publishing in turn could drop realtime
        # rows); its seal and publish hold only while it owns the pipeline's batch lease.
        with self.store.exclusive(f"batch-{plan.name}") as lease:
            self._lease = lease
            try:
                return self._run(plan, cutoff)
            finally:
                self._lease = None

    def _run(self, plan: Plan, cutoff: list[int] | None) -> RunStats:
        started = time.perf_counter()
        check_file_sinks(plan)
        cut = self._cutoff(plan, cutoff)
        output, records = self._execute(plan, cut.offsets)
        stats = RunStats(plan.name, "batch", records_in=records, micro_batches=1)
        self._commit(plan, output, cut, stats)
        stats.seconds = time.perf_counter() - started
        return stats

    def collect(self, flow: Flow[Any]) -> list[Any]:
        """Run only what ``flow`` needs and return its elements."""
        sink = Node("collect", (flow.node,), {}, "collect")
        plan = compile_plan(flow.pipeline, [sink])
        output, _ = self._execute(plan, self._cutoff(plan, None, seal=False).offsets)
        return output.collected.get(sink.id, [])

    # -- internals ---------------------------------------------------------------------
    def _cutoff(self, plan: Plan, cutoff: list[int] | None, *, seal: bool = True) -> Cutoff:
        """Where the batch view ends in the log, and the realtime generations it covers.

        The cut-off is taken in the store transaction that *seals* the views' open
        realtime generations (see :func:`~fluvial.layers.handover.take_cutoff`):
        the sealed generations then hold exactly the realtime events up to the
        cut-off, and publishing drops those, while what the speed layer commits
        during this run (a new generation) stays.  When the speed layer has no
        realtime rows yet, the cut-off is the end of the log and the publish moves
        the speed layer's start there (``handover``).  ``seal=False`` only reads
        (``collect``, ``explain``).
        """
        if not log_sources(plan):
            return Cutoff(None)
        if not self.has_log:
            raise ConfigError(f"pipeline {plan.name!r} reads the log: give the runner a log "
                              "(fluvial.open(DATA_DIR).batch_runner(), or `fluvial run`)")
        if cutoff is not None:
            return Cutoff(list(cutoff))
        if not self.has_store or not plan.views:
            return Cutoff(self.log.end_offsets())
        from fluvial.layers.handover import speed_offsets, take_cutoff

        for name, spec in plan.views.items():
            self.store.define_view(name, aggregator=spec.aggregator, window=spec.window)
        if not seal:
            ends = self.log.end_offsets()
            with self.store.transaction() as txn:
                speed = speed_offsets(txn, plan.name, len(ends))
            if speed is None:
                return Cutoff(ends)
            return Cutoff([min(o, e) for o, e in zip(speed, ends)])
        with self.store.transaction() as txn:
            self._fence(txn)
            offsets, tails, handover = take_cutoff(self.store, txn, plan, self.log, own_log=self.own_log)
            sealed = {name: txn.seal_realtime(name) for name in plan.views}
        return Cutoff(offsets, sealed, tails, handover)

    def _fence(self, txn: Any) -> None:
        """Let ``txn`` commit only while this run holds the pipeline's batch lease."""
        if self._lease is not None:
            txn.fence(self._lease)

    def _execute(self, plan: Plan, cutoff: list[int] | None) -> tuple[BatchOutput, int]:
        """Run the plan over the input up to ``cutoff``, starting from what persisted flows
        kept for this input (see :mod:`fluvial.engine.persisted`), and keep what they computed."""
        if not any(n.op == "cache" for n in plan.nodes):
            return self._compute(plan, cutoff, {})
        self.persisted.check(plan)
        key = input_key(plan, cutoff)
        hits = self.persisted.hits(plan, key)
        if hits:
            plan = compile_plan(plan.pipeline, plan.sinks, cut=frozenset(hits))
        output, records = self._compute(plan, cutoff, hits)
        self.persisted.keep(plan, key, output.cached)
        return output, records

    def _compute(self, plan: Plan, cutoff: list[int] | None,
                 known: dict[int, list[Chunk]]) -> tuple[BatchOutput, int]:
        executor = Executor(plan, stream=False)
        splits = plan_splits(plan, cutoff, slice_records=self.slice_records)
        if not plan.two_phase:
            inputs: dict[int, list[Chunk]] = {}
            for split, _ in splits:
                for node_id, chunks in read_split(plan, split, self.log_if_any).items():
                    inputs.setdefault(node_id, []).extend(chunks)
            records = sum(len(c.values) for cs in inputs.values() for c in cs)
            return executor.run(inputs, batch_time_ms=_batch_time(plan), outputs=known or None), records
        partials, records = self._map_phase(plan, splits)
        return executor.run({}, batch_time_ms=_batch_time(plan), partials=partials, outputs=known or None), records

    def _map_phase(self, plan: Plan, splits: list[tuple[Split, int]]) -> tuple[dict[int, Any], int]:
        total = sum(size for _, size in splits)
        big = total >= (PARALLEL_MIN_RECORDS if any(s.kind == "log" for s, _ in splits) else PARALLEL_MIN_BYTES)
        workers = min(self.workers, len(splits)) if big else 1
        bar = _progress_bar(self.progress, total, f"batch {plan.name}")
        if workers <= 1:
            merged: dict[int, Any] = {}
            records = 0
            for split, size in splits:
                part, n = _map_split(plan, split, self.log_if_any)
                _merge_partials(plan, merged, part)
                records += n
                bar(size)
            bar(None)
            return merged, records
        # Fork: workers inherit the plan (user lambdas need no pickling).  Each
        # worker takes every n-th split and merges its partials itself (a
        # combiner per executor), so one partial per worker comes back.
        global _WORKER_CONTEXT
        ctx = multiprocessing.get_context("fork")
        queue = ctx.SimpleQueue()
        _WORKER_CONTEXT = (plan, self.log_if_any, [s for s, _ in splits], workers, queue)
        merged, records = {}, 0
        try:
            with ctx.Pool(workers) as pool:
                pending = pool.map_async(_map_share_in_worker, range(workers))
                done = 0
                while done < len(splits):  # progress, reported by the workers per split
                    bar(queue.get())
                    done += 1
                for part, n in pending.get():
                    _merge_partials(plan, merged, part)
                    records += n
        finally:
            _WORKER_CONTEXT = None
            bar(None)
        return merged, records

    def _commit(self, plan: Plan, output: BatchOutput, cutoff: Cutoff, stats: RunStats) -> None:
        out = self.out or sys.stdout
        for text in output.prints:
            out.write(text + "\n")
        if output.prints:
            out.flush()
        for node, elements in output.files:
            write_part(node, elements, batch_part(node))
        if not plan.views and not output.saves:
            return
        store = self.store
        if store is None:
            raise ConfigError(f"pipeline {plan.name!r} writes views or tables: give the runner a store "
                              "(fluvial.open(DATA_DIR).batch_runner(), or `fluvial run`)")
        self._publish(plan, output, cutoff, stats)
        for node, rows in output.saves:
            target = save_target(node.params["store"]) or store
            with target.transaction() as txn:
                txn.save_rows(node.params["table"], node.params["columns"], rows,
                              key_columns=node.params["key_columns"])

    def _publish(self, plan: Plan, output: BatchOutput, cutoff: Cutoff, stats: RunStats) -> None:
        """Write a new version of every view, then switch them all in ONE transaction
        (with the speed layer's new start, if this run hands it over)."""
        store = self.store
        cut = dict(enumerate(cutoff.offsets)) if cutoff.offsets is not None else {}
        sealed = cutoff.sealed
        for name, spec in plan.views.items():
            store.define_view(name, aggregator=spec.aggregator, window=spec.window)
            version = store.begin_version(name)
            with store.transaction() as txn:
                txn.merge_rows(name, output.view_merges.get(name, []), part=version)
            stats.views[name] = version
        if not plan.views:
            return
        with store.transaction() as txn:
            self._fence(txn)
            for name, version in stats.views.items():
                # The sealed realtime generations hold what the stream runner committed up
                # to the cut-off (see _cutoff): the new version covers them.
                txn.publish(name, version, cut, drop_realtime=True,
                            realtime_through=None if sealed is None else sealed.get(name), tails=cutoff.tails)
            if cutoff.handover is not None:
                from fluvial.layers.handover import finish_handover

                finish_handover(txn, plan, self.log, cutoff.handover, own_log=self.own_log)
        for name in stats.views:
            store.drop_older_versions(name)


_WORKER_CONTEXT: tuple[Any, ...] | None = None


def _map_share_in_worker(worker: int) -> tuple[dict[int, Any], int]:
    """Map every ``workers``-th split starting at ``worker``; merge them here."""
    assert _WORKER_CONTEXT is not None
    plan, log, splits, workers, queue = _WORKER_CONTEXT
    merged: dict[int, Any] = {}
    records = 0
    for split in splits[worker::workers]:
        part, n = _map_split(plan, split, log)
        _merge_partials(plan, merged, part)
        records += n
        queue.put(_split_size(split))
    return merged, records


def _split_size(split: Split) -> int:
    return split.stop - split.start


def _map_split(plan: Plan, split: Split, log: Any) -> tuple[dict[int, Any], int]:
    inputs = read_split(plan, split, log)
    records = sum(len(c.values) for cs in inputs.values() for c in cs)
    if split.kind == "log":  # several log sources share one read: count records once
        records = split.stop - split.start
    return Executor(plan, stream=False).map_side(inputs), records


def _merge_partials(plan: Plan, into: dict[int, Any], part: dict[int, Any]) -> None:
    for node in plan.boundary:
        agg = node.params["agg"]
        target = into.setdefault(node.id, {})
        for k, acc in part.get(node.id, {}).items():
            target[k] = agg.merge(target[k], acc) if k in target else acc


def _batch_time(plan: Plan) -> int:
    for node in plan.sources:
        if node.op in ("queue", "rate"):
            return int(node.params["start_ms"])
    return 0


def _progress_bar(enabled: bool | None, total: int, label: str) -> Callable[[int | None], None]:
    """A tqdm bar on a terminal (stderr), a no-op when piped or when tqdm is missing."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return lambda n: None
    try:
        from tqdm import tqdm
    except ImportError:
        return lambda n: None
    bar = tqdm(total=total, desc=label, unit="rec", unit_scale=True, leave=False)

    def step(n: int | None) -> None:
        if n is None:
            bar.close()
        else:
            bar.update(n)

    return step
