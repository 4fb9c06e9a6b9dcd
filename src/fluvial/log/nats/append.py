"""Appending to a log on JetStream, exactly once by ``(device, seq)``, with several writers.

:class:`Appender` composes the de-duplication layer of :mod:`fluvial.log.dedup`
(it is the :class:`~fluvial.log.dedup.PairSource`: its partitions' tails and the
``(device, seq)`` pairs of their messages) and publishes each partition's new
events as batches (:mod:`fluvial.log.nats.frames`), partitions concurrently.

Every publish carries ``Nats-Expected-Last-Sequence``: the stream sequence of the
tail this writer has read, and so has in its de-duplication state. JetStream
stores the batch only if nothing was appended since; if another writer (another
ingest process) was first, the publish is refused, this writer reads what was
appended (rebuilding the partition's state), answers the events now stored as
duplicates, and publishes the rest again. The state is therefore always the
state of the whole partition before the batch: ``(device, seq)`` is stored once
however many processes append, and offsets stay consecutive.

A publish whose outcome is unknown (a timeout, a lost connection, a leader
election) marks the partition stale and raises; before the next append into it,
the writer reads the stream again, so an event whose ack was lost is known as
stored. ``Nats-Msg-Id`` (the batch's content hash) covers the other order: a
batch retried before its first publish is visible is dropped by JetStream
within its duplicate window (2 minutes by default) and answered as a duplicate.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluvial.errors import LogError, LogUnavailable, ValidationError
from fluvial.events.envelope import Event
from fluvial.log.base import AppendResult
from fluvial.log.dedup import Deduplicator
from fluvial.log.encode import encode_batches
from fluvial.log.nats.connection import Connection
from fluvial.log.nats.frames import Frame, batch_headers
from fluvial.log.nats.reader import StreamReader, Tail

__all__ = ["Appender"]

WRONG_LAST_SEQUENCE = 10071   # JetStream's error code: another writer appended first
MAX_ROUNDS = 64               # conflicts in one append before giving up (many writers, one partition)
SNAPSHOT_EVERY = 1024         # messages appended to a partition between two de-duplication snapshots
_PAIRS_CHUNK = 1 << 16
_HEADROOM = 2048              # bytes of a message left for its headers


@dataclass
class _Outcome:
    """What publishing one partition's chunks did."""

    stored: list[tuple[list[int], Frame]] = field(default_factory=list)
    tail: Tail | None = None
    retry: bool = False             # refused (another writer) or a duplicate: read the tail, retry
    error: BaseException | None = None


