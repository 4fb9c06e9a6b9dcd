"""The Spark batch runner: the batch layer on a Spark cluster (PySpark RDDs).

A run compiles the part of a plan that touches the data to RDD operations and
runs the rest -- table rows, ``top(n)``, window composition, sinks, the view
writes -- with the very same :class:`~fluvial.engine.execute.Executor` code as
the local batch runner, on the driver, over the merged partial aggregates.

* Sources: ``sc.parallelize(splits, len(splits))`` -- one Spark partition per
  split of :func:`~fluvial.engine.sources.plan_splits` (a log partition offset
  range, a file byte range, an in-memory source) -- then ``flatMap`` reads the
  split in the executor with fluvial's own reader; executors open the log
  read-only from its URL (:class:`~fluvial.backends.LogSpec`: ``file://``,
  ``parquet://``, ``nats://`` -- a NATS log needs no shared filesystem), and
  read exactly the split's offset range.  A lost partition is recomputed from the log.
* Records are ``(origin, seq, ts, value)``: ``origin`` as ``Chunk.origin``,
  ``seq`` a tuple ordering the records of one origin as the local executor
  orders them (log offset order, then the position produced by flat_map...).
* ``map``, ``flat_map``, ``filter``, ``map_partitions`` compile to the RDD
  operations of the same names, ``union`` to ``sc.union``; ``with_timestamps``
  and ``lookup`` (a dict table is broadcast) to ``map`` / ``mapPartitions``.
* Aggregations: each Spark partition is pre-aggregated with
  :meth:`Executor.partials` (the local code, so the keys are the same
  ``(key, storage window)``), then ``reduceByKey(agg.merge)`` and
  ``collectAsMap()``.  Session windows: ``groupByKey`` per key, the values in
  event-time order, then the local session fold.
* ``map_with_state`` / ``update_state_by_key``: ``groupByKey`` on the key, each
  key's values sorted by ``(ts, origin, seq)`` (the local executor's total
  order), folded with the user function.  ``join``: ``cogroup`` of both sides
  per ``(key, storage window)``.
* ``repartition``/``coalesce`` are the RDD operations; ``cache``/``persist`` is
  ``RDD.persist`` at the matching Spark storage level, and the runner keeps the
  RDD for the next actions over the same input (``toDebugString`` then shows
  its ``CachedPartitions``); ``sort_by`` is ``sortBy`` (ties in input order) then
  ``zipWithIndex``, which numbers the records for the driver.
* Records that an operator evaluated on the driver needs (a sink over a
  non-aggregated flow, ...) are collected as chunks and handed to
  ``Executor.run(outputs=...)``.

Then the views are written exactly as by :class:`~fluvial.engine.batch.BatchRunner`
(a new batch version each, same cut-off), so the serving merge is unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from types import SimpleNamespace
from typing import Any

from fluvial.backends import LogSpec, spec_of
from fluvial.engine.batch import BatchOutput, BatchRunner, _batch_time
from fluvial.engine.execute import Chunk, Executor, _fail, _identity, _pair
from fluvial.engine.persisted import input_key
from fluvial.engine.plan import Plan, compile_plan
from fluvial.engine.sources import Split, plan_splits, read_split
from fluvial.engine.spark.session import SparkConfig, get_session
from fluvial.errors import FlowError, FluvialError
from fluvial.flow.graph import NARROW_OPS, SOURCE_OPS, Node, Pipeline
from fluvial.windows.shapes import Session

__all__ = ["SparkBatchRunner", "explain_spark"]

Record = tuple[tuple[int, int], tuple[Any, ...], int, Any]   # (origin, seq, ts, value)


class SparkBatchRunner(BatchRunner):
    """Runs pipelines over all of their input on Spark; same API and results as
    :class:`~fluvial.engine.batch.BatchRunner`.

    Args:
        log: The event log (opened from a ``file://`` or ``nats://`` URL) or a Parquet export
            (:class:`~fluvial.log.parquet.ParquetLog`): executors open it read-only from its URL.
        store: The serving store views are written to (from the driver).
        spark: Where Spark runs (:class:`SparkConfig`: master and conf).
        slice_records: Log records per split (one Spark partition each); large splits
            mean fewer tasks and fewer partial aggregates to shuffle.
        out: Where ``print()`` sinks write.
    """

    def __init__(self, *, log: Any = None, store: Any = None, spark: SparkConfig | None = None,
                 slice_records: int = 250_000, progress: bool | None = None, out: Any = None) -> None:
        super().__init__(log=log, store=store, workers=1, slice_records=slice_records,
                         progress=progress, out=out)
        self.spark = spark or SparkConfig()
        self._session: Any = None
        self._persisted_rdds: dict[int, tuple[Any, Any]] = {}   # persisted flow -> (input key, its RDD)

    @property
    def session(self) -> Any:
        """The SparkSession (started on first use; the Spark UI address is printed then)."""
        if self._session is None:
            self._session = get_session(self.spark)
        return self._session

    def explain(self, pipeline: Pipeline) -> str:
        """Spark's lineage (``toDebugString``) of each RDD the run would compute; a persisted
        flow an earlier action of this runner computed shows its ``CachedPartitions``."""
        plan = compile_plan(pipeline)
        cutoff = self._cutoff(plan, None, seal=False)[0]
        splits = plan_splits(plan, cutoff, slice_records=self.slice_records)
        if plan.two_phase:
            labels = ", ".join(_label(plan, node.id) for node in plan.boundary)
            return f"{labels}:\n{_debug(self._two_phase_rdd(plan, splits, self._log_spec(plan)))}"
        return _Job(plan, self.session.sparkContext, self._log_spec(plan), splits,
                    self._kept_rdds(plan, cutoff)).explain()

    # -- the run -----------------------------------------------------------------------
    def _execute(self, plan: Plan, cutoff: list[int] | None) -> tuple[BatchOutput, int]:
        splits = plan_splits(plan, cutoff, slice_records=self.slice_records)
        if plan.two_phase:
            partials, records = self._two_phase(plan, splits)
            return Executor(plan, stream=False).run({}, batch_time_ms=_batch_time(plan),
                                                    partials=partials), records
        job = _Job(plan, self.session.sparkContext, self._log_spec(plan), splits, self._kept_rdds(plan, cutoff))
        partials, outputs, records = job.run()
        executor = Executor(plan, stream=False)
        return executor.run({}, batch_time_ms=_batch_time(plan), partials=partials,
                            outputs=outputs), records

    def _kept_rdds(self, plan: Plan, cutoff: list[int] | None) -> dict[int, Any]:
        """The persisted RDDs of the plan's persisted flows that an earlier action over the
        same input made (Spark keeps their partitions: the job reads nothing behind them)."""
        key = input_key(plan, cutoff)
        kept = {}
        for node in plan.nodes:
            if node.op != "cache":
                continue
            held = self._persisted_rdds.get(node.id)
            if held is not None and held[0] == key:
                kept[node.id] = held[1]
            elif held is not None:
                held[1].unpersist()   # of an input that grew
                del self._persisted_rdds[node.id]
            if node.id not in kept:
                kept[node.id] = _Keep(key, self._persisted_rdds)
        return kept

    def _two_phase_rdd(self, plan: Plan, splits: list[tuple[Split, int]],
                       where: LogSpec | None) -> Any:
        """Every path from a source meets an aggregation first (the usual plan): one
        Spark stage per split runs the local runners' own map side on it (the narrow
        operators, then the partial aggregates, pre-combined in the task), and
        ``reduceByKey`` merges the partials with each aggregator's ``merge``.  The
        same two phases as the local batch runner, with Spark's scheduling, retries
        and recomputation from the log for lost partitions."""
        sc = self.session.sparkContext
        aggs = {node.id: node.params["agg"] for node in plan.boundary}

        def map_side(split: Split) -> Iterator[tuple[Any, Any]]:
            log = _reopen(where) if split.kind == "log" and where is not None else None
            try:
                part = Executor(plan, stream=False).map_side(read_split(plan, split, log))
            finally:
                if log is not None:
                    log.close()
            for node_id, accs in part.items():
                for key, acc in accs.items():
                    yield (node_id, key), (node_id, acc)

        def merge(a: tuple[int, Any], b: tuple[int, Any]) -> tuple[int, Any]:
            return a[0], aggs[a[0]].merge(a[1], b[1])

        parts = sc.parallelize([s for s, _ in splits], max(1, len(splits))).setName("splits")
        return parts.flatMap(map_side).setName("map side").reduceByKey(merge).setName("partials")

    def _two_phase(self, plan: Plan, splits: list[tuple[Split, int]]) -> tuple[dict[int, Any], int]:
        merged = _spark_call(self._two_phase_rdd(plan, splits, self._log_spec(plan)).collect)
        partials: dict[int, Any] = {node.id: {} for node in plan.boundary}
        for (node_id, key), (_, acc) in merged:
            partials[node_id][key] = acc
        records = sum(size for split, size in splits if split.kind == "log")
        if any(split.kind != "log" for split, _ in splits):  # files and queues: count what was read
            records += _count_elements_read(self.session.sparkContext, plan, splits, self._log_spec(plan))
        return partials, records

    def _log_spec(self, plan: Plan) -> LogSpec | None:
        """How executors reopen the log, read only (the embedded log, a Parquet export, ...)."""
        if not any(n.op == "log" for n in plan.sources):
            return None
        return spec_of(self.log)


def _count_elements_read(sc: Any, plan: Plan, splits: list[tuple[Split, int]],
                         where: LogSpec | None) -> int:
    """Elements read from file and in-memory sources (log splits are counted by offsets)."""

    def count(split: Split) -> int:
        chunks = read_split(plan, split, None)
        return sum(len(c.values) for cs in chunks.values() for c in cs)

    other = [s for s, _ in splits if s.kind != "log"]
    return int(sc.parallelize(other, max(1, len(other))).map(count).sum()) if other else 0


def _reopen(where: LogSpec) -> Any:
    """In an executor: open the driver's log read-only."""
    return where.open()


