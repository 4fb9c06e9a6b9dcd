"""The speed layer's checkpoint, and the hand-over between the batch and the speed layer.

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
* Fencing: a stream runner writes its checkpoint only if it is still the one
  it read (``Txn.set_checkpoint(..., expect=token)``).  A runner that read "no
  checkpoint" before a batch run published cannot commit from offset 0 on top
  of the new versions; its commit is void
  (:class:`~fluvial.errors.CheckpointFenced`), it reloads, and it goes on from
  the cut-off.
* :func:`torn_partitions`: whether the log still holds what a checkpoint or a
  cut-off covers.  A crash can tear the tail of the log (its writer cuts a torn
  tail on open), and new events then reuse the offsets.  Each checkpoint and
  each cut-off read from the log keeps, per partition, the identity of the
  event just before it (``[device, seq, append_ms]``): a cut is found even
  after new events filled the offsets again.
* :func:`rewind`: the events past the cut are gone, so the realtime part must
  not hold them: it is dropped and recomputed from the batch cut-off (and the
  batch version is dropped too when the cut reaches below its cut-off: the
  speed layer then recomputes the view from the start of the log until the next
  batch run).  The speed layer starts again as if it had no checkpoint.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from fluvial.engine.execute import ExecState
from fluvial.engine.plan import Plan
from fluvial.errors import ConfigError, LogError

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "Handover", "check_fits", "checkpoint_id", "finish_handover", "has_state",
           "initial_checkpoint", "read_tails", "rewind", "take_cutoff", "torn_partitions"]

CHECKPOINT_FORMAT = 1
Tail = list[Any]
"""``[device, seq, append_ms]`` of the event before a position of one partition."""
_logger = logging.getLogger("fluvial.engine")


@dataclass
class Checkpoint:
    """What a stream runner commits with every micro-batch."""

    fingerprint: str
    offsets: list[int]                                   # next log offset per partition
    sources: dict[int, int] = field(default_factory=dict)  # plan position -> position in a finite source
    state: ExecState = field(default_factory=ExecState)
    micro_batches: int = 0
    warmup_until: list[int] | None = None   # replaying history to rebuild state, views untouched
    tails: list[Tail | None] | None = None  # per partition, the event before ``offsets`` (None: unknown)
    shape: list[str] | None = None          # Plan.shape when written: says what changed, if the flow did

    @property
    def holds_realtime(self) -> bool:
        """Whether micro-batches may have written realtime view rows up to ``offsets``:
        not while replaying history, nor when a batch run wrote this checkpoint
        (``micro_batches == 0``: a stream runner's commits count from 1)."""
        return self.micro_batches > 0 and self.warmup_until is None

    def dumps(self) -> bytes:
        return pickle.dumps((CHECKPOINT_FORMAT, self), protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(blob: bytes) -> Checkpoint:
        fmt, cp = pickle.loads(blob)
        if fmt != CHECKPOINT_FORMAT:
            raise ConfigError(f"checkpoint format {fmt} is not supported (expected {CHECKPOINT_FORMAT})")
        return cp  # type: ignore[no-any-return]


def check_fits(plan: Plan, cp: Checkpoint) -> None:
    """Refuse state written by a flow of another meaning (see :func:`~fluvial.engine.plan.describe`);
    a fitting checkpoint of an older format takes the plan's fingerprint at its next commit."""
    if plan.fits(cp.fingerprint):
        cp.fingerprint, cp.shape = plan.fingerprint, list(plan.shape)
        return
    old = getattr(cp, "shape", None)
    if old is None:
        what = "its operators or their order"
    else:
        changed = [f"operator {i}: {a} -> {b}" for i, (a, b) in enumerate(zip(old, plan.shape)) if a != b]
        if len(old) != len(plan.shape):
            changed.append(f"{len(old)} operators -> {len(plan.shape)}")
        what = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
    raise ConfigError(
        f"the flows of pipeline {plan.name!r} changed since its checkpoint was written ({what}): "
        "its state does not fit the new code. Replay the log into new views with the new code "
        "(`fluvial reprocess VIEW --flow FILE`), or run it under another runner id")


def checkpoint_id(pipeline_name: str) -> str:
    """The default checkpoint key of a pipeline's stream runner."""
    return f"stream:{pipeline_name}"


def has_state(plan: Plan) -> bool:
    """Whether results depend on state older than one micro-batch beyond the views."""
    return any(n.op in ("state", "join") or n.id in plan.stateful for n in plan.nodes) or any(
        spec.source.op != "aggregate" for spec in plan.views.values())


def initial_checkpoint(plan: Plan, partitions: int, cutoff: list[int] | None = None, *,
                       log: Any = None) -> Checkpoint:
    """A first checkpoint for a speed layer whose views' batch versions end at ``cutoff``.

    The realtime part must cover only what they do not: start at the cut-off.  A
    pipeline with per-key state first replays the history up to the cut-off to
    rebuild that state, without touching its views (``warmup_until``).
    """
    start = list(log.start_offsets()) if log is not None else [0] * partitions   # a retained log starts later
    cp = Checkpoint(plan.fingerprint, start, shape=list(plan.shape))
    if cutoff is not None and any(cutoff):
        if has_state(plan):
            cp.warmup_until = list(cutoff)
        else:
            cp.offsets = list(cutoff)
    if log is not None:
        cp.tails = read_tails(log, cp.offsets)
    return cp


# -- is the log still what it was? --------------------------------------------------------


def read_tails(log: Any, offsets: list[int]) -> list[Tail | None]:
    """Per partition, the identity of the event before ``offsets[p]`` (``None`` at 0 or beyond the end)."""
    return [_tail_at(log, p, o) for p, o in enumerate(offsets)]


def _tail_at(log: Any, partition: int, offset: int) -> Tail | None:
    if offset <= 0:
        return None
    try:
        batch = log.read(partition, offset - 1, max_records=1)
    except LogError:
        return None
    if not batch.events:
        return None
    event = batch.events[0]
    return [event.device, event.seq, batch.append_ms[0]]


def torn_partitions(log: Any, offsets: list[int], tails: list[Tail | None] | None) -> list[int]:
    """The partitions where the log no longer holds what ``offsets`` covered: it ends
    before them, or the event before them is another one (cut, then refilled)."""
    ends = log.end_offsets()
    torn = []
    for p, offset in enumerate(offsets):
        if p >= len(ends) or offset > ends[p]:
            torn.append(p)
            continue
        want = tails[p] if tails is not None and p < len(tails) else None
        if want is not None and offset > 0 and _tail_at(log, p, offset) != list(want):
            torn.append(p)
    return torn


def rewind(store: Any, txn: Any, plan: Plan, log: Any, runner_id: str, cp: Checkpoint,
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


# -- where a batch run ends -------------------------------------------------------------------


class Handover(NamedTuple):
    """A batch run that will also decide where the speed layer starts (at its publish).

    ``token`` and ``checkpoint``: the speed layer's checkpoint when the cut-off was
    taken (``None``: it had none); ``ends``: the cut-off, the end of the log then.
    """

    token: int | None
    checkpoint: Checkpoint | None
    ends: list[int]


def take_cutoff(store: Any, txn: Any, plan: Plan, log: Any, *, own_log: bool
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


def finish_handover(txn: Any, plan: Plan, log: Any, handover: Handover, *, own_log: bool) -> None:
    """In the transaction that publishes the batch versions: the speed layer starts at their cut-off.

    If a micro-batch committed since the cut-off was taken (the speed layer started
    below it, having no checkpoint then), its realtime rows overlap the new versions:
    they are dropped, and the speed layer recomputes from the cut-off.  Runners that
    read an older checkpoint are fenced by the new one.  A batch run that dies before
    this transaction changes nothing: the speed layer just goes on.
    """
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
