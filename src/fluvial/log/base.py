"""The ``Log`` interface every event log backend implements, and its value types.

The log is the truth (DESIGN.md, principle 2): append-only, partitioned,
replayable by offset or by time. There is deliberately no update or delete.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from fluvial.events.envelope import Event

__all__ = ["AppendResult", "Log", "PartitionStats", "RecordBatch"]


class RecordBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Consecutive events read from one partition.

    Attributes:
        partition: The partition read.
        start_offset: Offset of ``events[0]`` (or where the read started, if empty).
        events: The events, in offset order.
        append_ms: Wall-clock time each event was appended, epoch ms.
    """

    partition: int
    start_offset: int
    events: list[Event]
    append_ms: list[int]

    @property
    def next_offset(self) -> int:
        """The offset to read from next."""
        return self.start_offset + len(self.events)


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`Log.append` did with each input event.

    Attributes:
        accepted: Events stored.
        duplicates: Events whose ``(device, seq)`` was already stored.
        positions: ``(partition, offset)`` per input event; ``None`` for a duplicate.
    """

    accepted: int
    duplicates: int
    positions: list[tuple[int, int] | None]


class PartitionStats(msgspec.Struct, frozen=True, kw_only=True):
    """Size and time range of one partition; ``min_ts``/``max_ts`` are None when empty."""

    partition: int
    start_offset: int
    end_offset: int
    records: int
    min_ts: int | None
    max_ts: int | None
    bytes: int


@runtime_checkable
class LogReader(Protocol):
    """An immutable, partitioned event log, as readers see it (a Parquet export is only this).

    Offsets are per partition and grow by one per record, but need not start at 0: a
    log that keeps only recent history starts later (:meth:`start_offsets`). Readers
    start where they were or at :meth:`start_offsets`, and count the records they read
    (never ``stop - start``). A device's events always land in the same partition,
    so they stay in append order.
    """

    partitions: int

    def partition_for(self, device: str) -> int:
        """Return the partition a device's events go to (stable across processes and restarts)."""
        ...

    def read(
        self,
        partition: int,
        start_offset: int,
        *,
        max_records: int | None = None,
        stop_offset: int | None = None,
    ) -> RecordBatch:
        """Read consecutive records from ``start_offset``; may return fewer records than asked,
        none at the end; never a record twice, never one out of order."""
        ...

    def start_offsets(self) -> list[int]:
        """Return the first offset held by each partition."""
        ...

    def end_offsets(self) -> list[int]:
        """Return the offset after the last record of each partition."""
        ...

    def offset_for_time(self, partition: int, ts_ms: int) -> int:
        """Return the first offset whose running max event time is >= ``ts_ms``."""
        ...

    def stats(self) -> list[PartitionStats]:
        """Return per-partition statistics."""
        ...

    def close(self) -> None:
        """Flush and release the log."""
        ...


@runtime_checkable
class Log(LogReader, Protocol):
    """A log that ingest appends to: :class:`LogReader` plus appends, de-duplicated by ``(device, seq)``."""

    def append(self, events: Sequence[Event], *, decoded: bool = False) -> AppendResult:
        """Append events (``decoded``: they come from ingest's validating decoder, so the log may
        skip checking them again), atomically per call for durability (when it returns, every accepted
        event is stored per the fsync policy, and readable); idempotent by ``(device, seq)``:
        a pair already stored (also before a restart) is acknowledged as a duplicate, stored once."""
        ...

    def next_seq(self, device: str) -> int:
        """One more than the largest seq stored for ``device`` (0 for a new device): the seq for
        an event whose source has no counter of its own (files without a ``seq`` column)."""
        ...
