"""``LocalLog``: the embedded default log, partitioned segment files on local disk.

Its directory (layout, ``meta.json``, reading the partitions as events) is
:mod:`fluvial.log.directory`; de-duplication by ``(device, seq)`` is the layer of
:mod:`fluvial.log.dedup`, which reads the partitions through the directory; the
batches an append writes are made by :mod:`fluvial.log.encode`. LocalLog holds the
writer lock and the mutex, appends (one batch per partition touched, synced as the
fsync policy says), refuses appends after a failed one until :meth:`LocalLog.recover`,
and decides when the de-duplication state is loaded, rebuilt and snapshotted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Self

from fluvial.errors import ConfigError, LogError
from fluvial.events.envelope import Event
from fluvial.log.base import AppendResult, PartitionStats, RecordBatch
from fluvial.log.dedup import Deduplicator
from fluvial.log.directory import DEFAULT_PARTITIONS, READ_LIMIT, LogDirectory, partition_count, partition_path
from fluvial.log.encode import check_envelope, encode_batches
from fluvial.log.limits import check_events
from fluvial.log.segment import SegmentStore, acquire_writer_lock

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_SEGMENT_BYTES",
    "READ_LIMIT",
    "FsyncPolicy",
    "LocalLog",
]

FsyncPolicy = Literal["batch", "interval", "never"]
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
_PROBE = ".probe"
_PROBE_BYTES = 1 << 20  # recover() writes this much first: the disk must take a batch again
_logger = logging.getLogger("fluvial.log")


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
        damaged: The damage in sealed segments that opening stepped around (see
            :mod:`fluvial.log.segment`): every other batch is read, appends go on, and a
            read that reaches a damaged batch raises ``CorruptLogError``. Also in the log
            (``logging``), one error line each.
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
        self.damaged = [d for s in stores for d in s.damaged]
        self._dir = LogDirectory(path, stores)
        self._fsync = fsync
        self._fsync_interval_ms = fsync_interval_ms
        self._last_sync_ms = _now_ms()
        self._lock_fd = lock_fd
        self._mutex = threading.RLock()
        self._closed = False
        self._failed: str | None = None
        self._failure: BaseException | None = None
        self._syncer: ThreadPoolExecutor | None = None
        for msg in self.recovered:
            _logger.warning("recovered %s", msg)
        for damage in self.damaged:
            _logger.error("damaged log: %s", damage)
        # A reader keeps no de-duplication state (it never appends).
        snapshots = [] if readonly else [self._dir.snapshot_path(p) for p in range(partitions)]
        self._dedup = Deduplicator.load(self._dir, snapshots,
                                        distrust={p for p, store in enumerate(stores) if store.recovered})

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
            CorruptLogError: The last segment of a partition is damaged before its last batch,
                or segment files overlap (damage in sealed segments is stepped around:
                :attr:`damaged`).
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
            count = partition_count(path, partitions)
            stores = [
                SegmentStore(partition_path(path, p), segment_bytes=segment_bytes, writable=not readonly)
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

    # -- writing --------------------------------------------------------------

    def partition_for(self, device: str) -> int:
        """Return ``crc32(device) % partitions``: stable across processes and runs."""
        return zlib.crc32(device.encode()) % self.partitions

    def next_seq(self, device: str) -> int:
        """One more than the largest seq stored for ``device`` (0 for a new device):
        the seq to give an event whose source has no counter of its own."""
        with self._mutex:
            top = self._dedup.top(self.partition_for(device), device)
        return 0 if top is None else top + 1

    def append(self, events: Sequence[Event], *, decoded: bool = False) -> AppendResult:
        """Append events, one batch per partition touched.

        An event whose ``(device, seq)`` is already stored (or appears earlier in
        ``events``) is not stored again; its position is ``None``. All or nothing:
        the de-duplication state records the events only once their batches are
        written (and fsynced, under ``fsync="batch"``).

        Args:
            events: The events.
            decoded: The events were decoded by msgspec into :class:`Event` and checked
                with :func:`fluvial.log.limits.check_events` (as HTTP ingest does): skip the
                per-event checks. Times, seqs and integers out of range are still refused.

        Raises:
            ValidationError: An event has a wrong envelope type, or a value the log cannot
                store (path ``$[i].field``, e.g. ``$[3].payload.a.b``); nothing was written or
                recorded, and the log stays writable.
            LogError: The log is readonly, closed, or a write failed: the log refuses appends
                until :meth:`recover` succeeds. Batches a failed append wrote completely
                may be in the log; ``recover`` records them as stored.
        """
        with self._mutex:
            self._check_writable()
            if not decoded:
                for i, ev in enumerate(events):
                    check_envelope(i, ev)
                check_events(events)  # before the dedup state records anything
            positions: list[tuple[int, int] | None] = [None] * len(events)
            groups: dict[int, tuple[list[Event], list[int]]] = {}
            try:
                n, crc32 = self.partitions, zlib.crc32
                groups = self._dedup.new_events(events, [crc32(ev.device.encode()) % n for ev in events])
                batches = encode_batches(events, groups)
            except BaseException:  # nothing written: forget what the dedup state recorded
                self._forget(set(groups) or range(self.partitions))
                raise
            rolled = self._write(groups, batches, positions)  # fails: recover() rebuilds
            for p in rolled:
                self._dedup.save(p)
            accepted = sum(len(e) for e, _ in groups.values())
            return AppendResult(
                accepted=accepted, duplicates=len(events) - accepted, positions=positions
            )

    def _write(
        self,
        groups: dict[int, tuple[list[Event], list[int]]],
        batches: dict[int, tuple[int, int, bytes]],
        positions: list[tuple[int, int] | None],
    ) -> list[int]:
        """Write and sync the batches; return the partitions that rolled to a new segment."""
        now_ms = _now_ms()
        rolled = []
        try:
            for p, (evs, idx) in groups.items():
                store = self._dir.stores[p]
                n_segments = store.segment_count
                lo, hi, payload = batches[p]
                base = store.append(len(evs), now_ms, lo, hi, payload)
                for j, i in enumerate(idx):
                    positions[i] = (p, base + j)
                if store.segment_count != n_segments:
                    rolled.append(p)
            self._sync([self._dir.stores[p] for p in groups], now_ms)
        except Exception as exc:
            self._fail(exc)
            raise LogError(f"append to {self.path} failed: {exc}; the log takes appends again "
                           "once recover() succeeds") from exc
        except BaseException as exc:  # KeyboardInterrupt mid-write: the same state, re-raised as is
            self._fail(exc)
            raise
        return rolled

    def _fail(self, exc: BaseException) -> None:
        """Refuse appends until :meth:`recover` (which reopens and rebuilds from the files)."""
        self._failed = str(exc) or type(exc).__name__
        self._failure = exc
        _logger.error("append to %s failed: %s", self.path, self._failed)

    def _forget(self, partitions: Iterable[int]) -> None:
        """Rebuild the dedup state of ``partitions`` after an append that wrote nothing."""
        try:
            self._dedup.rebuild(partitions)
        except (OSError, LogError) as exc:
            self._fail(exc)  # recover() rebuilds it

    @property
    def failure(self) -> BaseException | None:
        """What made the last append fail (``None`` while the log takes appends)."""
        return self._failure if self._failed else None

    def recover(self) -> None:
        """Take appends again after a failed one, if the cause has cleared.

        Checks that the disk takes writes (writes and removes a 1 MiB probe file),
        reopens every partition (fsyncing what the failed append wrote, cutting a torn
        tail), and records as stored the events of every batch the failed append wrote
        completely: an event is either in the log and known to the de-duplication
        state, or in neither. A no-op when nothing failed.

        Raises:
            LogError: Still failing (with the reason; call again later), or the log
                is closed or readonly.
        """
        with self._mutex:
            if self._closed or self.readonly:
                self._check_writable()
            if self._failed is None:
                return
            try:
                self._probe()
                for p in range(self.partitions):
                    self._dir.reopen(p)
                self._dedup.rebuild(range(self.partitions))
            except (OSError, LogError) as exc:
                raise LogError(f"log at {self.path} still cannot be written: {exc}") from exc
            _logger.warning("log at %s takes appends again (it failed: %s)", self.path, self._failed)
            self._failed = None
            self._failure = None

    def _probe(self) -> None:
        path = self.path / _PROBE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(bytes(_PROBE_BYTES))
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()

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
        """fsync every partition now, whatever the policy.

        Raises:
            LogError: An fsync failed; the log refuses appends until :meth:`recover`.
        """
        with self._mutex:
            try:
                for store in self._dir.stores:
                    store.sync()
            except OSError as exc:
                self._fail(exc)
                raise LogError(f"fsync of {self.path} failed: {exc}") from exc
            self._last_sync_ms = _now_ms()

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise LogError(f"log at {self.path} is open readonly; open it without readonly=True")
        if self._failed:
            raise LogError(f"log at {self.path} takes no appends since one failed ({self._failed}); "
                           "call recover() once the cause is fixed (a full disk: free space)")

    # -- reading (the directory reads, under the mutex) -----------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LogError(f"log at {self.path} is closed")

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
            self._check_open()
            return self._dir.read(partition, start_offset, max_records, stop_offset)

    def start_offsets(self) -> list[int]:
        """Return the first offset of each partition (0: nothing is ever deleted)."""
        with self._mutex:
            self._check_open()
            return [self._dir.store(p).start_offset for p in range(self.partitions)]

    def end_offsets(self) -> list[int]:
        """Return, per partition, the offset after the last complete batch."""
        with self._mutex:
            self._check_open()
            return [self._dir.store(p).end_offset for p in range(self.partitions)]

    def offset_for_time(self, partition: int, ts_ms: int) -> int:
        """Return the first offset whose running max event time is >= ``ts_ms``.

        As Kafka's ``offsetsForTimes``; the end offset when no event reaches ``ts_ms``.
        """
        with self._mutex:
            self._check_open()
            return self._dir.offset_for_time(partition, ts_ms)

    def stats(self) -> list[PartitionStats]:
        """Return offsets, record count, event-time range and bytes of every partition."""
        with self._mutex:
            self._check_open()
            return [self._dir.stats(p) for p in range(self.partitions)]

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Sync, snapshot the dedup state, release the writer lock. Idempotent."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            errors = []
            try:
                for p, store in enumerate(self._dir.stores):
                    try:
                        store.close()
                    except OSError as exc:
                        errors.append(f"partition {p}: {exc}")
                        continue
                    if not self.readonly and not self._failed:
                        self._dedup.save(p)
            finally:
                if self._syncer is not None:
                    self._syncer.shutdown()
                    self._syncer = None
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None
            if errors and self._fsync != "batch":
                raise LogError(f"closing the log at {self.path}: fsync failed ({'; '.join(errors)}); "
                               "events appended since the last fsync may not be on disk")
            if errors:  # fsync="batch": every acknowledged event was fsynced; only a failed append's were not
                _logger.warning("closing the log at %s: fsync failed (%s); only events of a failed "
                                "append are affected", self.path, "; ".join(errors))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else "writer"
        return f"LocalLog({str(self.path)!r}, partitions={self.partitions}, {mode})"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
