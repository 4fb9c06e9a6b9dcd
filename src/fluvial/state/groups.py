"""Worker groups: the names, the membership and the assignment of a pipeline's partitions.

Any number of ``fluvial worker`` processes share the speed layer of a pipeline
``NAME`` partition by partition.  Everything they agree on is in the store:

* ``stream:NAME@pPPPP``: partition ``P``'s **lease** (its epoch fences every
  commit of that partition) and its **checkpoint** (the partition's next offset
  and the operator state of that partition alone), committed in the same
  transaction as the view changes;
* ``workers:NAME#K``: **membership** slot ``K`` (``0 <= K < slots``), a lease
  each worker holds and renews while it lives.  The live members are the
  slots whose lease has not run out; each worker computes the same
  :func:`assign` from them and takes its fair share;
* ``workers:NAME``: a **marker** checkpoint, written once by the first worker,
  that says the pipeline's speed layer is partitioned, and which flow code the
  workers run (:func:`~fluvial.engine.plan.code_digest`; a Kappa switch or a
  rollback rewrites it, and workers running other code then refuse the partitions).  A single runner
  (``fluvial run --mode stream``, checkpoint ``stream:NAME``) and workers never
  both write a pipeline: a worker writes the marker only in a transaction that
  finds no ``stream:NAME`` checkpoint, and every commit of either kind checks,
  in its own transaction, that the other kind's checkpoint is absent.

Safety never depends on the membership or on clocks: a partition is written
only under its lease's epoch (``Txn.fence``), in one store transaction with its
checkpoint's compare-and-set.  The membership only decides who *tries* to claim
what, so that the work is spread and moves when workers come and go.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from fluvial.errors import ConfigError, LogError, OwnedElsewhere
from fluvial.state.checkpoint import Checkpoint, checkpoint_id
from fluvial.state.operators import ExecState

if TYPE_CHECKING:
    from fluvial.state.base import CheckpointTxn, StateStore
    from fluvial.state.ownership import Lease, Owner

__all__ = ["EXTRA_SLOTS", "assign", "check_no_single_runner", "check_not_partitioned",
           "check_single_runner_allowed", "claim_member", "is_partitioned", "live_members", "mark_partitioned",
           "marker_blob", "marker_code", "marker_id", "member_id", "partition_id", "slice_checkpoint", "slots_for",
           "torn_refusal"]

EXTRA_SLOTS = 8
"""Membership slots beyond one per partition (standby workers)."""
MARKER = b"fluvial workers: the speed layer of this pipeline is partitioned"


def partition_id(pipeline: str, partition: int) -> str:
    """The lease and checkpoint key of one partition of a pipeline run by workers."""
    return f"{checkpoint_id(pipeline)}@p{partition:04d}"


def slice_checkpoint(cp: Checkpoint, partition: int) -> Checkpoint:
    """Partition ``partition``'s share of a checkpoint over the whole log (a Kappa replay's), as a
    worker's checkpoint of that partition: its offset, its tail and its watermarks (each log
    source's watermark is kept per partition; partitioned pipelines keep no other state).

    >>> whole = Checkpoint("f", [7, 9], micro_batches=3, tails=[None, ["d", 4, 1]])
    >>> whole.state.watermarks[2] = {(0, 0): 100, (0, 1): 250, ((0, 1), "dev"): 240}
    >>> part = slice_checkpoint(whole, 1)
    >>> part.offsets, part.tails, part.state.watermarks
    ([9], [['d', 4, 1]], {2: {(0, 0): 250, ((0, 0), 'dev'): 240}})
    """
    def mine(key: Hashable) -> Hashable | None:   # partition highs, and device highs (origin, device)
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], tuple):
            origin = mine(key[0])
            return None if origin is None else (origin, key[1])
        if isinstance(key, tuple) and len(key) == 2 and key[1] == partition:
            return (key[0], 0)
        return None

    marks: dict[int, dict[Hashable, int]] = {
        pos: {k: ts for k, ts in ((mine(key), ts) for key, ts in m.items()) if k is not None}
        for pos, m in cp.state.watermarks.items()}
    return Checkpoint(cp.fingerprint, [cp.offsets[partition]], state=ExecState(watermarks=marks),
                      micro_batches=cp.micro_batches, tails=[cp.tails[partition]] if cp.tails is not None else None,
                      shape=cp.shape)


def marker_id(pipeline: str) -> str:
    """The checkpoint that marks a pipeline as run by workers."""
    return f"workers:{pipeline}"


def member_id(pipeline: str, slot: int) -> str:
    """The lease of membership slot ``slot`` of a pipeline's worker group."""
    return f"workers:{pipeline}#{slot}"


