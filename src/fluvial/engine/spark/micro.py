"""One micro-batch of the Spark stream runner, computed on the executors.

The driver plans the micro-batch: Spark's ``fluvial`` source
(:mod:`fluvial.engine.spark.source`) decides the offset range ``[start, end)``
of each log partition, and one Spark task per range reads it on an executor,
from the log's URL (a ``file://`` path or a ``nats://`` JetStream log: nothing
goes through the driver, and no filesystem is shared).  The task then runs,
for its log partition, what the local stream runner runs for it
(:class:`~fluvial.engine.execute.Executor`, the same code):

* the narrow operators (``map``, ``filter``, ``flat_map``, ``map_partitions``,
  ``union``, ...) over the partition's events, in offset order;
* the partial aggregates of the aggregations right after them, with the
  partition's event-time watermarks (they depend on the partition's own order
  only, so the same events are late as on the local runners) -- one chunk at a
  time, so that the watermarks advance as they do there.

``reduceByKey`` merges the partial aggregates of all partitions with each
aggregator's ``merge`` on the executors; the driver collects only the merged
view changes, the late counts, the partitions' new watermarks and end offsets,
and the elements of the operators that need every partition in one place
(per-key state, joins, session windows, sinks of unaggregated flows).  It then
commits them exactly as the local runner does
(:meth:`~fluvial.engine.stream.StreamRunner.commit_micro_batch`: view changes,
``save_to`` rows, state and offsets in ONE store transaction, fenced).

The store checkpoint stays the truth: a task skips the records below the
checkpoint's offset (a batch Spark replays), reads from the log a gap Spark
left (its own checkpoint ahead of the store's), and a log partition must be
read by exactly one task (else the micro-batch fails, since its watermarks
would advance out of order).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fluvial.backends import LogSpec
from fluvial.engine.execute import Chunk, Executor
from fluvial.engine.plan import Plan
from fluvial.engine.sources import log_chunks
from fluvial.errors import ConfigError
from fluvial.flow.graph import Node
from fluvial.state.operators import ExecState
from fluvial.windows.shapes import Session

__all__ = ["DriverExecutor", "Merged", "MicroBatchJob", "run_on_executors"]

# Keys of the records a task emits (the first item of the reduceByKey key).
_AGG, _LATE, _MARKS, _CHUNKS, _END, _TABLE = range(6)


@dataclass(frozen=True)
class MicroBatchJob:
    """What the executors need for one micro-batch (picklable: shipped with the tasks).

    Attributes:
        plan: The narrow part of the plan and the aggregations after it (no sinks: they
            may hold store connections).
        log: How an executor opens the log, read only (a URL: no shared filesystem).
        starts: The store checkpoint's offset per log partition (records below are committed).
        watermarks: Per aggregation position, the watermarks of the executors' aggregations.
        on_executors: The aggregations computed on the executors.
        late_values: Those of them whose late elements a ``late()`` flow reads (else only counted).
        ship: The narrow operators whose elements the driver needs.
        complete: A replay of history: nothing is beyond a view's correction horizon.
    """

    plan: Plan
    log: LogSpec
    starts: list[int]
    watermarks: dict[int, dict[Hashable, int]]
    on_executors: frozenset[int]
    late_values: frozenset[int]
    ship: frozenset[int]
    complete: bool = False


@dataclass
class Merged:
    """What the driver collected of one micro-batch."""

    ends: dict[int, int] = field(default_factory=dict)          # log partition -> end offset read
    records: int = 0
    partials: dict[int, dict[tuple[Any, Any], Any]] = field(default_factory=dict)
    tables: dict[int, dict[tuple[Any, Any], Any]] = field(default_factory=dict)   # stateful aggregations' own
    late: dict[int, list[Chunk]] = field(default_factory=dict)
    marks: dict[int, dict[Hashable, int]] = field(default_factory=dict)
    outputs: dict[int, list[Chunk]] = field(default_factory=dict)
    on_executors: frozenset[int] = frozenset()


def plan_job(plan: Plan, log: LogSpec, starts: list[int], state: ExecState, *,
             complete: bool = False) -> MicroBatchJob:
    """The job of the next micro-batch: which aggregations the executors compute
    (those right after the narrow part, but session windows: a session may span
    partitions), and which elements come back to the driver."""
    on_executors = frozenset(n.id for n in plan.boundary if n.op == "aggregate"
                             and all(p.id in plan.prefix for p in n.parents)
                             and not isinstance(n.params["window"], Session))
    ship = frozenset(n.id for n in plan.nodes if n.id in plan.prefix and any(
        c.id not in plan.prefix and c.id not in on_executors for c in plan.children[n.id]))
    late_values = frozenset(n.id for n in plan.nodes if n.id in on_executors
                            and any(c.op == "late" for c in plan.children[n.id]))
    kept = [n for n in plan.nodes if n.id in plan.prefix or n.id in on_executors]
    narrow = dataclasses.replace(plan, nodes=kept, sinks=[], views={}, children={}, pipeline=None)
    marks = {plan.index[i]: dict(state.watermarks.get(plan.index[i], {})) for i in on_executors}
    return MicroBatchJob(narrow, log, list(starts), marks, on_executors, late_values, ship, complete)


def run_on_executors(batch_df: Any, job: MicroBatchJob) -> Merged:
    """Run ``job`` over the rows of a Spark micro-batch (one task per log partition range)."""
    aggs = {n.id: n.params["agg"] for n in job.plan.nodes if n.id in job.on_executors}
    rdd = batch_df.select("partition", "offset", "event", "append_ms").rdd
    parts = max(1, rdd.getNumPartitions())
    merged = (rdd.mapPartitions(functools.partial(_task, job))
              .reduceByKey(functools.partial(_merge, aggs), parts).collect())
    return _assemble(job, merged)


# -- on the executors ---------------------------------------------------------------------

def _task(job: MicroBatchJob, rows: Iterable[Any]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """One Spark task: the rows of (normally) one log partition's range."""
    from fluvial.engine.spark.source import decode_event

    per_partition: dict[int, list[tuple[int, bytes, int]]] = {}
    for r in rows:
        per_partition.setdefault(r[0], []).append((r[1], r[2], r[3]))
    log = None
    try:
        for partition in sorted(per_partition):
            start = job.starts[partition]
            items = sorted(i for i in per_partition[partition] if i[0] >= start)  # below: committed
            if not items:
                continue
            events: list[Any] = []
            appends: list[int] = []
            if items[0][0] > start:  # Spark is ahead of the store checkpoint: read the gap
                log = log or job.log.open()
                events, appends = read_range(log, partition, start, items[0][0])
            expected = start + len(events)
            for offset, blob, append_ms in items:
                if offset != expected:
                    raise ConfigError(f"log partition {partition}: Spark gave offset {offset}, expected "
                                      f"{expected} (records of the log {job.log.url} are missing)")
                events.append(decode_event(blob))
                appends.append(append_ms)
                expected += 1
            yield from _partition(job, partition, events, appends, expected)
    finally:
        if log is not None:
            log.close()


