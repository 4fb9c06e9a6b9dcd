"""The state store protocol: checkpoints and ownership, what every runner needs from a store.

A runner keeps two things in a store, whatever else it writes there:

* its **checkpoint** (where it is in the log and its operator state, an opaque
  blob: :mod:`fluvial.state.checkpoint`), written in the same transaction as
  the results it covers, and only if it is still the one the runner read
  (compare-and-set on a *token*);
* its **lease** on what it writes (:mod:`fluvial.state.ownership`): a claim
  with an epoch that only grows, which every commit is fenced with.

:class:`~fluvial.serving.base.ViewStore` extends this protocol with views; a
backend implements both in one database so that view changes, checkpoint and
fence commit together (SQLite ``BEGIN IMMEDIATE``; PostgreSQL one transaction
with ``SELECT ... FOR UPDATE`` on the lease row; Cassandra a lightweight
transaction on the epoch).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fluvial.state.ownership import Holder, Lease, Owner

__all__ = ["CheckpointTxn", "StateStore"]


class CheckpointTxn(Protocol):
    """The checkpoint and fencing part of one store transaction (all or nothing)."""

    def get_checkpoint(self, runner_id: str) -> bytes | None:
        """The checkpoint blob of ``runner_id`` (``None``: it has none)."""
        ...

    def set_checkpoint(self, runner_id: str, blob: bytes, *, expect: Any = ...) -> int:
        """Write a checkpoint; with ``expect`` (a token, or ``None``: none) only if it is still
        that one (else ``CheckpointFenced``, and the transaction is void).  Returns the new token."""
        ...

    def delete_checkpoint(self, runner_id: str) -> None:
        """Remove a runner's checkpoint (a rollback, a rewind after a torn log tail); idempotent."""
        ...

    def checkpoint_token(self, runner_id: str) -> int | None:
        """The fencing token of a runner's checkpoint (``None``: it has none)."""
        ...

    def fence(self, lease: Lease) -> None:
        """Go on only while ``lease`` still holds its epoch, renewing it; else ``LeaseLost``, and
        nothing of this transaction is kept."""
        ...


class StateStore(Protocol):
    """Where runners keep checkpoints and leases."""

    def transaction(self) -> AbstractContextManager[CheckpointTxn]:
        """One atomic transaction: everything done through it is kept together or not at all."""
        ...

    def checkpoint_token(self, runner_id: str) -> int | None:
        """The fencing token of a runner's checkpoint, read without a write lock."""
        ...

    def claim(self, resource: str, owner: Owner, *, lease_ms: int, take_over: bool = False,
              hint: str = "") -> Lease:
        """Atomically take the next epoch of ``resource`` and return the lease, if it is free, its
        lease ran out, its holder is a dead process of this host, it is this process, or
        ``take_over``; else ``OwnedElsewhere`` naming the holder.  Epochs only grow."""
        ...

    def renew(self, lease: Lease) -> None:
        """Keep ``lease`` alive (idempotent); ``LeaseLost`` if its epoch was taken over."""
        ...

    def release(self, lease: Lease) -> None:
        """Free the resource if ``lease`` still holds it (idempotent); the epoch stays."""
        ...

    def holder(self, resource: str) -> Holder | None:
        """The store's record of who holds ``resource``, or ``None``."""
        ...

    def exclusive(self, name: str, *, wait_s: float = 0.0) -> AbstractContextManager[Lease]:
        """Hold the resource ``name`` for a block (a claim kept alive by a heartbeat, waiting up
        to ``wait_s`` for its holder), yielding the lease the guarded commits fence with."""
        ...

    def close(self) -> None: ...