def slots_for(partitions: int) -> int:
    return partitions + EXTRA_SLOTS


def assign(partitions: int, members: list[int]) -> dict[int, list[int]]:
    """Which partitions each live member (a slot number) should own: partition ``p`` goes to
    the ``p mod n``-th of the sorted members, so every member gets ``partitions // n`` or
    one more, and every member computing it from the same membership agrees.

    >>> assign(5, [3, 0])
    {0: [0, 2, 4], 3: [1, 3]}
    """
    if partitions < 0:
        raise ConfigError(f"partitions must be >= 0, got {partitions}")
    ordered = sorted(set(members))
    out: dict[int, list[int]] = {m: [] for m in ordered}
    if ordered:
        for p in range(partitions):
            out[ordered[p % len(ordered)]].append(p)
    return out


def live_members(store: StateStore, pipeline: str, slots: int) -> list[int]:
    """The membership slots of ``pipeline`` whose lease is alive (not run out, holder not dead)."""
    now = int(time.time() * 1000)
    live = []
    for slot in range(slots):
        holder = store.holder(member_id(pipeline, slot))
        if holder is not None and not holder.claimable(now):
            live.append(slot)
    return live


def claim_member(store: StateStore, pipeline: str, owner: Owner, *, slots: int, lease_ms: int) -> Lease:
    """Take the first free membership slot of ``pipeline``'s worker group.

    Raises:
        ConfigError: Every slot is held by a live worker.
    """
    for slot in range(slots):
        try:
            return store.claim(member_id(pipeline, slot), owner, lease_ms=lease_ms)
        except OwnedElsewhere:
            continue
    raise ConfigError(f"pipeline {pipeline!r}: all {slots} worker slots are held by live workers "
                      f"(one per partition and {EXTRA_SLOTS} standbys): stop some workers, or give the "
                      "log more partitions")


def marker_blob(code: str | None) -> bytes:
    """The marker's content: that the pipeline is partitioned, and the code digest the workers run."""
    return MARKER if code is None else MARKER + b"\ncode " + code.encode()


def marker_code(blob: bytes | None) -> str | None:
    """The code digest a marker names (``None``: none, a marker of an earlier release).

    >>> marker_code(marker_blob("abc")), marker_code(marker_blob(None))
    ('abc', None)
    """
    if blob is None or b"\ncode " not in blob:
        return None
    return blob.split(b"\ncode ", 1)[1].decode()


def mark_partitioned(store: StateStore, pipeline: str, code: str | None = None) -> None:
    """Mark ``pipeline`` as run by workers, unless a single runner's checkpoint exists.

    A checkpoint that only a batch run's hand-over wrote (no micro-batch committed since, no
    live holder: the realtime part is empty) is not a single runner's work: it is dropped,
    and the workers start at the batch cut-off (the views' own record of it).

    Raises:
        OwnedElsewhere: The pipeline has a single runner's checkpoint (``stream:NAME``), named.
    """
    holder = store.holder(checkpoint_id(pipeline))
    now = int(time.time() * 1000)
    single_live = holder is not None and not holder.claimable(now)
    try:
        with store.transaction() as txn:
            if txn.checkpoint_token(marker_id(pipeline)) is not None:
                return
            blob = txn.get_checkpoint(checkpoint_id(pipeline))
            if blob is not None and not single_live and _handed_over_only(blob):
                # a runner that read it and commits later is fenced (its checkpoint is gone),
                # then refused (the marker)
                txn.delete_checkpoint(checkpoint_id(pipeline))
            check_no_single_runner(txn, pipeline)
            txn.set_checkpoint(marker_id(pipeline), marker_blob(code), expect=None)
    except OwnedElsewhere as exc:
        who = holder.describe(now) if holder is not None else "no runner holds it now"
        raise OwnedElsewhere(f"{exc} ({who})", holder=holder) from None