def explain_spark(pipeline: Pipeline, spark_config: SparkConfig | None = None, *,
                  log: Any = None, slice_records: int = 100_000) -> str:
    """The Spark lineage of the job ``pipeline`` compiles to, without running it.

    One ``toDebugString`` per aggregation (its ``reduceByKey``) and per flow
    collected for the driver.  Without ``log``, log sources are shown with no splits.
    """
    runner = SparkBatchRunner(log=log, spark=spark_config, slice_records=slice_records)
    plan = compile_plan(pipeline)
    cutoff = log.end_offsets() if log is not None and any(n.op == "log" for n in plan.sources) else None
    splits = plan_splits(plan, cutoff, slice_records=slice_records)
    path = runner._log_spec(plan) if log is not None else None
    if plan.two_phase:
        labels = ", ".join(_label(plan, node.id) for node in plan.boundary)
        return f"{labels}:\n{_debug(runner._two_phase_rdd(plan, splits, path))}"
    return _Job(plan, runner.session.sparkContext, path, splits).explain()


# -- compiling a plan to RDDs -------------------------------------------------------------

class _Job:
    """The RDDs of one plan: built lazily, run by :meth:`run`, shown by :meth:`explain`."""

    def __init__(self, plan: Plan, sc: Any, log_spec: LogSpec | None,
                 splits: list[tuple[Split, int]], kept: dict[int, Any] | None = None) -> None:
        self.plan, self.sc, self.log_spec = plan, sc, log_spec
        self.kept = kept or {}   # persisted flow -> its RDD of an earlier job, or where to keep this one's
        self.splits = [s for s, _ in splits]
        self.log_records = sum(size for s, size in splits if s.kind == "log")
        self.rdds: dict[int, Any] = {}        # node id -> RDD of records
        self.aggs: dict[int, Any] = {}        # aggregate node id -> RDD of ((key, window), acc)
        self.counter = sc.accumulator(0)
        self._build()

    def _build(self) -> None:
        plan = self.plan
        src = _source_plan(plan)
        reads = None
        for node in plan.nodes:
            if node.op == "cache" and not isinstance(self.kept.get(node.id, _KEEP_NONE), _Keep):
                self.rdds[node.id] = self.kept[node.id]   # kept by an earlier action: its sources are not read
                continue
            if not all(p.id in self.rdds for p in node.parents):
                continue  # evaluated on the driver
            parents = [self.rdds[p.id] for p in node.parents]
            if node.op in SOURCE_OPS:
                if reads is None:
                    reads = self._reads(src)
                pos = plan.index[node.id]
                self.rdds[node.id] = (reads.filter(lambda r, pos=pos: r[0] == pos).map(_second)
                                      .setName(f"{node.op} {node.label}"))
            elif node.op in NARROW_OPS:
                self.rdds[node.id] = _narrow(self.sc, node, parents).setName(f"{node.op} {node.label}")
            elif node.op == "state":
                self.rdds[node.id] = _state(node, plan.index[node.id], parents[0]).setName(
                    f"{node.params['mode']}_state {node.label}")
            elif node.op == "join":
                self.rdds[node.id] = _join(node, plan.index[node.id], parents[0], parents[1]).setName(
                    f"join {node.label}")
            elif node.op == "sort":
                self.rdds[node.id] = _sort(node, plan.index[node.id], parents[0]).setName(f"sort_by {node.label}")
            elif node.op == "cache":
                rdd = parents[0].persist(_storage_level(node)).setName(f"persist {node.label}")
                self.rdds[node.id] = rdd
                keep = self.kept.get(node.id)
                if isinstance(keep, _Keep):
                    keep.held[node.id] = (keep.key, rdd)
            elif node.op == "aggregate":
                self.aggs[node.id] = _aggregate(node, self.sc.union(parents) if len(parents) > 1
                                                else parents[0]).setName(f"aggregate {node.label}")

    def _reads(self, src: Any) -> Any:
        splits, path, counter = self.splits, self.log_spec, self.counter

        def read(split: Split) -> Iterator[tuple[int, Record]]:
            log = _reopen(path) if split.kind == "log" and path is not None else None
            try:
                chunks = read_split(src, split, log)
            finally:
                if log is not None:
                    log.close()
            n = 0
            for node_id, cs in chunks.items():
                pos = src.index[node_id]
                for ch in cs:
                    ts = ch.ts
                    for i, v in enumerate(ch.values):
                        yield pos, (ch.origin, (split.start, i), ts[i] if ts is not None else 0, v)
                    n += len(ch.values)
            if split.kind != "log":
                counter.add(n)

        return self.sc.parallelize(splits, max(1, len(splits))).flatMap(read).setName("splits")

    def _needed_on_driver(self) -> dict[int, bool]:
        """RDD nodes whose records the driver needs (a consumer not compiled to Spark)."""
        need = {}
        for node_id in self.rdds:
            need[node_id] = any(c.id not in self.rdds and c.id not in self.aggs
                                for c in self.plan.children[node_id])
        return need

    def run(self) -> tuple[dict[int, Any], dict[int, list[Chunk]], int]:
        partials = {node_id: _spark_call(rdd.collectAsMap) for node_id, rdd in self.aggs.items()}
        outputs: dict[int, list[Chunk]] = {}
        for node_id, needed in self._needed_on_driver().items():
            outputs[node_id] = _to_chunks(_spark_call(self.rdds[node_id].collect)) if needed else []
        if not self.aggs and not any(self._needed_on_driver().values()) and self.splits:
            _spark_call(self.rdds[next(iter(self.rdds))].count)  # read anyway: count the input
        return partials, outputs, self.log_records + self.counter.value

    def explain(self) -> str:
        parts = []
        for node_id, rdd in self.aggs.items():
            parts.append(f"{_label(self.plan, node_id)}:\n{_debug(rdd)}")
        for node_id, needed in self._needed_on_driver().items():
            if needed:
                parts.append(f"{_label(self.plan, node_id)} (collected):\n{_debug(self.rdds[node_id])}")
        return "\n\n".join(parts) if parts else "(nothing runs on Spark)"


