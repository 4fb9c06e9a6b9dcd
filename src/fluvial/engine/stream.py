"""The local stream runner: the speed layer.

Micro-batches: every ``batch_interval_ms`` the runner reads what the log
gained since its committed offsets (at most ``max_batch_records``), runs the
plan with the state carried from the previous micro-batch, and then commits
-- in ONE store transaction -- the view changes, the ``save_to`` rows, the
operator state and the offsets it consumed.  A crash at any point rolls the
transaction back; the restarted runner reads the same records again from the
committed offsets and, since per-partition watermarks depend only on log
order, computes the same result: the effect is exactly once.  ``print`` and
``foreach`` sinks run before the commit, so they are at-least-once.

Writers are fenced twice.  A runner first claims its pipeline in the store
(:mod:`fluvial.state.ownership`): a second runner is refused, naming the
first, unless it waits for it (``wait_s``) or takes it over (``take_over``),
and each commit holds only while the runner's ownership epoch does -- a
paused runner that wakes up after a take-over commits nothing.  And a runner
commits only on top of the checkpoint it read.  Where the speed layer starts and where a batch run ends is one decision
(:mod:`fluvial.layers.handover`), and a checkpoint that the log no longer
backs (a torn tail cut after a crash) is rewound when the runner starts.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from fluvial.engine.batch import RunStats
from fluvial.engine.execute import Chunk, Executor
from fluvial.engine.files import check_file_sinks, micro_batch_part, write_part
from fluvial.engine.plan import Plan, compile_plan
from fluvial.engine.sources import LazyLog, log_chunks, log_sources, memory_chunks, plan_splits, read_split
from fluvial.engine.streamable import check_streamable
from fluvial.engine.targets import save_target
from fluvial.errors import (
    CheckpointFenced,
    ConfigError,
    LogUnreachable,
    OwnedElsewhere,
    StoreUnavailable,
    UnsupportedOperation,
)
from fluvial.flow.graph import Flow, Pipeline
from fluvial.layers.handover import rewind
from fluvial.serving.base import REALTIME
from fluvial.state.checkpoint import (
    Checkpoint,
    Tail,
    check_fits,
    checkpoint_id,
    initial_checkpoint,
    read_tails,
    torn_partitions,
)
from fluvial.state.groups import check_not_partitioned, check_single_runner_allowed, torn_refusal
from fluvial.state.ownership import DEFAULT_LEASE_MS, Owner, Ownership, claim

if TYPE_CHECKING:
    from fluvial.log.base import LogReader
    from fluvial.serving.base import Txn, ViewStore

__all__ = ["StreamRun", "StreamRunner"]
_logger = logging.getLogger("fluvial.engine")
_IDLE_POLL_S = 0.02
"""How often an idle runner with ``batch_interval_ms=0`` looks for new records."""


class StreamRunner(LazyLog):
    """Runs a pipeline continuously over the log in micro-batches.

    Args:
        log: The event log (or a callable opening it when first needed).
        store: The serving store (views, ``save_to`` tables and checkpoints), or a callable
            opening it when first needed.
        batch_interval_ms: Time between the starts of two micro-batches.
        max_batch_records: At most this many log records per micro-batch.
        runner_id: Names the checkpoint (default: the pipeline's name).
        out: Where ``print()`` sinks write.
        view_parts: Write these views into a batch version (view -> version number)
            instead of their realtime part: Kappa reprocessing builds ``name@vN+1``
            this way while ``name@vN`` keeps serving.  Such a run replays the log with
            the completeness of a batch run: no event in it is beyond the correction
            horizon of a windowed view (:mod:`fluvial.windows.watermark`).
        start_offsets: Where a runner without a checkpoint starts in the log (default:
            the cut-off of the views' batch versions, or the beginning).
        take_over: Claim the pipeline even if another live runner holds it; that one's
            next commit is refused (:class:`~fluvial.errors.LeaseLost`) and it stops.
        wait_s: How long to wait for another runner holding the pipeline to stop (or to
            be silent for ``lease_ms``) before :class:`~fluvial.errors.OwnedElsewhere`.
        lease_ms: How long this runner may be silent (paused, cut off) before a rival
            may claim the pipeline (it renews its claim every ``lease_ms / 4``).
        owner: Who this runner says it is in refusals (default: this process).
        store_patience_s: How long :meth:`run` rides out a store or a log it cannot reach (a
            PostgreSQL restart, a NATS leader election: :class:`~fluvial.errors.StoreUnavailable`,
            :class:`~fluvial.errors.LogUnreachable`), retrying from its checkpoint with backoff,
            before it gives up with that error.
        guard: Called with every commit's transaction before it writes; raising voids the
            commit.  Default, for a pipeline's own speed layer (no ``runner_id``, no
            ``view_parts``): refuse a pipeline run by ``fluvial worker`` processes
            (:mod:`fluvial.state.groups`).  A worker's partition runner passes its own.
        rewind_torn: A checkpoint the log no longer backs (a torn tail) is rewound
            (:func:`~fluvial.layers.handover.rewind`); ``False``: refused (a worker's partition).

    Attributes:
        progress: After each micro-batch: ``offsets`` (committed, per partition),
            ``micro_batches``, ``records``, ``late_events`` (of the served views: what
            their version counted, see :attr:`ViewInfo.late_events`), ``last_batch_ms``
            (wall time of the last micro-batch) and ``committed_at`` (epoch s).
            Read by ``fluvial serve`` for lag and metrics.
    """

    def __init__(self, *, log: LogReader | Callable[[], LogReader] | None = None,
                 store: ViewStore | Callable[[], ViewStore] | None = None,
                 batch_interval_ms: int = 1000,
                 max_batch_records: int = 250_000, runner_id: str | None = None,
                 out: TextIO | None = None, view_parts: dict[str, int] | None = None,
                 start_offsets: list[int] | None = None, take_over: bool = False, wait_s: float = 0.0,
                 lease_ms: int = DEFAULT_LEASE_MS, owner: Owner | None = None,
                 store_patience_s: float = 300.0, guard: Callable[[Txn], None] | None = None,
                 rewind_torn: bool = True) -> None:
        if batch_interval_ms < 0 or max_batch_records <= 0:
            raise ConfigError("batch_interval_ms must be >= 0 and max_batch_records > 0")
        if lease_ms <= 0 or wait_s < 0:
            raise ConfigError(f"lease_ms must be > 0 and wait_s >= 0, got {lease_ms} and {wait_s}")
        self._log = log
        self._store = store
        self.batch_interval_ms = batch_interval_ms
        self.max_batch_records = max_batch_records
        self.runner_id = runner_id
        self.out = out
        self.view_parts = dict(view_parts or {})
        self.start_offsets = None if start_offsets is None else list(start_offsets)
        self.progress: dict[str, Any] = {}
        self._token: int | None = None   # the fencing token of the checkpoint this runner read
        self.take_over, self.wait_s, self.lease_ms = take_over, wait_s, lease_ms
        self.owner = owner
        self.store_patience_s = store_patience_s
        self._stop: threading.Event | None = None  # set while run() waits for a claim
        self._ownership: Ownership | None = None  # this runner's claim on its checkpoint
        self.guard, self.rewind_torn = guard, rewind_torn

    def claim(self, plan: Pipeline | Plan, *, stop: threading.Event | None = None) -> Ownership:
        """Claim the pipeline's checkpoint for this runner (see :mod:`fluvial.state.ownership`);
        every commit then holds only while the claim does.  Release it when done.  ``stop``
        ends a wait (``wait_s``) early.

        Raises:
            OwnedElsewhere: Another live runner holds it (after ``wait_s``); the message names it.
        """
        if stop is not None:
            self._stop = stop
        if self._ownership is not None:
            self._ownership.release()
        lease = claim(self.store, self.checkpoint_id(plan), self.owner, lease_ms=self.lease_ms,
                      take_over=self.take_over, wait_s=self.wait_s, on_wait=_say_waiting, stop=self._stop,
                      hint=f"Pipeline {plan.name!r} runs there already: stop it, or start this runner "
                           "with --wait (to follow it) or --take-over (to fence it off now).")
        self._ownership = Ownership(self.store, lease)
        return self._ownership

    def holds(self, plan: Pipeline | Plan) -> bool:
        """Whether this runner holds (as far as it knows) the claim on ``plan``'s checkpoint."""
        owned = self._ownership
        return owned is not None and owned.lost is None and owned.lease.resource == self.checkpoint_id(plan)

    def release(self) -> None:
        """Give up this runner's claim (it stops renewing; a rival may claim at once)."""
        if self._ownership is not None:
            self._ownership.release()
            self._ownership = None

    def collect(self, flow: Flow[Any]) -> list[Any]:
        """Refused: an action returns a final value, and a stream has no end."""
        raise UnsupportedOperation(
            f"{flow!r}: actions (collect, count, take, ...) return a final value, and a stream run has no "
            "end to return it at. Run the action on a batch runner (the default: flow.collect()), or give "
            "the stream a sink: to_view(), save_as_json_lines(), foreach()")

    def checkpoint_id(self, pipeline: Pipeline | Plan) -> str:
        """The key of this runner's checkpoint in the store."""
        return self.runner_id or checkpoint_id(pipeline.name)

    def start(self, pipeline: Pipeline) -> StreamRun:
        """Attach ``pipeline``: claim it (unless this runner holds it), load its checkpoint (or
        make a first one); then :meth:`StreamRun.step` runs one micro-batch at a time
        (:meth:`run` loops over it).  :meth:`release` gives the claim up.

        Raises:
            OwnedElsewhere: Another live runner holds the pipeline (see ``take_over``, ``wait_s``).
        """
        plan = compile_plan(pipeline)
        if not self.has_store:
            raise ConfigError("a stream runner commits to a store: give it one "
                              "(fluvial.open(DATA_DIR).stream_runner(), or `fluvial run`)")
        reads_log = bool(log_sources(plan))
        if reads_log and not self.has_log:
            raise ConfigError(f"pipeline {plan.name!r} reads the log: give the runner a log")
        check_streamable(plan)
        check_file_sinks(plan)
        for name, spec in plan.views.items():
            if name not in self.view_parts:  # a version being built has its own aggregator (begin_version)
                self.store.define_view(name, aggregator=spec.aggregator, window=spec.window)
        if self.view_parts:
            with self.store.transaction() as txn:  # a version a replay writes counts its own late events
                for name, version in self.view_parts.items():
                    txn.add_late_events(name, 0, part=version)
        if self._own_speed_layer:
            check_single_runner_allowed(self.store, plan.name, self.log.partitions if reads_log else 0)
        claimed = not self.holds(plan)
        if claimed:
            self.claim(plan)
        try:
            return StreamRun(self, plan, reads_log)
        except StoreUnavailable:
            raise   # keep the claim: the caller retries once the store is back (or releases it)
        except BaseException:
            if claimed:
                self.release()
            raise

    def run(self, pipeline: Pipeline, *, until_caught_up: bool = False, max_batches: int | None = None,
            stop: threading.Event | None = None) -> RunStats:
        """Process micro-batches until ``stop`` is set, ``max_batches`` ran, or (with
        ``until_caught_up``) the input holds nothing more."""
        claimed = not self.holds(pipeline)  # else the caller claimed it for several runs
        self._stop = stop
        try:
            run = self._ride_out(lambda: self.start(pipeline), pipeline.name, stop)
            if run is None:   # stopped while the store was away
                return RunStats(pipeline.name, "stream")
        except OwnedElsewhere:
            if stop is not None and stop.is_set():   # stopped while waiting for the pipeline
                return RunStats(pipeline.name, "stream")
            raise
        stats = run.stats
        self.progress = run.progress(0.0)
        started = time.perf_counter()
        try:
            while not (stop is not None and stop.is_set()):
                if max_batches is not None and stats.micro_batches >= max_batches:
                    break
                tick = time.monotonic()
                records = self._step(run, stop)
                if records is None:
                    if until_caught_up:
                        break
                    self._sleep(tick, stop, idle=True)
                    continue
                self.progress = run.progress((time.monotonic() - tick) * 1000)
                if records < self.max_batch_records and not until_caught_up:
                    self._sleep(tick, stop)
        finally:
            if claimed:
                self.release()
        stats.seconds = time.perf_counter() - started
        return stats

    def commit_micro_batch(self, plan: Plan, executor: Executor, cp: Checkpoint,
                           inputs: dict[int, list[Chunk]], *, offsets: list[int], sources: dict[int, int],
                           records: int, batch_time_ms: int, stats: RunStats, out: TextIO,
                           tails: list[Tail | None] | None = None) -> None:
        """Run one micro-batch and commit it: view changes, ``save_to`` rows, late counts,
        state and the offsets it consumed, in ONE store transaction (the exactly-once
        effect); then the idempotent writes to other stores and the prints.  Shared by
        every stream runner, whatever reads the log for it.

        The checkpoint is written only if it is still the one this runner read
        (fencing): otherwise :class:`~fluvial.errors.CheckpointFenced` is raised, nothing
        is committed, and ``cp``/``executor`` are stale (reload them).  ``tails``: the
        identity of the last event read per partition (see :mod:`.checkpoint`).
        """
        executor.complete = bool(self.view_parts) or cp.complete_until is not None
        output = executor.run(inputs, batch_time_ms=batch_time_ms, stamp=(1, cp.micro_batches))
        if cp.complete_until is not None and all(o >= c for o, c in zip(offsets, cp.complete_until)):
            cp.complete_until = None   # the history is replayed: from here on, events are live
        if cp.warmup_until is None:
            # Before the commit: a crash in between replays this micro-batch, which rewrites its files.
            for node, elements in output.files:
                write_part(node, elements, micro_batch_part(node, cp.micro_batches))
        else:
            # History the batch views already cover: keep the state, not the aggregate
            # view changes nor file output (latest-value views take the replayed values).
            for name, spec in plan.views.items():
                if spec.source.op == "aggregate":
                    output.view_merges.pop(name, None)
            output.late.clear()  # counted when these events were first streamed
            if all(o >= c for o, c in zip(offsets, cp.warmup_until)):
                cp.warmup_until = None
        cp.tails = _next_tails(cp, offsets, tails)
        cp.offsets, cp.sources = offsets, sources
        cp.micro_batches += 1
        with self.store.transaction() as txn:
            if self._ownership is not None:
                txn.fence(self._ownership.lease)   # LeaseLost: another runner took over
            if self.guard is not None:
                self.guard(txn)
            elif self._own_speed_layer:
                check_not_partitioned(txn, plan.name)   # workers run this pipeline: never both
            for name, rows in output.view_merges.items():
                txn.merge_rows(name, rows, part=self.view_parts.get(name, REALTIME))
            for pos, n in output.late.items():
                for name, spec in plan.views.items():
                    if plan.index[spec.source.id] == pos:  # a replay counts for the version it writes
                        txn.add_late_events(name, n, part=self.view_parts.get(name, REALTIME))
            for node, rows in output.saves:
                if node.params["store"] is None:
                    txn.save_rows(node.params["table"], node.params["columns"], rows,
                                  key_columns=node.params["key_columns"])
            token = txn.set_checkpoint(self.checkpoint_id(plan), cp.dumps(), expect=self._token)
        self._token = token
        for node, rows in output.saves:  # other stores: after the commit, idempotent upserts
            if node.params["store"] is not None:
                with save_target(node.params["store"]).transaction() as other:
                    other.save_rows(node.params["table"], node.params["columns"], rows,
                                    key_columns=node.params["key_columns"])
        for text in output.prints:
            out.write(text + "\n")
        if output.prints:
            out.flush()
        stats.micro_batches += 1
        stats.records_in += records
        stats.late_events += sum(output.late.values())

    # -- internals -----------------------------------------------------------------------
    def _step(self, run: StreamRun, stop: threading.Event | None) -> int | None:
        """One micro-batch; while the store or log cannot be reached, retry from the checkpoint: a
        commit whose answer was lost is found out by reloading it (nothing twice, nothing skipped)."""
        try:
            return run.step()
        except (StoreUnavailable, LogUnreachable) as exc:
            _logger.warning("pipeline %r: %s", run.plan.name, exc)
        return None if self._ride_out(run.reload, run.plan.name, stop, failed=True) is None else 0

    def _ride_out(self, work: Callable[[], Any], name: str, stop: threading.Event | None, *,
                  failed: bool = False) -> Any:
        """``work()``, retried with backoff while the store or the log cannot be reached, up to
        ``store_patience_s``; ``None`` if ``stop`` was set meanwhile (``failed``: wait first)."""
        deadline = time.monotonic() + self.store_patience_s
        delay = 0.1
        while True:
            if failed:
                if stop is not None and stop.wait(delay):
                    return None
                if stop is None:
                    time.sleep(delay)
                delay = min(delay * 2, 2.0)
            try:
                result = work()
            except (StoreUnavailable, LogUnreachable) as exc:
                if time.monotonic() >= deadline:
                    raise type(exc)(f"{exc} (gave up after {self.store_patience_s:.0f} s: bring it back, "
                                    "then start the runner again)") from None
                if not failed:
                    _logger.warning("pipeline %r: %s; retrying for up to %.0f s", name, exc, self.store_patience_s)
                failed = True
                continue
            if failed:
                _logger.warning("pipeline %r: the store and the log answer again; going on from its checkpoint", name)
            return result

    @property
    def _own_speed_layer(self) -> bool:
        """Whether this runner is its pipeline's single speed-layer runner (not a replay, not a worker)."""
        return self.runner_id is None and not self.view_parts and self.guard is None

    def _load(self, plan: Plan, reads_log: bool) -> Checkpoint:
        """The checkpoint of ``plan``, and its fencing token (``self._token``), read in one
        transaction; a checkpoint covering events the log lost (a torn tail) is rewound."""
        runner_id = self.checkpoint_id(plan)
        partitions = self.log.partitions if reads_log else 0
        with self.store.transaction() as txn:
            if self._ownership is not None:
                txn.fence(self._ownership.lease)   # a rewind below writes: only while this runner owns
            blob = txn.get_checkpoint(runner_id)
            cp = self._checked(plan, Checkpoint.loads(blob), partitions) if blob is not None else None
            if cp is not None and reads_log and not self.view_parts:
                torn = torn_partitions(self.log, cp.offsets, cp.tails)
                if torn and not self.rewind_torn:
                    raise torn_refusal(runner_id, cp.offsets)
                if torn:
                    rewind(self.store, txn, plan, self.log, runner_id, cp, torn)
                    cp = None
            self._token = txn.checkpoint_token(runner_id)
            if cp is None:
                cp = self._fresh(plan, partitions)
        return cp

    @staticmethod
    def _checked(plan: Plan, cp: Checkpoint, partitions: int) -> Checkpoint:
        check_fits(plan, cp)
        if len(cp.offsets) != partitions:
            raise ConfigError(f"checkpoint of {plan.name!r} has {len(cp.offsets)} partitions, "
                              f"the log has {partitions}")
        return cp

    def _fresh(self, plan: Plan, partitions: int) -> Checkpoint:
        """A first checkpoint: at ``start_offsets``, or where the batch versions of the
        pipeline's views end (see :func:`~fluvial.state.checkpoint.initial_checkpoint`).
        What the log holds beyond is history: it is replayed with nothing beyond a view's
        correction horizon (``complete_until``), as a batch run would take it."""
        cp = self._first(plan, partitions)
        if partitions:
            ends = self.log.end_offsets()
            if any(e > o for e, o in zip(ends, cp.offsets)):
                cp.complete_until = list(ends)
        return cp

    def _first(self, plan: Plan, partitions: int) -> Checkpoint:
        log = self.log if partitions else None
        if self.start_offsets is not None:
            if len(self.start_offsets) != partitions:
                raise ConfigError(f"start_offsets has {len(self.start_offsets)} partitions, the log has "
                                  f"{partitions}")
            cp = Checkpoint(plan.fingerprint, list(self.start_offsets), shape=list(plan.shape))
            cp.tails = read_tails(log, cp.offsets) if log is not None else None
            return cp
        cutoffs = {json_key(self.store.view(name).cutoff) for name in plan.views}
        cutoffs.discard(None)
        if not cutoffs or not partitions:
            return initial_checkpoint(plan, partitions, log=log)
        if len(cutoffs) > 1:
            raise ConfigError(f"the views of pipeline {plan.name!r} have batch versions with different "
                              "log cut-offs; run the batch layer once for the whole pipeline first")
        cut = dict(cutoffs.pop())  # type: ignore[arg-type]
        return initial_checkpoint(plan, partitions, [int(cut.get(p, 0)) for p in range(partitions)], log=log)

    def _late_count(self, plan: Plan) -> int:
        """The late events the served views hold so far (one view per aggregation)."""
        if self.view_parts:
            return 0
        first: dict[int, str] = {}
        for name, spec in plan.views.items():
            first.setdefault(plan.index[spec.source.id], name)
        return sum(self.store.view(name).late_events for name in first.values())

    def _read(self, plan: Plan, cp: Checkpoint
              ) -> tuple[dict[int, list[Chunk]], list[int], dict[int, int], int, int, list[Tail | None]]:
        inputs: dict[int, list[Chunk]] = {}
        offsets = list(cp.offsets)
        tails = _next_tails(cp, offsets, None)
        records = 0
        batch_time = int(time.time() * 1000)
        if self.batch_interval_ms:
            batch_time -= batch_time % self.batch_interval_ms
        if offsets:
            per_partition = max(1, self.max_batch_records // len(offsets))
            for partition, start in enumerate(offsets):
                limit = per_partition
                for until in (cp.warmup_until, cp.complete_until):
                    if until is not None:
                        # Replaying history: no partition goes past its end until all reach it.
                        limit = min(limit, until[partition] - start)
                if limit <= 0:
                    continue
                batch = self.log.read(partition, start, max_records=limit)
                if not batch.events:
                    continue
                offsets[partition] = batch.next_offset
                tails[partition] = [batch.events[-1].device, batch.events[-1].seq, batch.append_ms[-1]]
                records += len(batch.events)
                for node_id, chunks in log_chunks(plan, partition, batch.events, batch.append_ms).items():
                    inputs.setdefault(node_id, []).extend(chunks)
        sources = dict(cp.sources)
        for node in plan.sources:
            pos = plan.index[node.id]
            if node.op in ("queue", "rate"):
                p = node.params
                take: int | None
                if node.op == "queue":
                    take = 1 if p["one_at_a_time"] else None
                else:
                    take = max(1, p["per_second"] * max(self.batch_interval_ms, 1) // 1000)
                chunks, new_pos, first_ts = memory_chunks(plan, node, sources.get(pos, 0), take)
                sources[pos] = new_pos
                if first_ts is not None:
                    batch_time = first_ts
                inputs[node.id] = chunks
                records += sum(len(c.values) for c in chunks)
            elif node.op in ("text", "jsonl") and not sources.get(pos):
                # Files are bounded: the first micro-batch takes the whole file.
                for split, _ in plan_splits(plan, None, slice_records=1, sources=[node]):
                    for node_id, chunks in read_split(plan, split, None).items():
                        inputs.setdefault(node_id, []).extend(chunks)
                sources[pos] = 1
                records += sum(len(c.values) for c in inputs.get(node.id, []))
        return inputs, offsets, sources, records, batch_time, tails

    def _sleep(self, tick: float, stop: threading.Event | None, *, idle: bool = False) -> None:
        interval = self.batch_interval_ms / 1000
        if idle:
            interval = max(interval, _IDLE_POLL_S)   # nothing new: poll, do not spin
        delay = interval - (time.monotonic() - tick)
        if delay > 0:
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)


def _say_waiting(exc: Exception) -> None:
    _logger.warning("%s Waiting for it to stop.", exc)


def json_key(cutoff: dict[int, int] | None) -> tuple[tuple[int, int], ...] | None:
    return None if cutoff is None else tuple(sorted((int(p), int(o)) for p, o in cutoff.items()))


def _next_tails(cp: Checkpoint, offsets: list[int], tails: list[Tail | None] | None) -> list[Tail | None]:
    """The tails of a checkpoint moving to ``offsets``: those given, else the old ones
    where a partition did not move (unknown where it did)."""
    if tails is not None:
        return list(tails)
    old = cp.tails or [None] * len(cp.offsets)
    return [t if o == c else None for t, o, c in zip(old, offsets, cp.offsets)]


class StreamRun:
    """A pipeline attached to a :class:`StreamRunner` (:meth:`StreamRunner.start`):
    one micro-batch per :meth:`step`.

    Attributes:
        plan: The compiled pipeline.
        cp: Its checkpoint, as last committed (or loaded).
        stats: What the micro-batches of this run did.
    """

    def __init__(self, runner: StreamRunner, plan: Plan, reads_log: bool) -> None:
        self.runner = runner
        self.plan = plan
        self.reads_log = reads_log
        self.stats = RunStats(plan.name, "stream")
        self.out = runner.out or sys.stdout
        self.reload()

    def reload(self) -> None:
        """(Re)read the checkpoint from the store; rewinds it if the log lost what it covered."""
        self.cp = self.runner._load(self.plan, self.reads_log)
        self.executor = Executor(self.plan, stream=True, state=self.cp.state, complete=bool(self.runner.view_parts))
        self._late_base = self.runner._late_count(self.plan) - self.stats.late_events

    def step(self) -> int | None:
        """Read what the input gained since the checkpoint, run it, commit it.

        Returns the records committed; ``None`` when there was nothing new; ``0`` when
        another writer had replaced the checkpoint (a batch run that handed over its
        cut-off): the micro-batch, if any, is void, and the run goes on from the new
        checkpoint (also when idle: the hand-over may move it back).
        """
        cp = self.cp
        if self.runner._ownership is not None:
            self.runner._ownership.check()   # the heartbeat found the pipeline taken over
        inputs, offsets, sources, records, batch_time, tails = self.runner._read(self.plan, cp)
        if records == 0 and sources == cp.sources:
            if self.runner.store.checkpoint_token(self.runner.checkpoint_id(self.plan)) != self.runner._token:
                self.reload()   # handed over while idle (a batch run moved the start): go on from there
                return 0
            return None
        try:
            self.runner.commit_micro_batch(self.plan, self.executor, cp, inputs, offsets=offsets,
                                           sources=sources, records=records, batch_time_ms=batch_time,
                                           stats=self.stats, out=self.out, tails=tails)
        except CheckpointFenced as exc:
            _logger.info("pipeline %r: %s", self.plan.name, exc)
            self.reload()
            return 0
        return records

    def progress(self, last_batch_ms: float) -> dict[str, Any]:
        """What ``StreamRunner.progress`` shows after a micro-batch."""
        return {"offsets": list(self.cp.offsets), "micro_batches": self.stats.micro_batches,
                "records": self.stats.records_in, "late_events": self._late_base + self.stats.late_events,
                "last_batch_ms": last_batch_ms, "committed_at": time.time()}
