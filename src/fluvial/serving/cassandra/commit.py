"""The commit protocol of the Cassandra store: a fenced write lock, a redo record, versioned writes.

Cassandra has no multi-row transaction.  A store transaction gets the effect of one
from three pieces, all in the store's keyspace:

1. **The write lock** (``fluvial_lock``, one row, lightweight transactions only):
   ``holder`` (who holds it, with a random token per acquisition), ``expires_ms``,
   ``seq`` (the commit sequence) and ``pending`` (the commit not yet known to be
   applied).  A writer acquires it with ``UPDATE ... IF holder = ? AND expires_ms = ?
   AND seq = ? AND pending = ?`` -- when it is free, ran out (:data:`LOCK_MS`,
   renewed while a transaction runs), or its holder is a dead process of this host.
   Writers of one store thus run one after the other, as with SQLite and PostgreSQL.
2. **The redo record**: on commit, the transaction's operations (:mod:`.buffer`:
   absolute values, idempotent) are written to ``fluvial_redo`` first -- or, up to
   :data:`INLINE_BYTES`, into the lock row's ``body`` by the commit point itself.
3. **The commit point**: ``UPDATE fluvial_lock SET seq = seq + 1, pending = TXID,
   holder = '' IF holder = ME AND seq = SEQ``.  It applies only if this writer still
   holds the lock: a writer paused past its lock (``SIGSTOP``, a long GC) and
   overtaken by a rival finds the condition false, and nothing of its transaction is
   ever applied (:class:`~fluvial.errors.CheckpointFenced`: it reloads and goes on,
   or, fenced by its lease, stops).

Then the operations are applied, every write ``USING TIMESTAMP`` derived from the
new ``seq`` (:func:`timestamps`).  If the writer dies before it is done, the next
writer to take the lock finds ``pending`` set, reads the redo record and applies it
again -- *rolls it forward* -- before anything else.  Because every versioned write
carries its commit's timestamp, applying a commit again, late or twice (the dead
writer was only paused, and finishes after a rival committed more) can never
overwrite a newer commit's value: Cassandra keeps the cell with the highest
timestamp.  A partition delete of a commit is stamped just below its other writes,
so rows a commit deletes then writes again survive it.

Clocks matter for liveness only: a writer whose clock runs ahead may take a lock that
has not run out, and the holder's commit then fails (it never counts twice); every
decision that keeps a commit is a lightweight transaction on ``seq`` and ``holder``.
A lightweight transaction whose outcome is lost (the node coordinating it went away)
is not tried again blindly: the writer reads the lock row through Paxos (``SERIAL``),
which settles any round in flight, and sees whether its commit point passed.

What a reader (a query, outside any lock) may see: only committed values, each row
as some commit left it.  It may see a commit half applied (some rows new, others not
yet), so a query is not a snapshot; it never sees a value twice counted, because
rows hold absolute accumulators and the parts a query reads (the alias, the live
realtime generations) are named by ONE metadata row, switched in one write.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from fluvial.errors import CheckpointFenced, StoreError, StoreUnavailable
from fluvial.serving.cassandra.db import BUCKETS, Db, driver_errors, transient
from fluvial.state.ownership import Owner

__all__ = ["LOCK_MS", "Held", "WriteLock", "apply", "timestamps"]

LOCK_MS = 8_000
"""How long a silent writer keeps the store's write lock (renewed every third of it)."""
WAIT_S = 120.0
"""How long a writer waits for the lock before it gives up with a StoreError."""
CHUNK_BYTES = 256 * 1024
INLINE_BYTES = 48 * 1024
"""A redo record up to this size is written by the commit point itself (no extra round trips)."""
ROWS_PER_BATCH = 64

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def timestamps(seq: int) -> tuple[int, int]:
    """The write timestamps of commit ``seq``: its partition deletes, and its other writes."""
    return seq << 10, (seq << 10) + 1