class _Keep:
    """Where a job keeps the RDD of a persisted flow for the next actions over ``key``."""

    def __init__(self, key: Any, held: dict[int, tuple[Any, Any]]) -> None:
        self.key, self.held = key, held


_KEEP_NONE = _Keep(None, {})


def _storage_level(node: Node) -> Any:
    from pyspark import StorageLevel as SparkLevel

    level = node.params["level"]
    return {"memory": SparkLevel.MEMORY_ONLY, "disk": SparkLevel.DISK_ONLY,
            "memory_and_disk": SparkLevel.MEMORY_AND_DISK}[level.value]


def _label(plan: Plan, node_id: int) -> str:
    node = plan.nodes[plan.index[node_id]]
    return f"{node.op} at {node.label}"


def _debug(rdd: Any) -> str:
    text = rdd.toDebugString()
    return text.decode() if isinstance(text, bytes) else str(text)


def _spark_call(action: Callable[[], Any]) -> Any:
    """Run a Spark action; a FlowError raised in an executor comes back as one."""
    try:
        return action()
    except FluvialError:
        raise
    except Exception as exc:
        text = str(exc)
        marker = "fluvial.errors.FlowError: "
        if marker in text:
            raise FlowError(text.split(marker, 1)[1].splitlines()[0]) from None
        raise