def _handed_over_only(blob: bytes) -> bool:
    """Whether a ``stream:NAME`` checkpoint was written by a batch run's hand-over, with no
    micro-batch since (and no history being replayed)."""
    try:
        cp = Checkpoint.loads(blob)
    except Exception:   # an unreadable checkpoint is not dropped here
        return False
    return cp.micro_batches == 0 and cp.warmup_until is None


def check_no_single_runner(txn: CheckpointTxn, pipeline: str) -> None:
    """In ``txn`` (a worker's commit): refuse if ``pipeline`` has a single runner's checkpoint
    (workers would count again what it counted)."""
    if txn.checkpoint_token(checkpoint_id(pipeline)) is not None:
        raise OwnedElsewhere(
            f"pipeline {pipeline!r} has a single stream runner (`fluvial run --mode stream` or `fluvial "
            f"serve`), whose checkpoint {checkpoint_id(pipeline)!r} covers the log as a whole: workers "
            "would count its events again. Keep running it with `fluvial run --mode stream`, or let "
            "workers serve the pipeline's views under another pipeline name")


_RUN_BY_WORKERS = ("pipeline {name!r} is run by `fluvial worker` processes, partition by partition{who} "
                   "(marker {marker!r}): a single runner would count again what they committed. Run its "
                   "speed layer with `fluvial worker` (and `fluvial serve --speed-layer workers`), or run "
                   "the flow under another pipeline name")


def is_partitioned(txn: CheckpointTxn, pipeline: str) -> bool:
    """In ``txn``: whether ``pipeline``'s speed layer is run by workers (its marker is written)."""
    return txn.checkpoint_token(marker_id(pipeline)) is not None


def check_not_partitioned(txn: CheckpointTxn, pipeline: str) -> None:
    """In ``txn`` (a single runner's commit): refuse if ``pipeline`` is run by workers."""
    if txn.checkpoint_token(marker_id(pipeline)) is not None:
        raise OwnedElsewhere(_RUN_BY_WORKERS.format(name=pipeline, who="", marker=marker_id(pipeline)))


def check_single_runner_allowed(store: StateStore, pipeline: str, partitions: int) -> None:
    """Before a single runner starts (outside a transaction): refuse if ``pipeline`` is run by
    workers, naming the live ones.

    Raises:
        OwnedElsewhere: The pipeline's speed layer is partitioned among workers.
    """
    if store.checkpoint_token(marker_id(pipeline)) is None:
        return
    now = int(time.time() * 1000)
    holders = [store.holder(partition_id(pipeline, p)) for p in range(partitions)]
    live = [h for h in holders if h is not None and h.owner is not None and not h.claimable(now)]
    names = sorted({h.owner.describe() for h in live if h.owner is not None})
    who = f" (held now by {'; '.join(names)})" if names else " (no worker holds a partition now)"
    first: Any = live[0] if live else None
    raise OwnedElsewhere(_RUN_BY_WORKERS.format(name=pipeline, who=who, marker=marker_id(pipeline)),
                         holder=first)


def torn_refusal(runner_id: str, offsets: list[int]) -> LogError:
    """Why a worker's partition stops on a torn log tail (a single runner rewinds instead)."""
    return LogError(f"{runner_id!r}: the log no longer holds events this checkpoint counted (a torn tail "
                    f"cut after a crash of the log's writer, at offsets {offsets}). A worker cannot recompute "
                    "one partition's share of the merged views: rebuild the views with a batch run or a "
                    "reprocess under another pipeline name")
