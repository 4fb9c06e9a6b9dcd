"""The speed layer's checkpoint: where a stream runner is in the log, and its operator state.

A stream runner commits a :class:`Checkpoint` with every micro-batch, in the
store transaction that also holds the micro-batch's view changes (exactly-once
effect).  It carries the next log offset per partition, the operator state
(:class:`~fluvial.state.operators.ExecState`), and a *fingerprint* of what the
state means (:func:`check_fits`: a flow of another meaning never reuses it).

* Fencing: a stream runner writes its checkpoint only if it is still the one it
  read (``Txn.set_checkpoint(..., expect=token)``, else
  :class:`~fluvial.errors.CheckpointFenced`), and only while its ownership epoch
  holds (:mod:`fluvial.state.ownership`).
* :func:`torn_partitions`: whether the log still holds what a checkpoint or a
  cut-off covers.  A crash can tear the tail of the log (its writer cuts a torn
  tail on open), and new events then reuse the offsets.  Each checkpoint and
  each cut-off read from the log keeps, per partition, the identity of the event
  just before it (``[device, seq, append_ms]``): a cut is found even after new
  events filled the offsets again.

Where a checkpoint starts, and how it moves when a batch run publishes, is the
Lambda policy of :mod:`fluvial.layers.handover`.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fluvial.errors import ConfigError, LogError
from fluvial.state.operators import ExecState

if TYPE_CHECKING:
    from fluvial.engine.plan import Plan
    from fluvial.log.base import LogReader

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "Tail", "check_fits", "checkpoint_id", "has_state",
           "initial_checkpoint", "read_tails", "torn_partitions"]

CHECKPOINT_FORMAT = 1
Tail = list[Any]
"""``[device, seq, append_ms]`` of the event before a position of one partition."""


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
    complete_until: list[int] | None = None  # the history a runner found when it started: replayed with
    #                                          nothing beyond a view's correction horizon (windows/watermark)

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
        fmt, cp = _Unpickler(io.BytesIO(blob)).load()
        if fmt != CHECKPOINT_FORMAT:
            raise ConfigError(f"checkpoint format {fmt} is not supported (expected {CHECKPOINT_FORMAT})")
        return cp  # type: ignore[no-any-return]


# Where the classes of a checkpoint lived when earlier releases wrote it: a data directory
# keeps its checkpoints across an upgrade that moves them.
_MOVED = {
    ("fluvial.engine.checkpoint", "Checkpoint"): ("fluvial.state.checkpoint", "Checkpoint"),
    ("fluvial.engine.execute", "ExecState"): ("fluvial.state.operators", "ExecState"),
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module, name = _MOVED.get((module, name), (module, name))
        return super().find_class(module, name)


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
                       log: LogReader | None = None) -> Checkpoint:
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


def read_tails(log: LogReader, offsets: list[int]) -> list[Tail | None]:
    """Per partition, the identity of the event before ``offsets[p]`` (``None`` at 0 or beyond the end)."""
    return [_tail_at(log, p, o) for p, o in enumerate(offsets)]


def _tail_at(log: LogReader, partition: int, offset: int) -> Tail | None:
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


def torn_partitions(log: LogReader, offsets: list[int], tails: list[Tail | None] | None) -> list[int]:
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