def _partition(job: MicroBatchJob, partition: int, events: list[Any], appends: list[int],
               end: int) -> Iterator[tuple[tuple[Any, ...], Any]]:
    plan = job.plan
    executor = Executor(plan, stream=True, complete=job.complete,
                        state=ExecState(watermarks={pos: dict(m) for pos, m in job.watermarks.items()}))
    values = executor._eval_narrow(log_chunks(plan, partition, events, appends))
    for node in plan.nodes:
        if node.id in job.on_executors:
            yield from _aggregate(job, executor, node, values, partition)
    for node_id in job.ship:
        chunks = values.get(node_id, [])
        if chunks:
            yield (_CHUNKS, node_id, partition), (-1, [(i, partition, c) for i, c in enumerate(chunks)])
    yield (_END, partition), (-1, [(end, len(events))])


def _aggregate(job: MicroBatchJob, executor: Executor, node: Node, values: dict[int, list[Chunk]],
               partition: int) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """The partial aggregates of one aggregation over the partition, chunk by chunk (the
    watermarks advance over the chunks in the order the local runners see them)."""
    agg, pos = node.params["agg"], job.plan.index[node.id]
    delta: dict[tuple[Any, Any], Any] = {}
    table: dict[tuple[Any, Any], Any] = {}
    stateful = node.id in job.plan.stateful
    late: list[tuple[int, int, Any]] = []
    for i, chunk in enumerate(c for p in node.parents for c in values[p.id]):
        part, late_chunks, own = executor.partials(node, [chunk])
        for key, acc in part.items():
            delta[key] = agg.merge(delta[key], acc) if key in delta else acc
        for key, acc in (own.items() if stateful else ()):
            table[key] = agg.merge(table[key], acc) if key in table else acc
        for lc in late_chunks:
            late.append((i, partition, lc if node.id in job.late_values else len(lc.values)))
    for key, acc in delta.items():
        yield (_AGG, node.id, key), (node.id, acc)
    for key, acc in table.items():
        yield (_TABLE, node.id, key), (node.id, acc)
    if late:
        yield (_LATE, node.id, partition), (-1, late)
    before = job.watermarks.get(pos, {})
    moved = {o: t for o, t in executor.state.watermarks.get(pos, {}).items() if before.get(o) != t}
    if moved:
        yield (_MARKS, pos, partition), (-1, [moved])


