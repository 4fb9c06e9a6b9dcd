"""Ownership leases in the PostgreSQL store (see :mod:`fluvial.state.ownership`).

One row per resource, as in the SQLite store: its epoch (only ever grows), the
holder (``NULL`` once released), when the epoch was claimed and last renewed, and
the lease length.  These functions lock only the resource's row, never the
store's write lock:

- :func:`claim` makes sure the row exists, then reads it ``FOR UPDATE``: two
  claimants of one resource queue on that row, and the second sees the first's
  epoch;
- :func:`fence` is ``UPDATE ... WHERE epoch = %s``: one row, or the epoch was
  taken over.  Run inside a commit's transaction, it keeps the row locked until
  that commit ends, so no claim can slip in between the fence and the commit.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from fluvial.errors import LeaseLost
from fluvial.state.ownership import Holder, Lease, Owner, refusal

if TYPE_CHECKING:
    import psycopg

__all__ = ["claim", "fence", "holder", "release"]

_COLUMNS = "epoch, owner, since_ms, renewed_ms, lease_ms"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _holder(resource: str, row: tuple[Any, ...] | None) -> Holder | None:
    if row is None or int(row[0]) == 0:   # epoch 0: a row made by a claim that was refused
        return None
    epoch, owner, since_ms, renewed_ms, lease_ms = row
    return Holder(resource, int(epoch), None if owner is None else Owner.from_dict(json.loads(owner)),
                  int(since_ms), int(renewed_ms), int(lease_ms))


def holder(conn: psycopg.Connection[Any], resource: str) -> Holder | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM fluvial_leases WHERE resource = %s", (resource,)).fetchone()
    return _holder(resource, row)


def claim(conn: psycopg.Connection[Any], resource: str, owner: Owner, *, lease_ms: int, take_over: bool,
          hint: str) -> Lease:
    """The next epoch of ``resource`` for ``owner`` (inside the caller's transaction), if it is
    free, ran out, is held by a dead process of this host or by this very process, or with
    ``take_over``."""
    conn.execute("INSERT INTO fluvial_leases (resource, epoch, owner, since_ms, renewed_ms, lease_ms) "
                 "VALUES (%s, 0, NULL, 0, 0, 0) ON CONFLICT (resource) DO NOTHING", (resource,))
    row = conn.execute(f"SELECT {_COLUMNS} FROM fluvial_leases WHERE resource = %s FOR UPDATE",
                       (resource,)).fetchone()
    now = _now_ms()
    current = _holder(resource, row)
    if current is not None and current.owner is not None and not take_over \
            and current.owner != owner and not current.claimable(now):
        raise refusal(current, now, hint=hint)
    epoch = (current.epoch if current is not None else 0) + 1
    conn.execute("UPDATE fluvial_leases SET epoch = %s, owner = %s, since_ms = %s, renewed_ms = %s, "
                 "lease_ms = %s WHERE resource = %s",
                 (epoch, json.dumps(owner.to_dict()), now, now, lease_ms, resource))
    return Lease(resource, epoch, owner, lease_ms)


def fence(conn: psycopg.Connection[Any], lease: Lease, where: str) -> None:
    """Renew ``lease`` if it still holds; else :class:`LeaseLost` (the caller's transaction is void)."""
    now = _now_ms()
    updated = conn.execute("UPDATE fluvial_leases SET renewed_ms = %s WHERE resource = %s AND epoch = %s "
                           "AND owner IS NOT NULL", (now, lease.resource, lease.epoch)).rowcount
    if updated != 1:
        current = holder(conn, lease.resource)
        now_holds = current.describe(now) if current is not None else f"{lease.resource!r} has no holder"
        raise LeaseLost(
            f"{lease.owner.describe()} no longer holds {lease.resource!r} in {where} (its epoch "
            f"{lease.epoch} was taken over: {now_holds}). Its uncommitted work is void; the holder "
            "goes on from the last committed checkpoint")


def release(conn: psycopg.Connection[Any], lease: Lease) -> None:
    """Free ``resource`` if ``lease`` still holds it (its epoch stays: the next claim takes the one after)."""
    conn.execute("UPDATE fluvial_leases SET owner = NULL, renewed_ms = %s WHERE resource = %s AND epoch = %s",
                 (_now_ms(), lease.resource, lease.epoch))
