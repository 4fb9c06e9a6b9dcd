"""``LocalLog``: the embedded default log, partitioned segment files on local disk.

Layout::

    path/meta.json                      {"format": 1, "partitions": N}
    path/.lock                          single-writer lock (flock), holds the writer's pid
    path/p-0000/00000000000000000000.seg   record batches (see ``segment.py``)
    path/p-0000/dedup.snapshot          (device, seq) state and the offset it covers

Time index: each batch header carries its min/max event time, so on open the
log rebuilds, from headers alone, an in-memory index of every batch (offset,
file position, running max event time). There is no ``.tidx`` file to keep
consistent with the segments after a crash; the cost is one header read per
batch at open.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Self

import msgspec

from fluvial.errors import ConfigError, LogError, ValidationError
from fluvial.events.envelope import Event
from fluvial.log.base import AppendResult, PartitionStats, RecordBatch
from fluvial.log.dedup import DedupState
from fluvial.log.segment import SegmentStore, acquire_writer_lock

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_SEGMENT_BYTES",
    "READ_LIMIT",
    "FsyncPolicy",
    "LocalLog",
]

FsyncPolicy = Literal["batch", "interval", "never"]
DEFAULT_PARTITIONS = 4
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
READ_LIMIT = 1 << 20  # records returned by one read() when max_records is None
_FORMAT = 1
_SNAPSHOT = "dedup.snapshot"
_logger = logging.getLogger("fluvial.log")
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(list[Event])


class LocalLog:
    """An append-only, partitioned event log in a local directory.

    Open it with :meth:`open`. One process at a time may write; any number of
    ``readonly`` instances (in any process) may read alongside it.

    Example:
        >>> import tempfile
        >>> with LocalLog.open(tempfile.mkdtemp(), partitions=2) as log:
        ...     r = log.append([Event(device="d1", kind="line", ts=5, seq=1,
        ...                           payload={"text": "hi"})])
        ...     log.read(log.partition_for("d1"), 0).events[0].payload
        {'text': 'hi'}

    Attributes:
        path: The log directory.
        partitions: Number of partitions.
        recovered: One message per torn tail cut on open (empty if none).
    """

    def __init__(
        self,
        path: Path,
        partitions: int,
        stores: list[SegmentStore],
        *,
        fsync: FsyncPolicy,
        fsync_interval_ms: int,
        readonly: bool,
        lock_fd: int | None,
    ) -> None:
        self.path = path
        self.partitions = partitions
        self.readonly = readonly
        self.recovered = [s.recovered for s in stores if s.recovered]
        self._stores = stores
        self._fsync = fsync
        self._fsync_interval_ms = fsync_interval_ms
        self._last_sync_ms = _now_ms()
        self._lock_fd = lock_fd
        self._mutex = threading.RLock()
        self._closed = False
        self._failed: str | None = None
        self._dedup: list[DedupState] = []
        self._partial: dict[int, tuple[int, list[Event]]] = {}  # partition -> last partly read batch
        self._syncer: ThreadPoolExecutor | None = None
        for msg in self.recovered:
            _logger.warning("recovered %s", msg)
        if not readonly:
            self._dedup = [self._load_dedup(p) for p in range(partitions)]

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        partitions: int | None = None,
        fsync: FsyncPolicy = "batch",
        fsync_interval_ms: int = 1000,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        readonly: bool = False,
    ) -> LocalLog:
        """Open (or, for a writer, create) the log at ``path``.

        Args:
            path: The log directory.
            partitions: Partition count; defaults to 4 for a new log and to the
                existing count otherwise. A different count than stored is an error.
            fsync: ``"batch"``: fsync before ``append`` returns (acknowledged =>
                durable); ``"interval"``: at most every ``fsync_interval_ms``,
                checked on each append and at close; ``"never"``: leave it to the OS.
            fsync_interval_ms: Period for ``fsync="interval"``.
            segment_bytes: Roll to a new segment file past this size.
            readonly: Read without taking the writer lock; sees new appends.

        Raises:
            ConfigError: Bad arguments, or ``partitions`` differs from the stored count.
            LogError: Another writer holds the log, or a readonly log does not exist.
            CorruptLogError: A checksum failed away from the tail.
        """
        path = Path(path)
        if fsync not in ("batch", "interval", "never"):
            raise ConfigError(f"fsync must be 'batch', 'interval' or 'never', got {fsync!r}")
        if partitions is not None and partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {partitions}")
        if segment_bytes < 1024:
            raise ConfigError(f"segment_bytes must be >= 1024, got {segment_bytes}")
        lock_fd = None
        if not readonly:
            path.mkdir(parents=True, exist_ok=True)
            lock_fd = acquire_writer_lock(path)
        elif not (path / "meta.json").exists():
            raise LogError(f"no log at {path} (meta.json missing); open it for writing first")
        try:
            count = cls._meta(path, partitions, readonly)
            stores = [
                SegmentStore(path / f"p-{p:04d}", segment_bytes=segment_bytes, writable=not readonly)
                for p in range(count)
            ]
            return cls(
                path,
                count,
                stores,
                fsync=fsync,
                fsync_interval_ms=fsync_interval_ms,
                readonly=readonly,
                lock_fd=lock_fd,
            )
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    @staticmethod
    def _meta(path: Path, partitions: int | None, readonly: bool) -> int:
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

    # -- dedup ----------------------------------------------------------------

    def _load_dedup(self, p: int) -> DedupState:
        store = self._stores[p]
        snap_path = store.path / _SNAPSHOT
        loaded = DedupState.load(snap_path)
        if loaded is not None and loaded[1] <= store.end_offset and not store.recovered:
            state, start = loaded
        else:
            state, start = DedupState(), store.start_offset
        for _base, _, payload in store.batches(start, store.end_offset):
            for ev in _dec.decode(payload):
                state.add(ev.device, ev.seq)
        if loaded is None or loaded[1] != store.end_offset:
            state.save(snap_path, store.end_offset)
        return state

    # -- writing --------------------------------------------------------------

    def partition_for(self, device: str) -> int:
        """Return ``crc32(device) % partitions``: stable across processes and runs."""
        return zlib.crc32(device.encode()) % self.partitions

    def next_seq(self, device: str) -> int:
        """One more than the largest seq stored for ``device`` (0 for a new device):
        the seq to give an event whose source has no counter of its own."""
        with self._mutex:
            top = self._dedup[self.partition_for(device)].top(device)
        return 0 if top is None else top + 1

    def append(self, events: Sequence[Event], *, decoded: bool = False) -> AppendResult:
        """Append events, one batch per partition touched.

        An event whose ``(device, seq)`` is already stored (or appears earlier in
        ``events``) is not stored again; its position is ``None``.

        Args:
            events: The events.
            decoded: The events were decoded by msgspec into :class:`Event` (as HTTP
                ingest does), so their types are right and their payloads hold only
                what MessagePack stores: skip the per-event checks and the trial encode.

        Raises:
            ValidationError: An event has a wrong envelope type (path ``$[i].field``).
            LogError: The log is readonly, closed, or a write failed.
        """
        with self._mutex:
            self._check_writable()
            if not decoded:
                for i, ev in enumerate(events):
                    _check_event(i, ev)
                _check_encodable(events)  # before the dedup state records anything
            positions: list[tuple[int, int] | None] = [None] * len(events)
            n, dedup, crc32 = self.partitions, self._dedup, zlib.crc32
            by_partition: list[list[Event]] = [[] for _ in range(n)]
            index: list[list[int]] = [[] for _ in range(n)]
            for i, ev in enumerate(events):
                device = ev.device
                p = crc32(device.encode()) % n
                if dedup[p].add(device, ev.seq):
                    by_partition[p].append(ev)
                    index[p].append(i)
            groups = {p: (by_partition[p], index[p]) for p in range(n) if by_partition[p]}
            now_ms = _now_ms()
            rolled = []
            try:
                for p, (evs, idx) in groups.items():
                    store = self._stores[p]
                    n_segments = store.segment_count
                    ts = [e.ts for e in evs]
                    base = store.append(len(evs), now_ms, min(ts), max(ts), _enc.encode(evs))
                    for j, i in enumerate(idx):
                        positions[i] = (p, base + j)
                    if store.segment_count != n_segments:
                        rolled.append(p)
                self._sync([self._stores[p] for p in groups], now_ms)
                for p in rolled:
                    self._dedup[p].save(self._stores[p].path / _SNAPSHOT, self._stores[p].end_offset)
            except (OSError, LogError) as exc:
                self._failed = str(exc)
                raise LogError(f"append to {self.path} failed: {exc}; reopen the log") from exc
            accepted = sum(len(e) for e, _ in groups.values())
            return AppendResult(
                accepted=accepted, duplicates=len(events) - accepted, positions=positions
            )

    def _sync(self, touched: list[SegmentStore], now_ms: int) -> None:
        if self._fsync == "batch":
            if len(touched) == 1:
                touched[0].sync()
                return
            # One fsync per partition file, at the same time (fsync releases the GIL).
            if self._syncer is None:
                self._syncer = ThreadPoolExecutor(min(self.partitions, 8), thread_name_prefix="fluvial-fsync")
            for future in [self._syncer.submit(store.sync) for store in touched]:
                future.result()
        elif self._fsync == "interval" and now_ms - self._last_sync_ms >= self._fsync_interval_ms:
            self.flush()

    def flush(self) -> None:
        """fsync every partition now, whatever the policy."""
        with self._mutex:
            for store in self._stores:
                store.sync()
            self._last_sync_ms = _now_ms()

    def _check_writable(self) -> None:
        if self._closed:
            raise LogError(f"log at {self.path} is closed")
        if self.readonly:
            raise LogError(f"log at {self.path} is open readonly; open it without readonly=True")
        if self._failed:
            raise LogError(f"log at {self.path} failed earlier ({self._failed}); reopen it")

    # -- reading --------------------------------------------------------------

    def _store(self, partition: int) -> SegmentStore:
        if self._closed:
            raise LogError(f"log at {self.path} is closed")
        if not 0 <= partition < self.partitions:
            raise LogError(
                f"partition {partition} does not exist; the log at {self.path} has "
                f"partitions 0..{self.partitions - 1}"
            )
        store = self._stores[partition]
        store.refresh()
        return store

    def read(
        self,
        partition: int,
        start_offset: int,
        *,
        max_records: int | None = None,
        stop_offset: int | None = None,
    ) -> RecordBatch:
        """Read events of one partition from ``start_offset`` (before ``stop_offset``).

        Returns at most ``max_records`` (at most :data:`READ_LIMIT` when None);
        an empty batch at the end of the partition.

        Raises:
            LogError: No such partition, or ``start_offset`` is outside the log.
            CorruptLogError: A batch on the way fails its checksum.
        """
        with self._mutex:
            store = self._store(partition)
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

    def start_offsets(self) -> list[int]:
        """Return the first offset of each partition (0: nothing is ever deleted)."""
        with self._mutex:
            return [self._store(p).start_offset for p in range(self.partitions)]

    def end_offsets(self) -> list[int]:
        """Return, per partition, the offset after the last complete batch."""
        with self._mutex:
            return [self._store(p).end_offset for p in range(self.partitions)]

    def offset_for_time(self, partition: int, ts_ms: int) -> int:
        """Return the first offset whose running max event time is >= ``ts_ms``.

        As Kafka's ``offsetsForTimes``; the end offset when no event reaches ``ts_ms``.
        """
        with self._mutex:
            store = self._store(partition)
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

    def stats(self) -> list[PartitionStats]:
        """Return offsets, record count, event-time range and bytes of every partition."""
        with self._mutex:
            out = []
            for p in range(self.partitions):
                s = self._store(p)
                out.append(
                    PartitionStats(
                        partition=p,
                        start_offset=s.start_offset,
                        end_offset=s.end_offset,
                        records=s.end_offset - s.start_offset,
                        min_ts=s.min_ts,
                        max_ts=s.max_ts,
                        bytes=s.size_bytes,
                    )
                )
            return out

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Sync, snapshot the dedup state, release the writer lock. Idempotent."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                for p, store in enumerate(self._stores):
                    store.close()
                    if not self.readonly and not self._failed:
                        self._dedup[p].save(store.path / _SNAPSHOT, store.end_offset)
            finally:
                if self._syncer is not None:
                    self._syncer.shutdown()
                    self._syncer = None
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else "writer"
        return f"LocalLog({str(self.path)!r}, partitions={self.partitions}, {mode})"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_encodable(events: Sequence[Event]) -> None:
    """Raise ValidationError naming the first event MessagePack cannot store."""
    try:
        _enc.encode(events)
        return
    except (OverflowError, TypeError, ValueError):
        pass
    for i, ev in enumerate(events):
        try:
            _enc.encode([ev])
        except (OverflowError, TypeError, ValueError) as exc:
            raise ValidationError(f"$[{i}].payload", f"cannot be stored: {exc}") from None


def _check_event(i: int, ev: Event) -> None:
    if not isinstance(ev, Event):
        raise ValidationError(f"$[{i}]", f"expected Event, got {type(ev).__name__}")
    if type(ev.device) is not str or not ev.device:
        raise ValidationError(f"$[{i}].device", "expected a non-empty str")
    if type(ev.kind) is not str or not ev.kind:
        raise ValidationError(f"$[{i}].kind", "expected a non-empty str")
    if type(ev.ts) is not int:
        raise ValidationError(f"$[{i}].ts", f"expected int, got {type(ev.ts).__name__}")
    if type(ev.seq) is not int or ev.seq < 0:
        raise ValidationError(f"$[{i}].seq", "expected int >= 0")
    if type(ev.payload) is not dict:
        raise ValidationError(f"$[{i}].payload", "expected object")