def _source_plan(plan: Plan) -> Any:
    """What :func:`read_split` needs of a plan, without the sinks (which may hold stores)."""
    nodes: list[Any] = [Node(n.op, (), n.params, n.label, n.id) if n.op in SOURCE_OPS else None
                        for n in plan.nodes]
    return SimpleNamespace(index=dict(plan.index), timed=set(plan.timed), nodes=nodes,
                           sources=[n for n in nodes if n is not None])


def _stub(node: Node) -> Node:
    """The node without its parents (what executors need: op, params, label)."""
    return Node(node.op, (), node.params, node.label, node.id)


def _second(r: Any) -> Any:
    return r[1]


def _to_chunks(records: Iterable[Record]) -> list[Chunk]:
    """Records as the local executor's chunks: per origin, in (origin, seq) order."""
    chunks = []
    ordered = sorted(records, key=lambda r: (r[0], r[1]))
    for origin, group in itertools.groupby(ordered, key=lambda r: r[0]):
        rs = list(group)
        chunks.append(Chunk(origin, [r[3] for r in rs], [r[2] for r in rs]))
    return chunks


def _by_origin(records: Iterable[Record]) -> list[tuple[tuple[int, int], list[Record]]]:
    groups: dict[tuple[int, int], list[Record]] = {}
    for r in records:
        groups.setdefault(r[0], []).append(r)
    return list(groups.items())