@dataclass
class Held:
    """The write lock as one transaction holds it."""

    me: str
    seq: int
    renewed_ms: int = field(default_factory=_now_ms)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _statements(db: Db, ops: Sequence[Sequence[Any]], seq: int) -> list[Any]:
    from fluvial.serving.cassandra.buffer import TABLE_COLUMNS, TABLE_KEYS

    ts_drop, ts = timestamps(seq)
    out: list[Any] = []
    for op in ops:
        kind = op[0]
        if kind == "drop":
            out += [("DELETE FROM fluvial_rows USING TIMESTAMP ? WHERE view_id = ? AND part = ? AND bucket = ?",
                     (ts_drop, op[1], op[2], b)) for b in range(BUCKETS)]
        elif kind == "put":
            cols = TABLE_COLUMNS[op[1]]
            out.append((f"INSERT INTO {op[1]} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                        "USING TIMESTAMP ?", (*op[2], ts)))
        elif kind == "del":
            cond = " AND ".join(f"{k} = ?" for k in TABLE_KEYS[op[1]])
            out.append((f"DELETE FROM {op[1]} USING TIMESTAMP ? WHERE {cond}", (ts, *op[2])))
        elif kind == "rows":
            _kind, view_id, part, b, rows = op
            for i in range(0, len(rows), ROWS_PER_BATCH):
                batch: list[tuple[str, Sequence[Any]]] = []
                for key, start, end, acc in rows[i:i + ROWS_PER_BATCH]:
                    if acc is None:
                        batch.append(("DELETE FROM fluvial_rows USING TIMESTAMP ? WHERE view_id = ? AND part = ? "
                                      "AND bucket = ? AND key = ? AND wstart = ? AND wend = ?",
                                      (ts, view_id, part, b, key, start, end)))
                    else:
                        batch.append(("INSERT INTO fluvial_rows (view_id, part, bucket, key, wstart, wend, acc) "
                                      "VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
                                      (view_id, part, b, key, start, end, acc, ts)))
                out.append((db.batch(batch), ()))
        elif kind == "save":
            _kind, table, columns, rows = op
            cql = (f"INSERT INTO {_quote(table)} ({', '.join(map(_quote, columns))}) "
                   f"VALUES ({', '.join('?' * len(columns))}) USING TIMESTAMP ?")
            out += [(cql, (*row, ts)) for row in rows]
        else:
            raise StoreError(f"unknown operation {kind!r} in a redo record of {db.where}: was it written by a "
                             "newer fluvial? Upgrade this one")
    return out


def apply(db: Db, ops: Sequence[Sequence[Any]], seq: int) -> None:
    """Apply the operations of commit ``seq`` (idempotent; a later commit's values always win)."""
    db.many(_statements(db, ops, seq))


class WriteLock:
    """The store's write lock and commits, for one store object (one thread)."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.guess: tuple[str, int, int, str] = ("", 0, 0, "")   # holder, expires_ms, seq, pending
        self.applied: str = ""   # the last commit this object applied itself

    def _read(self) -> tuple[str, int, int, str]:
        row = self.db.run("SELECT holder, expires_ms, seq, pending FROM fluvial_lock WHERE name = 'write'",
                          serial=True).one()
        if row is None:
            raise StoreError(f"{self.db.where} has no write lock row (fluvial_lock): was the keyspace changed "
                             "by hand? Recreate it")
        return row.holder, row.expires_ms, row.seq, row.pending

    @staticmethod
    def _free(holder: str, expires_ms: int) -> bool:
        if not holder or expires_ms < _now_ms():
            return True
        try:
            return Owner.from_dict(json.loads(holder)["owner"]).gone()
        except (ValueError, KeyError, TypeError):
            return False

    def acquire(self) -> Held:
        """Take the write lock (rolling forward a commit left pending); wait up to :data:`WAIT_S`."""
        me = json.dumps({"owner": Owner.this_process().to_dict(), "token": secrets.token_hex(8)})
        deadline = time.monotonic() + WAIT_S
        pause = 0.005
        guess = self.guess
        while True:
            holder, expires, seq, pending = guess
            if self._free(holder, expires):
                keep = pending if pending and pending != self.applied else ""
                try:
                    applied, row = self.db.lwt(
                        "UPDATE fluvial_lock SET holder = ?, expires_ms = ?, pending = ? WHERE name = 'write' "
                        "IF holder = ? AND expires_ms = ? AND seq = ? AND pending = ?",
                        (me, _now_ms() + LOCK_MS, keep, holder, expires, seq, pending))
                except driver_errors() as exc:   # its outcome unknown (a node went away): read it
                    if not transient(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
                    guess = self.db.retrying(self._read)   # a SERIAL read settles the round in flight
                    applied, row = guess[0] == me, None   # "me" has a token of its own: ours, or not
                    if not applied:
                        continue
                if applied:
                    held = Held(me, seq)
                    if keep:
                        self._roll_forward(held, keep)
                    return held
                guess = self._from(row)
                continue
            if time.monotonic() > deadline:
                raise StoreError(f"the write lock of {self.db.where} is held by {holder} for longer than "
                                 f"{WAIT_S:.0f} s; is a writer stuck? It runs out {LOCK_MS / 1000:g} s after its "
                                 "last renewal")
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
            guess = self._read()

    def _from(self, row: Any) -> tuple[str, int, int, str]:
        try:
            return row.holder, row.expires_ms, row.seq, row.pending
        except AttributeError:
            return self._read()

    def _roll_forward(self, held: Held, pending: str) -> None:
        """Apply the commit a writer left pending (it died or paused after its commit point)."""
        txid, _, count = pending.partition(":")
        if count == "0":   # the record is in the lock row, written by the commit point
            row = self.db.run("SELECT pending, body FROM fluvial_lock WHERE name = 'write'", serial=True).one()
            body = bytes(row.body) if row is not None and row.pending == pending and row.body else b""
        else:
            chunks = self.db.rows("SELECT chunk, body FROM fluvial_redo WHERE txid = ?", (txid,))
            body = b"".join(bytes(b) for _c, b in sorted(chunks))
        if body:
            apply(self.db, _decode(body), held.seq)
        applied, _row = self.db.lwt("UPDATE fluvial_lock SET pending = '' WHERE name = 'write' "
                                   "IF holder = ? AND pending = ?", (held.me, pending))
        if not applied:
            raise CheckpointFenced(f"the write lock of {self.db.where} was taken over while this writer rolled "
                                   "a pending commit forward: nothing of this transaction is committed")
        if count != "0":
            self.db.many([("DELETE FROM fluvial_redo WHERE txid = ?", (txid,))])

    def _committed(self, held: Held, seq: int, pending: str) -> bool:
        """Whether the commit point ``seq`` of this writer passed, after its outcome was lost (a
        Paxos round interrupted by a node's failure may still complete: read until it is known)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                holder, _expires, now_seq, now_pending = self._read()
            except driver_errors() as exc:
                if not transient(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            if now_seq == seq and now_pending == pending:
                return True
            if now_seq != held.seq or holder != held.me:
                return False   # another writer went on: this commit did not happen
            # still ours and unchanged: the LWT did not pass (a SERIAL read completes any in flight)
            return False

    def keep(self, held: Held) -> None:
        """Renew the lock if a third of :data:`LOCK_MS` passed since the last renewal."""
        now = _now_ms()
        if now - held.renewed_ms < LOCK_MS // 3:
            return
        applied, _row = self.db.lwt("UPDATE fluvial_lock SET expires_ms = ? WHERE name = 'write' IF holder = ?",
                                    (now + LOCK_MS, held.me))
        if not applied:
            raise self._lost()
        held.renewed_ms = now

    def _lost(self) -> CheckpointFenced:
        self.guess = ("", 0, 0, "")
        return CheckpointFenced(
            f"this writer lost the write lock of {self.db.where} before its commit (paused or cut off for over "
            f"{LOCK_MS / 1000:g} s, and another writer took the lock): nothing of its transaction is committed; "
            "it reloads its checkpoint and goes on (or, if its lease was taken over too, stops)")

    def commit(self, held: Held, ops: list[list[Any]]) -> None:
        """Record ``ops``, pass the commit point, apply them, and free the lock."""
        if not ops:
            self.release(held)
            return
        txid = secrets.token_hex(12)
        body = _encode(ops)
        inline = len(body) <= INLINE_BYTES
        pieces = [] if inline else [body[i:i + CHUNK_BYTES] for i in range(0, len(body), CHUNK_BYTES)]
        self.db.many(("INSERT INTO fluvial_redo (txid, chunk, body) VALUES (?, ?, ?)", (txid, i, piece))
                     for i, piece in enumerate(pieces))
        pending = f"{txid}:{len(pieces)}"
        seq = held.seq + 1
        try:
            applied, _row = self.db.lwt(
                "UPDATE fluvial_lock SET seq = ?, pending = ?, body = ?, holder = '', expires_ms = 0 "
                "WHERE name = 'write' IF holder = ? AND seq = ?",
                (seq, pending, body if inline else None, held.me, held.seq))
        except driver_errors() as exc:   # its outcome unknown (a node went away): read it
            if not transient(exc):
                raise
            applied = self._committed(held, seq, pending)
        if not applied:
            if pieces:
                self.db.many([("DELETE FROM fluvial_redo WHERE txid = ?", (txid,))])
            raise self._lost()
        self.guess = ("", 0, seq, pending)
        try:
            apply(self.db, ops, seq)
        except Exception as exc:
            raise StoreUnavailable(f"commit {seq} of {self.db.where} passed its commit point but could not be "
                                   f"applied ({exc!r}): the next writer applies it from its redo record") from exc
        self.applied = pending
        if pieces:
            self.db.many([("DELETE FROM fluvial_redo WHERE txid = ?", (txid,))])

    def release(self, held: Held) -> None:
        """Free the lock without a commit (nothing written, or the transaction failed)."""
        try:
            applied, _row = self.db.lwt("UPDATE fluvial_lock SET holder = '', expires_ms = 0 WHERE name = 'write' "
                                        "IF holder = ?", (held.me,))
        except Exception:   # the lock runs out by itself
            applied = False
        self.guess = ("", 0, held.seq, "") if applied else ("", 0, 0, "")
