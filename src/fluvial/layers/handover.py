"""The Lambda hand-over: where a batch run ends and where the speed layer starts are one decision.

A stream runner commits with every micro-batch where it is in the log (its
*offsets*); a batch run covers the log up to a *cut-off*.  They must meet
exactly: what a batch version covers, the realtime part must not hold, and
what the realtime part leaves out, a batch version must hold.  Every move of
one of them is ONE decision, taken inside one store transaction::

    log:       |==================================|.........
    batch:     |== version (cut-off) ========|                       take_cutoff()
    speed:                                   |== realtime ==|        checkpoint = cut-off, or later

* :func:`take_cutoff`: a batch run ends at the speed layer's checkpoint when
  micro-batches have committed realtime rows there, read in the transaction
  that seals the realtime generations those rows are in.  Otherwise (no
  checkpoint yet, one a batch run wrote with no micro-batch since, or one still
  replaying history to rebuild state) it ends at the end of the log, and
  :func:`finish_handover` writes that end as the speed layer's checkpoint in
  the transaction that publishes the batch versions: the speed layer starts
  where the batch version ends, whichever of them ran first, and a batch run
  that dies before its publish changes nothing.
* Fencing: a runner that read "no checkpoint" before a batch run published
  cannot commit from offset 0 on top of the new versions; its commit is void
  (:class:`~fluvial.errors.CheckpointFenced`), it reloads, and it goes on from
  the cut-off.
* :func:`rewind`: the log lost events the speed layer had counted (a torn tail,
  :func:`~fluvial.state.checkpoint.torn_partitions`), so the realtime part must
  not hold them: it is dropped and recomputed from the batch cut-off (and the
  batch version is dropped too when the cut reaches below its cut-off: the
  speed layer then recomputes the view from the start of the log until the next
  batch run).  The speed layer starts again as if it had no checkpoint.

**Workers** (:mod:`fluvial.state.groups`): the speed layer of a pipeline run by
``fluvial worker`` processes has one checkpoint per partition, and so does the
decision.  Partition ``p`` is cut at its checkpoint when that holds realtime
rows (its rows up to there are in the generations this transaction seals),
else at the end of the log, and the publish moves that partition's start
there.  The realtime rows of all partitions share the views' generations, so a
publish that finds a moving partition's checkpoint changed since the cut-off
(a worker committed from below it) drops the realtime part of every view and
puts every partition back at its cut-off: every worker's next commit is then
fenced (its checkpoint changed), and it goes on from there.  A batch run whose
cut-off was taken for a single runner, published after workers took the
pipeline, does the same.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

from fluvial.errors import ConfigError
from fluvial.state.checkpoint import (
    Checkpoint,
    Tail,
    checkpoint_id,
    initial_checkpoint,
    read_tails,
    torn_partitions,
)
from fluvial.state.groups import is_partitioned, partition_id

if TYPE_CHECKING:
    from fluvial.engine.plan import Plan
    from fluvial.log.base import LogReader
    from fluvial.serving.base import Txn, ViewStore

__all__ = ["Handover", "finish_handover", "rewind", "speed_offsets", "take_cutoff"]

_logger = logging.getLogger("fluvial.layers")


def rewind(store: ViewStore, txn: Txn, plan: Plan, log: LogReader, runner_id: str, cp: Checkpoint,
           torn: list[int]) -> None:
    """The log lost events the speed layer had counted: recompute the realtime part.

    In ``txn``: every realtime generation of the pipeline's views is dropped; so
    is their batch version if the log no longer holds what it covers; the
    checkpoint is deleted.  The speed layer then starts as a new one does, at
    the batch cut-off (or at the start of the log).
    """
    partitions = len(log.end_offsets())
    infos = [store.view(name) for name in plan.views]
    retract = any(info.cutoff is not None and torn_partitions(
        log, [int(info.cutoff.get(p, 0)) for p in range(partitions)], info.tails) for info in infos)
    for info in infos:
        txn.reset_realtime(info.name, retract=retract)
    txn.delete_checkpoint(runner_id)
    cut = next((info.cutoff for info in infos if info.cutoff is not None and not retract), None)
    _logger.warning(
        "pipeline %r: the log ends at offsets %s, but the checkpoint %r covered %s and partitions %s no "
        "longer hold what it covered (a torn tail was cut after a crash: those events are gone). "
        "The realtime part is recomputed from %s.", plan.name, log.end_offsets(), runner_id, cp.offsets, torn,
        "the start of the log (the batch version covered lost events too: it was dropped)" if retract
        else f"the batch cut-off {cut}" if cut else "the start of the log")


class Handover(NamedTuple):
    """A batch run that will also decide where the speed layer starts (at its publish).

    ``token`` and ``checkpoint``: the speed layer's checkpoint when the cut-off was
    taken (``None``: it had none); ``ends``: the cut-off, the end of the log then.
    ``partitions`` (workers only): per partition, its checkpoint's token when the
    cut-off was taken and whether the publish moves its start to the cut-off.
    """

    token: int | None
    checkpoint: Checkpoint | None
    ends: list[int]
    partitions: list[tuple[int | None, bool]] | None = None


def take_cutoff(store: ViewStore, txn: Txn, plan: Plan, log: LogReader, *, own_log: bool
                ) -> tuple[list[int], list[Tail | None] | None, Handover | None]:
    """Where a batch run of ``plan`` ends in ``log``, decided in ``txn`` (which also seals
    the realtime generations): the offsets, the identities there, and a
    :class:`Handover` when the speed layer's start moves with the publish.

    ``own_log``: ``log`` is the log the speed layer reads.  A checkpoint beyond its
    end is then a torn tail, rewound here; beyond the end of another input (an
    older export) it is refused, since the batch version would not cover the
    realtime part it replaces.
    """
    if is_partitioned(txn, plan.name):
        return _take_partitioned(store, txn, plan, log, own_log=own_log)
    runner_id = checkpoint_id(plan.name)
    blob = txn.get_checkpoint(runner_id)
    cp = Checkpoint.loads(blob) if blob is not None else None
    ends = log.end_offsets()
    if cp is not None and own_log and plan.fits(cp.fingerprint) and len(cp.offsets) == len(ends):
        torn = torn_partitions(log, cp.offsets, cp.tails)
        if torn:
            rewind(store, txn, plan, log, runner_id, cp, torn)
            cp = None
    if cp is None or (plan.fits(cp.fingerprint) and not cp.holds_realtime):
        # No realtime rows past a cut-off yet: the batch version takes the whole log, and
        # its publish moves the speed layer's start to its end (finish_handover).
        handover = Handover(txn.checkpoint_token(runner_id), cp, list(ends))
        return list(ends), read_tails(log, ends) if own_log else None, handover
    cut = _checked_cut(plan, cp, ends)
    if not own_log:
        return list(cut), None, None
    tails = cp.tails if cp.warmup_until is None and cp.tails is not None else read_tails(log, cut)
    return list(cut), tails, None


def finish_handover(txn: Txn, plan: Plan, log: LogReader, handover: Handover, *, own_log: bool) -> None:
    """In the transaction that publishes the batch versions: the speed layer starts at their cut-off.

    If a micro-batch committed since the cut-off was taken (the speed layer started
    below it, having no checkpoint then), its realtime rows overlap the new versions:
    they are dropped, and the speed layer recomputes from the cut-off.  Runners that
    read an older checkpoint are fenced by the new one.  A batch run that dies before
    this transaction changes nothing: the speed layer just goes on.
    """
    if is_partitioned(txn, plan.name):   # workers run it (or took it since the cut-off)
        _finish_partitioned(txn, plan, log, handover, own_log=own_log)
        return
    runner_id = checkpoint_id(plan.name)
    unchanged = txn.checkpoint_token(runner_id) == handover.token
    if not unchanged:
        for name in plan.views:
            txn.reset_realtime(name)
    old = handover.checkpoint
    if unchanged and old is not None and old.warmup_until is not None:
        old.warmup_until = list(handover.ends)   # still rebuilding state: now up to the new cut-off
        new = old
    else:
        new = initial_checkpoint(plan, len(handover.ends), handover.ends, log=log if own_log else None)
    txn.set_checkpoint(runner_id, new.dumps())


def speed_offsets(txn: Txn, pipeline: str, partitions: int) -> list[int] | None:
    """Where the speed layer of ``pipeline`` is in the log (its checkpoint, or each
    partition's when workers run it); ``None``: it has not started."""
    if not is_partitioned(txn, pipeline):
        blob = txn.get_checkpoint(checkpoint_id(pipeline))
        return None if blob is None else list(Checkpoint.loads(blob).offsets)
    blobs = [txn.get_checkpoint(partition_id(pipeline, p)) for p in range(partitions)]
    if all(b is None for b in blobs):
        return None
    return [Checkpoint.loads(b).offsets[0] if b is not None else 0 for b in blobs]


def _checked_cut(plan: Plan, cp: Checkpoint, ends: list[int]) -> list[int]:
    cut = cp.offsets if cp.warmup_until is None else [max(o, w) for o, w in zip(cp.offsets, cp.warmup_until)]
    if any(c > e for c, e in zip(cut, ends)):
        raise ConfigError(
            f"the input of {plan.name!r} ends at offsets {ends}, before its stream checkpoint {cut}: "
            "the batch view would not cover the realtime part it replaces. Export the log again "
            "(`fluvial log export`) or read the log itself")
    return list(cut)


def _take_partitioned(store: ViewStore, txn: Txn, plan: Plan, log: LogReader, *, own_log: bool
                      ) -> tuple[list[int], list[Tail | None] | None, Handover]:
    """:func:`take_cutoff` for a pipeline run by workers: one decision per partition, in ``txn``."""
    from fluvial.engine.partitioned import PartitionSlice

    ends = log.end_offsets()
    ids = [partition_id(plan.name, p) for p in range(len(ends))]

    def read() -> list[Checkpoint | None]:
        blobs = [txn.get_checkpoint(pid) for pid in ids]
        return [Checkpoint.loads(b) if b is not None else None for b in blobs]

    cps = read()
    if own_log:
        torn = [p for p, cp in enumerate(cps) if cp is not None and plan.fits(cp.fingerprint) and len(cp.offsets) == 1
                and torn_partitions(PartitionSlice(log, p), cp.offsets, cp.tails)]
        if torn:
            _rewind_partitions(store, txn, plan, log, ids, torn)
            cps = read()
    cut: list[int] = []
    states: list[tuple[int | None, bool]] = []
    for p, (pid, cp) in enumerate(zip(ids, cps)):
        moves = cp is None or (plan.fits(cp.fingerprint) and not cp.holds_realtime)
        cut.append(ends[p] if moves else _checked_cut(plan, cp, [ends[p]])[0])   # type: ignore[arg-type]
        states.append((txn.checkpoint_token(pid), moves))
    return cut, read_tails(log, cut) if own_log else None, Handover(None, None, cut, states)


def _rewind_partitions(store: ViewStore, txn: Txn, plan: Plan, log: LogReader, ids: list[str],
                       torn: list[int]) -> None:
    """:func:`rewind` for workers: the realtime part of every partition is recomputed."""
    partitions = len(ids)
    infos = [store.view(name) for name in plan.views]
    retract = any(info.cutoff is not None and torn_partitions(
        log, [int(info.cutoff.get(p, 0)) for p in range(partitions)], info.tails) for info in infos)
    for info in infos:
        txn.reset_realtime(info.name, retract=retract)
    for pid in ids:
        txn.delete_checkpoint(pid)
    _logger.warning(
        "pipeline %r: the log ends at offsets %s, but partitions %s no longer hold what their workers' "
        "checkpoints covered (a torn tail was cut after a crash: those events are gone). The realtime part "
        "of every partition is recomputed from %s.", plan.name, log.end_offsets(), torn,
        "the start of the log (the batch version covered lost events too: it was dropped)" if retract
        else "the batch cut-off")


def _finish_partitioned(txn: Txn, plan: Plan, log: LogReader, handover: Handover, *, own_log: bool) -> None:
    """:func:`finish_handover` for a pipeline run by workers (see the module's docstring)."""
    from fluvial.engine.partitioned import PartitionSlice

    ids = [partition_id(plan.name, p) for p in range(len(handover.ends))]
    states = handover.partitions
    if states is None:   # taken for a single runner that had no realtime rows; workers took over since
        states = [(None, True)] * len(ids)
        changed = True
    else:
        changed = any(moves and txn.checkpoint_token(pid) != token for pid, (token, moves) in zip(ids, states))
    if changed:   # a worker committed below a moving cut-off: every partition starts again at its cut-off
        for name in plan.views:
            txn.reset_realtime(name)
    for p, (pid, (_, moves)) in enumerate(zip(ids, states)):
        if changed or moves:
            part = PartitionSlice(log, p) if own_log else None
            txn.set_checkpoint(pid, initial_checkpoint(plan, 1, [handover.ends[p]], log=part).dumps())