def _narrow(sc: Any, node: Node, parents: list[Any]) -> Any:
    op = node.op
    f: Callable[..., Any] = node.params.get("f") or _identity
    ref = Node(op, (), {}, node.label, node.id)

    def guard(g: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def call(r: Any) -> Any:
            try:
                return g(r)
            except FlowError:
                raise
            except Exception as exc:
                raise _fail(ref, "the user function failed", exc) from exc
        return call

    if op == "union":
        return sc.union([rdd.map(lambda r, i=i: (r[0], (i, *r[1]), r[2], r[3]))
                         for i, rdd in enumerate(parents)])
    rdd = parents[0]
    if op == "repartition":  # records keep (origin, seq): the driver restores their order
        return rdd.repartition(node.params["n"]) if node.params["shuffle"] else rdd.coalesce(node.params["n"])
    if op == "map":
        return rdd.map(guard(lambda r: (r[0], r[1], r[2], f(r[3]))))
    if op == "filter":
        return rdd.filter(guard(lambda r: bool(f(r[3]))))
    if op == "flat_map":
        return rdd.flatMap(guard(lambda r: [(r[0], (*r[1], j), r[2], x) for j, x in enumerate(f(r[3]))]))
    if op == "with_timestamps":
        return rdd.map(guard(lambda r: (r[0], r[1], int(f(r[3])), r[3])))
    if op == "map_partitions":
        def partitions(records: Iterator[Record]) -> Iterator[Record]:
            for origin, rs in _by_origin(records):
                last = max(r[2] for r in rs)
                try:
                    items = list(f(iter([r[3] for r in rs])))
                except Exception as exc:
                    raise _fail(ref, "the user function failed", exc) from exc
                for j, x in enumerate(items):
                    yield origin, (*rs[0][1], j), last, x
        return rdd.mapPartitions(partitions, preservesPartitioning=True)
    if op == "lookup":
        table, default, inner = node.params["table"], node.params["default"], node.params["inner"]
        shared = sc.broadcast(table) if isinstance(table, dict) else None
        missing = object()

        def lookup(records: Iterator[Record]) -> Iterator[Record]:
            t = shared.value if shared is not None else table
            get = t.get if hasattr(t, "get") else None
            for r in records:
                k, v = _pair(ref, r[3])
                try:
                    other = get(k, missing) if get else t(k)
                except Exception as exc:
                    raise _fail(ref, "the user function failed", exc) from exc
                if other is missing or (other is None and not get):
                    if inner:
                        continue
                    other = default
                yield r[0], r[1], r[2], (k, (v, other))
        return rdd.mapPartitions(lookup, preservesPartitioning=True)
    raise _fail(node, "unknown operator")  # pragma: no cover


def _aggregate(node: Node, rdd: Any) -> Any:
    ref = _stub(node)
    agg, keyed = node.params["agg"], node.params["keyed"]
    if isinstance(node.params["window"], Session):
        def keyed_by(r: Record) -> tuple[Any, Any]:
            k, v = _pair(ref, r[3]) if keyed else (None, r[3])
            return k, (r[2], r[0], r[1], v)

        def sessions(kv: tuple[Any, Iterable[Any]]) -> Any:
            k, items = kv
            ordered = sorted(items, key=lambda e: e[:3])
            values = [(k, e[3]) for e in ordered] if keyed else [e[3] for e in ordered]
            chunk = Chunk((0, 0), values, [e[0] for e in ordered])
            return Executor(None, stream=False)._session_partials(ref, [chunk]).items()  # type: ignore[arg-type]

        return rdd.map(keyed_by).groupByKey().flatMap(sessions)

    def partials(records: Iterator[Record]) -> Any:
        chunks = [Chunk(origin, [r[3] for r in rs], [r[2] for r in rs]) for origin, rs in _by_origin(records)]
        return Executor(None, stream=False).partials(ref, chunks)[0].items()  # type: ignore[arg-type]

    return rdd.mapPartitions(partials).reduceByKey(agg.merge)


def _state(node: Node, pos: int, rdd: Any) -> Any:
    """map_with_state / update_state_by_key: per key, the values in the local total order."""
    ref = _stub(node)
    f, mode = node.params["f"], node.params["mode"]

    def keyed_by(r: Record) -> tuple[Any, Any]:
        k, v = _pair(ref, r[3])
        return k, (r[2], r[0], r[1], v)

    def fold(kv: tuple[Any, Iterable[Any]]) -> Iterator[Record]:
        k, items = kv
        ordered = sorted(items, key=lambda e: e[:3])
        state = None
        try:
            if mode == "map":
                for t, origin, seq, v in ordered:
                    state, output = f(k, v, state)
                    if output is not None:
                        yield (pos, 0), (t, origin, seq), t, output
            else:
                state = f([e[3] for e in ordered], None)
                first = ordered[0]
                yield (pos, 0), first[:3], ordered[-1][0], (k, state)
        except FlowError:
            raise
        except Exception as exc:
            raise _fail(ref, "the state function failed", exc) from exc

    return rdd.map(keyed_by).groupByKey().flatMap(fold)


class _Descending:
    """Orders the way its value does not: with ``sortBy(..., ascending=False)``, ties of the
    user's key then keep the input order, as the local executor's stable sort does."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Descending) -> bool:
        return bool(other.value < self.value)

    def __gt__(self, other: _Descending) -> bool:
        return bool(other.value > self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)


def _sort(node: Node, pos: int, rdd: Any) -> Any:
    """sort_by: Spark's ``sortBy`` (range-partitioned) on the user's key, ties by input order
    (origin, seq); ``zipWithIndex`` then numbers the records, so the driver keeps that order."""
    ref = _stub(node)
    f, ascending = node.params["f"], node.params["ascending"]

    def key(r: Record) -> tuple[Any, Any]:
        try:
            k = f(r[3])
        except Exception as exc:
            raise _fail(ref, "the sort key function failed", exc) from exc
        return (k, (r[0], r[1]) if ascending else _Descending((r[0], r[1])))

    return rdd.sortBy(key, ascending=ascending).zipWithIndex().map(
        lambda ri: ((pos, 0), (ri[1],), ri[0][2], ri[0][3]))


def _join(node: Node, pos: int, left: Any, right: Any) -> Any:
    """Inner join per (key, storage window): every right element with every left one,
    in the order the local executor emits them (right order, then left order)."""
    ref = _stub(node)
    shape = node.params["window"]

    def keyed_by(r: Record) -> tuple[Any, Any]:
        k, v = _pair(ref, r[3])
        return (k, shape.storage_window(r[2]) if shape is not None else None), (r[0], r[1], r[2], v)

    def pairs(kv: tuple[Any, tuple[Iterable[Any], Iterable[Any]]]) -> Iterator[Record]:
        jk, (ls, rs) = kv
        lefts, rights = sorted(ls, key=lambda e: e[:2]), sorted(rs, key=lambda e: e[:2])
        for ro, rseq, u, w in rights:
            for lo, lseq, t, v in lefts:
                yield (pos, 0), (ro, rseq, lo, lseq), max(t, u), (jk[0], (v, w))

    return left.map(keyed_by).cogroup(right.map(keyed_by)).flatMap(pairs)

