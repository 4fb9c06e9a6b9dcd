"""Ownership leases in the SQLite store (see :mod:`fluvial.state.ownership`).

One row per resource: its epoch (only ever grows), the holder (``NULL`` once
released), when the epoch was claimed and last renewed, and the lease length.
Every function runs inside a transaction the caller holds (``BEGIN
IMMEDIATE``: one writer at a time), which makes each read-then-write a
compare-and-set on the epoch.
"""

from __future__ import annotations

import json
import sqlite3
import time

from fluvial.errors import LeaseLost
from fluvial.state.ownership import Holder, Lease, Owner, refusal

__all__ = ["LEASES_TABLE", "claim", "fence", "holder", "release"]

LEASES_TABLE = """CREATE TABLE IF NOT EXISTS fluvial_leases (
        resource TEXT PRIMARY KEY,
        epoch INTEGER NOT NULL,
        owner TEXT,
        since_ms INTEGER NOT NULL,
        renewed_ms INTEGER NOT NULL,
        lease_ms INTEGER NOT NULL)"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def holder(conn: sqlite3.Connection, resource: str) -> Holder | None:
    row = conn.execute("SELECT epoch, owner, since_ms, renewed_ms, lease_ms FROM fluvial_leases "
                       "WHERE resource = ?", (resource,)).fetchone()
    if row is None:
        return None
    epoch, owner, since_ms, renewed_ms, lease_ms = row
    return Holder(resource, int(epoch), None if owner is None else Owner.from_dict(json.loads(owner)),
                  int(since_ms), int(renewed_ms), int(lease_ms))


def claim(conn: sqlite3.Connection, resource: str, owner: Owner, *, lease_ms: int, take_over: bool,
          hint: str) -> Lease:
    """The next epoch of ``resource`` for ``owner``, if it is free, ran out, is held by a
    dead process of this host or by this very process, or with ``take_over``."""
    now = _now_ms()
    current = holder(conn, resource)
    if current is not None and current.owner is not None and not take_over \
            and current.owner != owner and not current.claimable(now):
        raise refusal(current, now, hint=hint)
    epoch = (current.epoch if current is not None else 0) + 1
    conn.execute(
        "INSERT INTO fluvial_leases (resource, epoch, owner, since_ms, renewed_ms, lease_ms) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (resource) DO UPDATE SET epoch = excluded.epoch, "
        "owner = excluded.owner, since_ms = excluded.since_ms, renewed_ms = excluded.renewed_ms, "
        "lease_ms = excluded.lease_ms",
        (resource, epoch, json.dumps(owner.to_dict()), now, now, lease_ms))
    return Lease(resource, epoch, owner, lease_ms)


def fence(conn: sqlite3.Connection, lease: Lease, where: str) -> None:
    """Renew ``lease`` if it still holds; else :class:`LeaseLost` (the caller's transaction is void)."""
    now = _now_ms()
    updated = conn.execute("UPDATE fluvial_leases SET renewed_ms = ? WHERE resource = ? AND epoch = ? "
                           "AND owner IS NOT NULL", (now, lease.resource, lease.epoch)).rowcount
    if updated != 1:
        current = holder(conn, lease.resource)
        now_holds = current.describe(now) if current is not None else f"{lease.resource!r} has no holder"
        raise LeaseLost(
            f"{lease.owner.describe()} no longer holds {lease.resource!r} in {where} (its epoch "
            f"{lease.epoch} was taken over: {now_holds}). Its uncommitted work is void; the holder "
            "goes on from the last committed checkpoint")


def release(conn: sqlite3.Connection, lease: Lease) -> None:
    """Free ``resource`` if ``lease`` still holds it (its epoch stays: the next claim takes the one after)."""
    conn.execute("UPDATE fluvial_leases SET owner = NULL, renewed_ms = ? WHERE resource = ? AND epoch = ?",
                 (_now_ms(), lease.resource, lease.epoch))
