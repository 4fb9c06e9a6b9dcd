"""The stream runner on Spark Structured Streaming: the speed layer beyond one machine.

Spark reads the log through the ``fluvial`` streaming source (offsets are log
positions, see :mod:`fluvial.engine.spark.source`) in micro-batches: the
driver decides each log partition's offset range, an executor reads it from
the log's URL (``file://`` or ``nats://``: no shared filesystem).  Each
micro-batch goes to ``foreachBatch``, which computes it on the executors
(:mod:`fluvial.engine.spark.micro`: the narrow operators and the partial
aggregates per log partition, with the same
:class:`~fluvial.engine.execute.Executor` code and watermarks as the local
:class:`~fluvial.engine.stream.StreamRunner`, merged with ``reduceByKey``);
the driver gets the merged view changes, the ``save_to`` rows and the new
state, evaluates what needs every partition in one place (per-key state,
joins, sessions), and commits, in ONE store transaction, the view changes,
the ``save_to`` rows, the late counts and the checkpoint (state and log
offsets), fenced as the local runner's commit.

Exactly once: the offsets in the store checkpoint are the truth.  Spark may
replay a micro-batch after a crash; records below the committed offsets are
skipped, so a replay has no effect twice.  Spark's own checkpoint (under
``<store directory>/spark-checkpoints/<runner id>``; for a store without a
directory, such as PostgreSQL, under the temporary directory, one per store
URL) is only a cursor: when it does not continue from the store checkpoint it
is reset (and a gap is read from the log), never trusted over it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from fluvial.backends import spec_of
from fluvial.engine.batch import RunStats
from fluvial.engine.files import check_file_sinks
from fluvial.engine.plan import Plan, compile_plan
from fluvial.engine.sources import log_sources
from fluvial.engine.spark.batch import _spark_call
from fluvial.engine.spark.micro import DriverExecutor, Merged, plan_job, run_on_executors
from fluvial.engine.spark.session import SparkConfig, get_session
from fluvial.engine.stream import StreamRunner
from fluvial.engine.streamable import check_streamable
from fluvial.errors import ConfigError, LogUnreachable, StoreUnavailable, UnsupportedOperation
from fluvial.flow.graph import Pipeline
from fluvial.state.checkpoint import Checkpoint
from fluvial.state.ownership import DEFAULT_LEASE_MS

_logger = logging.getLogger("fluvial.spark")
_WORKER_START_FAILED = "Python worker failed to connect back"
_WORKER_START_ATTEMPTS = 3


def check_spark_streamable(plan: Plan) -> None:
    """Refuse, before starting, what the Spark stream runner cannot run.

    Spark streams the log only: file, queue and rate sources are not log
    streams (run them on the local stream runner, or ingest them into the log).
    """
    for node in plan.sources:
        if node.op != "log":
            raise UnsupportedOperation(
                f"{node.op} source at {node.label}: the Spark stream runner reads the fluvial log only "
                f"(a {node.op} source is not a log stream). Ingest it into the log (`fluvial ingest`) "
                "or run the pipeline on the local stream runner")
    if not log_sources(plan):
        raise UnsupportedOperation(f"pipeline {plan.name!r} reads no log: the Spark stream runner has "
                                   "nothing to stream")
    check_streamable(plan)


class SparkStreamRunner(StreamRunner):
    """Runs a pipeline continuously over the log with Spark Structured Streaming.

    Args:
        log: The event log, opened from a URL (``file://``, ``nats://``): executors open it
            themselves, read only, from that URL.
        store: The serving store (views, ``save_to`` tables and checkpoints).
        spark: Where Spark runs (default ``local[*]``).
        batch_interval_ms: The processing-time trigger (0: as fast as possible).
        max_batch_records: At most this many log records per micro-batch.
        runner_id: Names the checkpoint (default: the pipeline's name); the
            checkpoint is shared with the local stream runner of the same id.
        out: Where ``print()`` sinks write.
        spark_checkpoint_dir: Spark's checkpoint location (default: next to the store).
        take_over, wait_s, lease_ms: What to do when another runner holds the pipeline
            (see :class:`~fluvial.engine.stream.StreamRunner`).
        store_patience_s: How long :meth:`run` rides out a store or a log it cannot reach (a
            PostgreSQL restart, a NATS election): the query stops and starts again from the
            store's checkpoint, with backoff, until they answer again or this time has passed.
    """

    def __init__(self, *, log: Any = None, store: Any = None, spark: SparkConfig | None = None,
                 batch_interval_ms: int = 1000, max_batch_records: int = 250_000,
                 runner_id: str | None = None, out: TextIO | None = None,
                 spark_checkpoint_dir: str | os.PathLike[str] | None = None, take_over: bool = False,
                 wait_s: float = 0.0, lease_ms: int = DEFAULT_LEASE_MS, store_patience_s: float = 300.0) -> None:
        super().__init__(log=log, store=store, batch_interval_ms=batch_interval_ms,
                         max_batch_records=max_batch_records, runner_id=runner_id, out=out,
                         take_over=take_over, wait_s=wait_s, lease_ms=lease_ms, store_patience_s=store_patience_s)
        self.spark = spark or SparkConfig()
        self.spark_checkpoint_dir = spark_checkpoint_dir

    def run(self, pipeline: Pipeline, *, until_caught_up: bool = False, max_batches: int | None = None,
            stop: threading.Event | None = None) -> RunStats:
        """Process micro-batches until ``stop`` is set, ``max_batches`` ran, or (with
        ``until_caught_up``) everything the log held when the run began is processed."""
        plan = compile_plan(pipeline)
        if not self.has_store:
            raise ConfigError("a stream runner commits to a store: give it one "
                              "(fluvial.open(DATA_DIR).spark_stream_runner(), or `fluvial run --engine spark`)")
        check_spark_streamable(plan)
        check_file_sinks(plan)
        if not self.has_log:
            raise ConfigError(f"pipeline {plan.name!r} reads the log: give the runner a log")
        log_path = spec_of(self.log).url   # what Spark's source opens, read only
        for name, spec in plan.views.items():
            self.store.define_view(name, aggregator=spec.aggregator, window=spec.window)
        stats = RunStats(pipeline.name, "spark-stream")
        if max_batches is not None and max_batches <= 0:
            return stats
        started = time.perf_counter()
        claimed = not self.holds(plan)  # one runner per pipeline, local or Spark: rivals are refused or fenced
        if claimed:
            self.claim(plan)
        try:
            attempt = 1
            outage = _Outage(self.store_patience_s, plan.name)
            while not (stop is not None and stop.is_set()):
                committed = stats.micro_batches
                try:
                    failure = self._run_query(plan, log_path, stats, until_caught_up, max_batches, stop, outage)
                except (StoreUnavailable, LogUnreachable) as exc:
                    if stats.micro_batches > committed:
                        outage = _Outage(self.store_patience_s, plan.name)   # a new outage, not the last one
                    if not outage.wait(exc, stop):
                        break
                    continue
                if failure is None:
                    break
                if _WORKER_START_FAILED not in str(failure) or attempt == _WORKER_START_ATTEMPTS:
                    raise ConfigError(f"the Spark streaming query failed: {failure}")
                # Spark gives a Python worker 10 s to start (not configurable): on a busy machine it may
                # not; the query restarts from the store's checkpoint, so committed batches stay committed.
                attempt += 1
                _logger.warning("the Spark streaming query of %s could not start a Python worker (a busy "
                                "machine?); restarting it from its checkpoint (attempt %d of %d)",
                                plan.name, attempt, _WORKER_START_ATTEMPTS)
        finally:
            if claimed:
                self.release()
        stats.seconds = time.perf_counter() - started
        return stats

    def _run_query(self, plan: Plan, log_path: Any, stats: RunStats, until_caught_up: bool,
                   max_batches: int | None, stop: threading.Event | None, outage: _Outage) -> Any:
        """Run one streaming query from the store's checkpoint; return its exception (None: none)."""
        cp = self._load(plan, True)
        outage.answered()
        if max_batches is not None:
            max_batches -= stats.micro_batches
        spark = get_session(self.spark, announce=False)
        from fluvial.engine.spark.source import FluvialLogSource

        spark.dataSource.register(FluvialLogSource)
        location = self._spark_checkpoint(plan, cp)
        batch = _MicroBatches(self, plan, cp, stats, max_batches)
        reader = (spark.readStream.format("fluvial").option("log", str(log_path))
                  .option("max_records", str(self.max_batch_records)).option("placeholders", "keep")
                  .option("start", json.dumps(cp.offsets)))
        if cp.warmup_until is not None:
            reader = reader.option("hold_at", json.dumps(cp.warmup_until))
        writer = reader.load().writeStream.foreachBatch(batch).option("checkpointLocation", location)
        writer = writer.queryName(f"fluvial-{self.checkpoint_id(plan)}-{id(batch)}".replace(":", "-"))
        if until_caught_up:
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=f"{self.batch_interval_ms} milliseconds")
        query = writer.start()
        try:
            batch.serve(query, stop)
        finally:
            query.stop()
        failure = query.exception()
        if failure is not None and LogUnreachable.__name__ in str(failure):   # an executor could not read the log
            raise LogUnreachable(f"the Spark executors cannot read the log now: {str(failure).splitlines()[0]}")
        return failure

    # -- internals -----------------------------------------------------------------------
    def _spark_checkpoint(self, plan: Plan, cp: Checkpoint) -> str:
        """Spark's checkpoint location, reset unless it continues from the store checkpoint."""
        if self.spark_checkpoint_dir is not None:
            base = Path(self.spark_checkpoint_dir)
        else:
            store_path = getattr(self.store, "path", None)
            if store_path and store_path != ":memory:":
                base = Path(store_path).resolve().parent / "spark-checkpoints"
            else:
                # One directory per store: runners of two stores must not reset each other's cursor.
                where = str(getattr(self.store, "url", None) or store_path or id(self.store))
                base = (Path(tempfile.gettempdir()) / "fluvial-spark-checkpoints"
                        / hashlib.sha1(where.encode()).hexdigest()[:12])
        location = base / "".join(c if c.isalnum() or c in "-_." else "_" for c in self.checkpoint_id(plan))
        if location.exists() and not _continues(location, cp.offsets):
            shutil.rmtree(location)
        location.parent.mkdir(parents=True, exist_ok=True)
        return str(location)


class _Outage:
    """How long the store or the log has been out of reach, and the backoff between tries."""

    def __init__(self, patience_s: float, name: str) -> None:
        self.patience_s, self.name = patience_s, name
        self.began: float | None = None
        self.told = False
        self.delay = 0.1

    def answered(self) -> None:
        """The store answered again (the checkpoint was read): say so, once per outage."""
        if self.began is not None and not self.told:
            self.told = True
            _logger.warning("pipeline %r: the store and the log answer again; going on from its checkpoint",
                            self.name)

    def wait(self, exc: Exception, stop: threading.Event | None) -> bool:
        """Wait before the next try; raise ``exc`` (with what to do) once the patience is spent;
        ``False`` if ``stop`` was set meanwhile."""
        now = time.monotonic()
        if self.began is None:
            self.began = now
            _logger.warning("pipeline %r: %s; retrying from its checkpoint for up to %.0f s",
                            self.name, exc, self.patience_s)
        elif now - self.began >= self.patience_s:
            raise type(exc)(f"{exc} (gave up after {self.patience_s:.0f} s: bring it back, then start the "
                            "runner again)") from None
        if stop is not None:
            if stop.wait(self.delay):
                return False
        else:
            time.sleep(self.delay)
        self.delay = min(self.delay * 2, 2.0)
        return True


def _continues(location: Path, offsets: list[int]) -> bool:
    """Whether Spark, restarted from ``location``, reads on from ``offsets``: its
    last planned batch ends there (committed or replayed), or starts there and
    is not committed yet (replayed, new work)."""
    batches = sorted(int(f.name) for f in (location / "offsets").glob("[0-9]*")) if (
        location / "offsets").is_dir() else []
    if not batches:
        return False
    from fluvial.engine.spark.source import from_offsets

    def end_of(n: int) -> list[int] | None:
        try:
            lines = (location / "offsets" / str(n)).read_text().splitlines()
            return from_offsets(json.loads(lines[-1]))
        except (OSError, ValueError, KeyError, IndexError):
            return None

    last = batches[-1]
    if end_of(last) == offsets:
        return True
    committed = (location / "commits" / str(last)).exists()
    return not committed and last - 1 in batches and end_of(last - 1) == offsets


class _Item:
    def __init__(self, merged: Merged | None, error: BaseException | None) -> None:
        self.merged = merged
        self.handled = threading.Event()
        self.error = error


class _MicroBatches:
    """The ``foreachBatch`` function: one fluvial micro-batch per Spark micro-batch.

    Spark calls it on one of its threads; it runs the micro-batch on the executors
    there (:mod:`fluvial.engine.spark.micro`: they read the log ranges and compute;
    the merged view changes come back) and hands the result to the thread that
    called :meth:`SparkStreamRunner.run`, which commits it to the store (a store
    connection stays on its thread), then returns once it is committed -- so Spark
    marks its batch done only after the store has it.
    """

    def __init__(self, runner: SparkStreamRunner, plan: Plan, cp: Checkpoint, stats: RunStats,
                 max_batches: int | None) -> None:
        self.runner, self.plan, self.cp, self.stats = runner, plan, cp, stats
        self.max_batches = max_batches
        self.log_spec = spec_of(runner.log)   # what executors open: a URL, no shared filesystem
        self.executor = DriverExecutor(plan, stream=True, state=cp.state)
        self.lock = threading.Lock()
        self.queue: queue.Queue[_Item] = queue.Queue()
        self.done = False
        self.error: BaseException | None = None
        self.out = runner.out or sys.stdout

    def __call__(self, batch_df: Any, batch_id: int) -> None:  # on a Spark thread
        if self.done:
            return
        # The previous micro-batch is committed (its call returned only then): cp is current.
        job = plan_job(self.plan, self.log_spec, self.cp.offsets, self.executor.state,
                       complete=self.cp.complete_until is not None)
        merged: Merged | None = None
        error: BaseException | None = None
        try:
            merged = _spark_call(lambda: run_on_executors(batch_df, job))
        except Exception as exc:  # raised by the committing thread, as it is
            error = exc
        item = _Item(merged, error)
        with self.lock:
            if self.done:
                return  # stopping: left to the next run (the store checkpoint says where it starts)
            self.queue.put(item)
        item.handled.wait()
        if item.error is not None:
            raise RuntimeError(f"fluvial micro-batch failed: {item.error}")

    def serve(self, query: Any, stop: threading.Event | None) -> None:
        """Commit the micro-batches Spark computed until stopped, done, or the query ends."""
        try:
            while not (self.done or (stop is not None and stop.is_set())):
                try:
                    item = self.queue.get(timeout=0.05)
                except queue.Empty:
                    if not query.isActive:
                        break
                    continue
                try:
                    if item.error is not None:
                        raise item.error
                    assert item.merged is not None
                    self._micro_batch(item.merged)
                except BaseException as exc:
                    item.error = self.error = exc
                    raise
                finally:
                    item.handled.set()
                if self.max_batches is not None and self.stats.micro_batches >= self.max_batches:
                    break
        finally:
            with self.lock:
                self.done = True
            while not self.queue.empty():
                self.queue.get_nowait().handled.set()

    def _micro_batch(self, merged: Merged) -> None:
        runner, plan, cp = self.runner, self.plan, self.cp
        if merged.records == 0:
            return
        offsets = list(cp.offsets)
        for partition, end in merged.ends.items():
            offsets[partition] = end
        batch_time = int(time.time() * 1000)
        if runner.batch_interval_ms:
            batch_time -= batch_time % runner.batch_interval_ms
        self.executor.merged = merged
        try:
            runner.commit_micro_batch(plan, self.executor, cp, {}, offsets=offsets, sources=dict(cp.sources),
                                      records=merged.records, batch_time_ms=batch_time, stats=self.stats,
                                      out=self.out)
        finally:
            self.executor.merged = None
