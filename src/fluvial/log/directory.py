"""A :class:`~fluvial.log.local.LocalLog` directory: its layout, ``meta.json``, and its partitions
read as events.

Layout::

    path/meta.json                      {"format": 1, "partitions": N}
    path/.lock                          single-writer lock (flock), holds the writer's pid
    path/p-0000/00000000000000000000.seg   record batches (see ``segment.py``)
    path/p-0000/dedup.snapshot          (device, seq) state and the offset it covers (``dedup.py``)

Time index: each batch header carries its min/max event time, so on open the
log rebuilds, from headers alone, an in-memory index of every batch (offset,
file position, running max event time). There is no ``.tidx`` file to keep
consistent with the segments after a crash; the cost is one header read per
batch at open.

:class:`LogDirectory` holds one :class:`~fluvial.log.segment.SegmentStore` per
partition and answers the reads of the ``Log`` interface; it is also the
:class:`~fluvial.log.dedup.PairSource` the de-duplication layer reads. Writing,
locking and failures are LocalLog's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import msgspec

from fluvial.errors import ConfigError, LogError
from fluvial.events.envelope import Event
from fluvial.log.base import PartitionStats, RecordBatch
from fluvial.log.segment import Damage, SegmentStore

__all__ = ["DEFAULT_PARTITIONS", "READ_LIMIT", "SNAPSHOT", "LogDirectory", "partition_count", "partition_path"]

DEFAULT_PARTITIONS = 4
READ_LIMIT = 1 << 20  # records returned by one read() when max_records is None
SNAPSHOT = "dedup.snapshot"
_FORMAT = 1
_logger = logging.getLogger("fluvial.log")
_dec = msgspec.msgpack.Decoder(list[Event])


def partition_path(path: Path, partition: int) -> Path:
    """The directory of ``partition`` in the log at ``path``: ``p-0000``, ``p-0001``, ..."""
    return path / f"p-{partition:04d}"


def partition_count(path: Path, partitions: int | None) -> int:
    """The partition count ``meta.json`` of the log at ``path`` stores; written first if there is none.

    Raises:
        LogError: ``meta.json`` is unreadable or of another format.
        ConfigError: ``partitions`` is given and differs from the stored count.
    """
    meta = path / "meta.json"
    if meta.exists():
        try:
            data = json.loads(meta.read_text())
            stored = int(data["partitions"])
            fmt = data["format"]
        except (ValueError, KeyError, TypeError) as exc:
            raise LogError(f"{meta} is unreadable: {exc}") from None
        if fmt != _FORMAT:
            raise LogError(f"{meta}: unsupported log format {fmt!r} (this is format 1)")
        if partitions is not None and partitions != stored:
            raise ConfigError(
                f"log at {path} has {stored} partitions, but partitions={partitions} was "
                "asked; the count is fixed at creation (omit it, or use a new directory)"
            )
        return stored
    count = partitions or DEFAULT_PARTITIONS
    tmp = path / "meta.json.tmp"
    tmp.write_text(json.dumps({"format": _FORMAT, "partitions": count}) + "\n")
    os.replace(tmp, meta)
    return count


class LogDirectory:
    """The partitions of a log directory, one segment store each, read as events.

    Not thread-safe: LocalLog calls it under its mutex, and checks first that it is open.

    Attributes:
        path: The log directory.
        stores: The segment store of each partition (:meth:`reopen` replaces one in place).
    """

    def __init__(self, path: Path, stores: list[SegmentStore]) -> None:
        self.path = path
        self.stores = stores
        self._partial: dict[int, tuple[int, list[Event]]] = {}  # partition -> last partly read batch

    @property
    def partitions(self) -> int:
        """Number of partitions."""
        return len(self.stores)

    def snapshot_path(self, partition: int) -> Path:
        """Where ``partition``'s de-duplication snapshot is kept."""
        return self.stores[partition].path / SNAPSHOT

    def store(self, partition: int) -> SegmentStore:
        """The store of ``partition``, refreshed to see what another process appended.

        Raises:
            LogError: No such partition.
        """
        if not 0 <= partition < self.partitions:
            raise LogError(
                f"partition {partition} does not exist; the log at {self.path} has "
                f"partitions 0..{self.partitions - 1}"
            )
        store = self.stores[partition]
        store.refresh()
        return store

    def reopen(self, partition: int) -> None:
        """Close ``partition`` (fsyncing its unsynced writes) and open it again from disk, writable."""
        old = self.stores[partition]
        old.close()  # idempotent; raises (and keeps its files open) while fsync fails
        self._partial.pop(partition, None)
        store = SegmentStore(old.path, segment_bytes=old.segment_bytes, writable=True)
        if store.recovered:
            _logger.warning("recovered %s", store.recovered)
        self.stores[partition] = store

    # -- the de-duplication layer's PairSource --------------------------------

    def offsets(self, partition: int) -> tuple[int, int]:
        """``(start offset, end offset)`` of ``partition`` as this process knows it."""
        store = self.stores[partition]
        return store.start_offset, store.end_offset

    def pairs(self, partition: int, start_offset: int, stop_offset: int) -> Iterator[tuple[str, int]]:
        """The ``(device, seq)`` of the records in ``[start_offset, stop_offset)``; a damaged batch
        is skipped with a warning."""
        for _base, _, payload in self.stores[partition].batches(start_offset, stop_offset,
                                                                on_damage=_unknown_pairs):
            for ev in _dec.decode(payload):
                yield ev.device, ev.seq

    # -- reads (LocalLog documents them) --------------------------------------

    def read(self, partition: int, start_offset: int, max_records: int | None,
             stop_offset: int | None) -> RecordBatch:
        """What :meth:`LocalLog.read <fluvial.log.local.LocalLog.read>` returns."""
        store = self.store(partition)
        end = store.end_offset
        if not store.start_offset <= start_offset <= end:
            raise LogError(
                f"offset {start_offset} is outside partition {partition} "
                f"[{store.start_offset}, {end}]"
            )
        limit = READ_LIMIT if max_records is None else max(0, max_records)
        stop = min(end, start_offset + limit)
        if stop_offset is not None:
            stop = min(stop, stop_offset)
        events: list[Event] = []
        append_ms: list[int] = []
        cached = self._partial.get(partition)
        for base, ams, payload in store.batches(start_offset, stop):
            if cached is not None and cached[0] == base:
                evs = cached[1]  # the rest of a batch a previous read took part of
            else:
                evs = _dec.decode(payload)
            lo, hi = max(0, start_offset - base), min(len(evs), stop - base)
            if hi < len(evs):  # small reads of a large batch: decode it once
                self._partial[partition] = (base, evs)
            if lo == 0 and hi == len(evs):
                events.extend(evs)
            else:
                events.extend(evs[lo:hi])
            append_ms.extend([ams] * (hi - lo))
        return RecordBatch(
            partition=partition, start_offset=start_offset, events=events, append_ms=append_ms
        )

    def offset_for_time(self, partition: int, ts_ms: int) -> int:
        """What :meth:`LocalLog.offset_for_time <fluvial.log.local.LocalLog.offset_for_time>` returns."""
        store = self.store(partition)
        hit = store.find_time(ts_ms)
        if hit is None:
            return store.end_offset
        base, running = hit
        for _, _, payload in store.batches(base, base + 1):
            for i, ev in enumerate(_dec.decode(payload)):
                running = max(running, ev.ts)
                if running >= ts_ms:
                    return base + i
        raise LogError(f"time index of partition {partition} disagrees with its batch at {base}")

    def stats(self, partition: int) -> PartitionStats:
        """Offsets, record count, event-time range and bytes of ``partition``."""
        s = self.store(partition)
        return PartitionStats(
            partition=partition,
            start_offset=s.start_offset,
            end_offset=s.end_offset,
            records=s.end_offset - s.start_offset,
            min_ts=s.min_ts,
            max_ts=s.max_ts,
            bytes=s.size_bytes,
        )


def _unknown_pairs(damage: Damage) -> None:
    """De-duplication rebuilt past a damaged batch: its ``(device, seq)`` pairs cannot be read."""
    _logger.warning("rebuilding the de-duplication state: %s; its (device, seq) pairs are unknown, so a "
                    "device that sends one of them again is stored again", damage)