def _merge(aggs: dict[int, Any], a: tuple[int, Any], b: tuple[int, Any]) -> tuple[int, Any]:
    """reduceByKey: partial aggregates merge with their aggregator; the rest are lists."""
    if a[0] >= 0:
        return a[0], aggs[a[0]].merge(a[1], b[1])
    return -1, a[1] + b[1]


def read_range(log: Any, partition: int, start: int, stop: int) -> tuple[list[Any], list[int]]:
    """The events of ``[start, stop)`` of one log partition, and when the log stored each."""
    events: list[Any] = []
    appends: list[int] = []
    while start < stop:
        batch = log.read(partition, start, stop_offset=stop)
        if not batch.events:
            raise ConfigError(f"log partition {partition}: offsets [{start}, {stop}) cannot be read")
        events.extend(batch.events)
        appends.extend(batch.append_ms)
        start = batch.next_offset
    return events, appends


# -- on the driver ------------------------------------------------------------------------

def _assemble(job: MicroBatchJob, merged: list[tuple[tuple[Any, ...], Any]]) -> Merged:
    out = Merged(partials={i: {} for i in job.on_executors}, on_executors=job.on_executors)
    outputs: dict[int, list[tuple[int, int, Chunk]]] = {}
    late: dict[int, list[tuple[int, int, Any]]] = {}
    for key, (_, value) in merged:
        kind = key[0]
        if kind == _AGG:
            out.partials[key[1]][key[2]] = value
        elif kind == _TABLE:
            out.tables.setdefault(key[1], {})[key[2]] = value
        elif kind == _END:
            if len(value) != 1:
                raise ConfigError(f"log partition {key[1]} was read by {len(value)} Spark tasks in one "
                                  "micro-batch; its events must be read in order by one task")
            out.ends[key[1]], n = value[0]
            out.records += n
        elif kind == _MARKS:
            out.marks.setdefault(key[1], {}).update(value[0])
        elif kind == _CHUNKS:
            outputs.setdefault(key[1], []).extend(value)
        else:
            late.setdefault(key[1], []).extend(value)
    # The local runners' order: union branch (the chunk's index in a partition), then partition.
    out.outputs = {i: [] for i in job.plan.prefix}
    for node_id, items in outputs.items():
        out.outputs[node_id] = [c for _, _, c in sorted(items, key=lambda x: (x[0], x[1]))]
    for node_id, items in late.items():
        # A late chunk only counted (no late() flow reads it): its length is what counts.
        out.late[node_id] = [c if isinstance(c, Chunk) else Chunk((0, p), [None] * c, None)
                             for _, p, c in sorted(items, key=lambda x: (x[0], x[1]))]
    return out


class DriverExecutor(Executor):
    """The driver's :class:`Executor` of a Spark stream run: it evaluates the plan for
    one micro-batch from what the executors computed (:attr:`merged`), keeping the
    operator state (tables, per-key state, joins, watermarks) that the checkpoint holds."""

    merged: Merged | None = None

    def partials(self, node: Node, chunks: list[Chunk]
                 ) -> tuple[dict[tuple[Any, Any], Any], list[Chunk], dict[tuple[Any, Any], Any]]:
        merged = self.merged
        if merged is None or node.id not in merged.on_executors:
            return super().partials(node, chunks)
        pos = self.plan.index[node.id]
        if node.params["window"] is not None:  # as Executor.partials: windowed aggregations only
            self.state.watermarks.setdefault(pos, {}).update(merged.marks.get(pos, {}))
        delta = merged.partials.get(node.id, {})
        return delta, merged.late.get(node.id, []), merged.tables.get(node.id, {})

    def run(self, inputs: dict[int, list[Chunk]], *, batch_time_ms: int,
            partials: dict[int, dict[tuple[Any, Any], Any]] | None = None,
            outputs: dict[int, list[Chunk]] | None = None, stamp: tuple[int, int] = (0, 0)) -> Any:
        if self.merged is not None and outputs is None:
            outputs = self.merged.outputs
        return super().run(inputs, batch_time_ms=batch_time_ms, partials=partials, outputs=outputs,
                           stamp=stamp)