class Appender:
    """The writing side of a :class:`~fluvial.log.nats.log.NatsLog` (its mutex held by the caller)."""

    def __init__(self, conn: Connection, reader: StreamReader, partitions: int) -> None:
        self.conn = conn
        self.reader = reader
        self.partitions = partitions
        self._max_body = max(1024, conn.nc.max_payload - _HEADROOM)
        self._tails: list[Tail] = conn.call(self._all_tails())
        self._stale: set[int] = set()
        self._since_save = [0] * partitions
        # The dedup layer keeps a snapshot per partition; on NATS they are a private cache that
        # only shortens the replay after a conflict (the state is rebuilt from the streams on open).
        self._dir = tempfile.TemporaryDirectory(prefix="fluvial-nats-dedup-")
        self.dedup = Deduplicator.load(self, [Path(self._dir.name) / f"p-{p:04d}" for p in range(partitions)])

    async def _all_tails(self) -> list[Tail]:
        return await self._tails_of(range(self.partitions))

    async def _tails_of(self, partitions: Sequence[int]) -> list[Tail]:
        return list(await asyncio.gather(*(self.reader.tail(p) for p in partitions)))

    # -- PairSource -----------------------------------------------------------

    def offsets(self, partition: int) -> tuple[int, int]:
        tail = self._tails[partition]
        return tail.start, tail.end

    def pairs(self, partition: int, start_offset: int, stop_offset: int) -> Iterator[tuple[str, int]]:
        tail, offset = self._tails[partition], start_offset
        while offset < stop_offset:
            stop = min(stop_offset, offset + _PAIRS_CHUNK)
            events, _ = self.conn.call(self.reader.read(partition, tail, offset, stop))
            if not events:
                return
            for ev in events:
                yield ev.device, ev.seq
            offset += len(events)

    # -- appending ------------------------------------------------------------

    def top(self, device: str) -> int | None:
        p = zlib.crc32(device.encode()) % self.partitions
        self._catch_up([p])
        return self.dedup.top(p, device)

    def append(self, events: Sequence[Event]) -> AppendResult:
        """Append checked events (see the module docstring); positions per input event."""
        n = self.partitions
        parts = [zlib.crc32(ev.device.encode()) % n for ev in events]
        pending: dict[int, list[int]] = {}
        for i, p in enumerate(parts):
            pending.setdefault(p, []).append(i)
        positions: list[tuple[int, int] | None] = [None] * len(events)
        self._catch_up(pending)
        for _ in range(MAX_ROUNDS):
            chunks = self._new_chunks(events, parts, pending)
            outcomes: dict[int, _Outcome] = self.conn.call(self._publish_all(chunks))
            pending = self._settle(outcomes, chunks, positions)
            if not pending:
                accepted = sum(pos is not None for pos in positions)
                return AppendResult(accepted=accepted, duplicates=len(events) - accepted, positions=positions)
        raise LogError(f"append to --log {self.reader.address.url}: other writers appended first "
                       f"{MAX_ROUNDS} times in a row; retry the append")

    def _new_chunks(self, events: Sequence[Event], parts: list[int], pending: dict[int, list[int]]
                    ) -> dict[int, list[tuple[list[int], int, int, bytes]]]:
        """The new events of ``pending`` (recorded as stored), encoded as messages per partition."""
        idx = [i for group in pending.values() for i in group]
        try:
            groups = self.dedup.new_events([events[i] for i in idx], [parts[i] for i in idx])
            return {p: self._encode(events, p, [idx[j] for j in js]) for p, (_, js) in groups.items()}
        except BaseException:  # nothing published: forget what the state recorded
            self._rebuild(pending)
            raise

    def _encode(self, events: Sequence[Event], p: int, idx: list[int]) -> list[tuple[list[int], int, int, bytes]]:
        """``events[idx]`` as message bodies under the server's max_payload, in order."""
        lo, hi, body = encode_batches(events, {p: ([events[i] for i in idx], idx)})[p]
        if len(body) <= self._max_body:
            return [(idx, lo, hi, body)]
        if len(idx) == 1:
            raise ValidationError(f"$[{idx[0]}]", f"is {len(body)} bytes encoded; the NATS server takes "
                                  f"messages up to {self.conn.nc.max_payload} bytes (its max_payload)")
        half = len(idx) // 2
        return self._encode(events, p, idx[:half]) + self._encode(events, p, idx[half:])

    async def _publish_all(self, chunks: dict[int, list[tuple[list[int], int, int, bytes]]]
                           ) -> dict[int, _Outcome]:
        ps = list(chunks)
        done = await asyncio.gather(*(self._publish(p, chunks[p]) for p in ps))
        return dict(zip(ps, done, strict=True))

    async def _publish(self, p: int, chunks: list[tuple[list[int], int, int, bytes]]) -> _Outcome:
        """Publish one partition's chunks in order, each after the tail the previous one made."""
        from nats.errors import Error
        from nats.js.errors import APIError

        address, tail, out = self.reader.address, self._tails[p], _Outcome()
        for idx, lo, hi, body in chunks:
            last, now_ms = tail.last, time.time_ns() // 1_000_000
            run_max = hi if last is None else max(last.run_max, hi)
            run_min = lo if last is None else min(last.run_min, lo)
            headers = batch_headers(p, body, first=tail.end, count=len(idx), lo=lo, hi=hi, run_max=run_max,
                                    run_min=run_min, append_ms=now_ms, last_seq=tail.last_seq)
            try:
                ack = await self.conn.js.publish(address.subject(p), body, stream=address.stream(p),
                                                 headers=headers)
            except APIError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    out.retry = True
                else:
                    out.error = exc
                break
            except (TimeoutError, Error) as exc:
                out.error = exc
                break
            if ack.duplicate:  # stored before (a publish whose ack was lost): read the tail again
                out.retry = True
                break
            frame = Frame(ack.seq, tail.end, len(idx), lo, hi, run_max, run_min, now_ms)
            start = tail.start if tail.last is not None else frame.first
            tail = Tail(tail.first_seq or ack.seq, ack.seq, start, frame, tail.bytes + len(body))
            out.stored.append((idx, frame))
        out.tail = tail
        return out

    def _settle(self, outcomes: dict[int, _Outcome], chunks: dict[int, list[tuple[list[int], int, int, bytes]]],
                positions: list[tuple[int, int] | None]) -> dict[int, list[int]]:
        """Record what was stored; return the events to publish again, by partition."""
        retry: dict[int, list[int]] = {}
        failed: dict[int, BaseException] = {}
        for p, out in outcomes.items():
            for idx, frame in out.stored:
                for j, i in enumerate(idx):
                    positions[i] = (p, frame.first + j)
            if out.tail is not None:
                self._tails[p] = out.tail
            self._since_save[p] += len(out.stored)
            if out.retry or out.error is not None:
                rest = [i for idx, *_ in chunks[p] for i in idx if positions[i] is None]
                if out.error is not None:
                    failed[p] = out.error
                    self._stale.add(p)   # the outcome is unknown: read the stream before the next append
                else:
                    retry[p] = rest
            elif self._since_save[p] >= SNAPSHOT_EVERY:
                self.dedup.save(p)
                self._since_save[p] = 0
        if retry:
            self._rebuild(retry)
        if failed:
            p, exc = next(iter(failed.items()))
            raise LogUnavailable(str(self.reader.unavailable(p, exc)) + "; the append's outcome is unknown for "
                           "those events: append them again (what was stored is answered as duplicate)")
        return retry

    def catch_up(self) -> None:
        """Read every partition a failed publish left stale (a no-op when none is)."""
        self._catch_up(range(self.partitions))

    def _catch_up(self, partitions: Any) -> None:
        """Read the partitions a failed publish left stale, before appending to them."""
        stale = [p for p in partitions if p in self._stale]
        if stale:
            self._rebuild(stale)

    def _rebuild(self, partitions: Any) -> None:
        """The partitions' tails and de-duplication state, read again from the streams."""
        ps = list(partitions)
        self._stale.update(ps)
        tails = self.conn.call(self._tails_of(ps))
        for p, tail in zip(ps, tails, strict=True):
            self._tails[p] = tail
        self.dedup.rebuild(ps)
        self._stale.difference_update(ps)

    def close(self) -> None:
        self._dir.cleanup()
