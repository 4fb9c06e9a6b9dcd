"""Ownership leases in the Cassandra store (see :mod:`fluvial.state.ownership`).

One row per resource in ``fluvial_leases``, as in the other stores: its epoch (only
ever grows), the holder (``''`` once released), when the epoch was claimed and last
renewed, and the lease length.  Every write to it is a lightweight transaction
(Paxos) conditional on the epoch read, so two claimants of one resource cannot both
take the same epoch, and a renewal or fence of an epoch that was taken over fails:

- :func:`claim`: ``INSERT ... IF NOT EXISTS`` (epoch 0), then ``UPDATE ... SET epoch =
  E + 1 ... IF epoch = E`` with the epoch read through Paxos;
- :func:`fence`: ``UPDATE ... SET renewed_ms = ? IF epoch = ? AND owner = ?``.

Inside a transaction the fence runs before the commit point (:mod:`.commit`); a
claim that slips in between cannot make the commit count twice: the new holder
reads the checkpoint through the store's write lock, after that commit, and a
holder that was overtaken loses the write lock too.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fluvial.errors import LeaseLost
from fluvial.serving.cassandra.db import Db, driver_errors, transient
from fluvial.state.ownership import Holder, Lease, Owner, refusal

__all__ = ["claim", "fence", "holder", "release"]

_COLUMNS = "epoch, owner, since_ms, renewed_ms, lease_ms"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _owner_text(owner: Owner) -> str:
    return json.dumps(owner.to_dict(), sort_keys=True)


def _holder(resource: str, row: Any) -> Holder | None:
    if row is None or int(row.epoch) == 0:   # epoch 0: a row made by a claim that was refused
        return None
    owner = Owner.from_dict(json.loads(row.owner)) if row.owner else None
    return Holder(resource, int(row.epoch), owner, int(row.since_ms), int(row.renewed_ms), int(row.lease_ms))


def _read(db: Db, resource: str) -> Any:
    return db.run(f"SELECT {_COLUMNS} FROM fluvial_leases WHERE resource = ?", (resource,), serial=True).one()


def holder(db: Db, resource: str) -> Holder | None:
    return _holder(resource, _read(db, resource))


def claim(db: Db, resource: str, owner: Owner, *, lease_ms: int, take_over: bool, hint: str) -> Lease:
    """The next epoch of ``resource`` for ``owner`` if it is free, ran out, is held by a dead
    process of this host or by this very process, or with ``take_over``."""
    db.lwt("INSERT INTO fluvial_leases (resource, epoch, owner, since_ms, renewed_ms, lease_ms) "
           "VALUES (?, 0, '', 0, 0, 0) IF NOT EXISTS", (resource,))
    while True:   # a claim whose outcome was lost is read back here: ours, so claimable again
        row = db.retrying(lambda: _read(db, resource))
        now = _now_ms()
        current = _holder(resource, row)
        if current is not None and current.owner is not None and not take_over \
                and current.owner != owner and not current.claimable(now):
            raise refusal(current, now, hint=hint)
        epoch = int(row.epoch) + 1
        claimed = (epoch, _owner_text(owner), now, now, lease_ms, resource, epoch - 1)
        applied, _ = db.retrying(lambda: db.lwt(
            "UPDATE fluvial_leases SET epoch = ?, owner = ?, since_ms = ?, renewed_ms = ?, lease_ms = ? "
            "WHERE resource = ? IF epoch = ?", claimed))
        if applied:
            return Lease(resource, epoch, owner, lease_ms)


def fence(db: Db, lease: Lease) -> None:
    """Renew ``lease`` if it still holds; else :class:`LeaseLost`."""
    try:
        applied, _ = db.lwt("UPDATE fluvial_leases SET renewed_ms = ? WHERE resource = ? IF epoch = ? AND owner = ?",
                            (_now_ms(), lease.resource, lease.epoch, _owner_text(lease.owner)))
    except driver_errors() as exc:   # its outcome unknown (a node went away): the epoch says
        if not transient(exc):
            raise
        row = db.retrying(lambda: _read(db, lease.resource))
        applied = row is not None and int(row.epoch) == lease.epoch and row.owner == _owner_text(lease.owner)
    if not applied:
        now = _now_ms()
        current = holder(db, lease.resource)
        now_holds = current.describe(now) if current is not None else f"{lease.resource!r} has no holder"
        raise LeaseLost(
            f"{lease.owner.describe()} no longer holds {lease.resource!r} in {db.where} (its epoch "
            f"{lease.epoch} was taken over: {now_holds}). Its uncommitted work is void; the holder "
            "goes on from the last committed checkpoint")


def release(db: Db, lease: Lease) -> None:
    """Free the resource if ``lease`` still holds it (the epoch stays)."""
    db.lwt("UPDATE fluvial_leases SET owner = '', renewed_ms = ? WHERE resource = ? IF epoch = ?",
           (_now_ms(), lease.resource, lease.epoch))
