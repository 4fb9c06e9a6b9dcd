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
from fluvial.state.groups import check_not_partitioned

if TYPE_CHECKING:
    from fluvial.engine.plan import Plan
    from fluvial.log.base import LogReader
    from fluvial.serving.base import Txn, ViewStore

__all__ = ["Handover", "finish_handover", "rewind", "take_cutoff"]

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
    """

    token: int | None
    checkpoint: Checkpoint | None
    ends: list[int]


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
    runner_id = checkpoint_id(plan.name)
    check_not_partitioned(txn, plan.name)   # workers' per-partition checkpoints: no hand-over (yet)
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
    cut = cp.offsets if cp.warmup_until is None else [max(o, w) for o, w in zip(cp.offsets, cp.warmup_until)]
    if any(c > e for c, e in zip(cut, ends)):
        raise ConfigError(
            f"the input of {plan.name!r} ends at offsets {ends}, before its stream checkpoint {cut}: "
            "the batch view would not cover the realtime part it replaces. Export the log again "
            "(`fluvial log export`) or read the log itself")
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
    runner_id = checkpoint_id(plan.name)
    check_not_partitioned(txn, plan.name)   # workers started since the cut-off: the publish is void
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
