"""The dead-letter log: invalid input kept with the reason it was refused.

Bad data is data (STYLE.md rule 7): ingest appends here what it could not
decode or validate, and nothing is silently dropped. The file format is the
segment/batch format of :mod:`fluvial.log.segment`, in a single partition.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import msgspec

from fluvial.errors import LogError
from fluvial.log.local import DEFAULT_SEGMENT_BYTES, READ_LIMIT
from fluvial.log.segment import SegmentStore, acquire_writer_lock

__all__ = ["DeadLetter", "DeadLetterLog"]

_logger = logging.getLogger("fluvial.log")


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One refused input.

    Attributes:
        reason: Why it was refused (``$.payload.value: expected float, got str``).
        source: Where it came from (``http``, ``mqtt:topic``, a file name...).
        line: Line number within the source, when it has lines.
        raw: The bytes as received.
        at_ms: When it was refused, epoch ms.
    """

    reason: str
    source: str
    line: int | None
    raw: bytes
    at_ms: int


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(list[DeadLetter])


class DeadLetterLog:
    """An append-only, single-partition log of :class:`DeadLetter` records.

    Example:
        >>> import tempfile
        >>> with DeadLetterLog.open(tempfile.mkdtemp()) as dl:
        ...     _ = dl.append([DeadLetter(reason="bad", source="http", line=None,
        ...                               raw=b"{", at_ms=0)])
        ...     dl.count()
        1
    """

    def __init__(self, path: Path, store: SegmentStore, lock_fd: int | None) -> None:
        self.path = path
        self._store = store
        self._lock_fd = lock_fd
        self._mutex = threading.Lock()
        self.recovered = [store.recovered] if store.recovered else []
        self.damaged = list(store.damaged)  # stepped around in sealed segments, as in LocalLog
        for damage in self.damaged:
            _logger.error("damaged dead-letter log: %s", damage)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        readonly: bool = False,
    ) -> DeadLetterLog:
        """Open (or create) the dead-letter log at ``path``; appends are fsynced.

        Raises:
            LogError: Another process is writing it.
            CorruptLogError: The last segment is damaged before its last batch, or segment
                files overlap (damage in sealed segments is stepped around: ``damaged``).
        """
        path = Path(path)
        lock_fd = None
        if not readonly:
            path.mkdir(parents=True, exist_ok=True)
            lock_fd = acquire_writer_lock(path)
        try:
            store = SegmentStore(path / "p-0000", segment_bytes=segment_bytes,
                                 writable=not readonly)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return cls(path, store, lock_fd)

    def append(self, letters: Sequence[DeadLetter]) -> int:
        """Append records durably (fsynced); return the offset of the first one.

        Raises:
            LogError: The log is readonly or closed, or the write failed (a full disk):
                call :meth:`recover` before appending again.
        """
        with self._mutex:
            if self._lock_fd is None:
                raise LogError(f"dead-letter log at {self.path} is readonly or closed")
            if not letters:
                return self._store.end_offset
            at = [d.at_ms for d in letters]
            try:
                base = self._store.append(
                    len(letters), time.time_ns() // 1_000_000, min(at), max(at), _enc.encode(letters)
                )
                self._store.sync()
            except OSError as exc:
                raise LogError(f"append to the dead-letter log at {self.path} failed: {exc}") from exc
            return base

    def recover(self) -> None:
        """After a failed append: fsync and reopen the files (cutting a torn tail).

        Raises:
            LogError: Still failing, or the log is readonly or closed.
        """
        with self._mutex:
            if self._lock_fd is None:
                raise LogError(f"dead-letter log at {self.path} is readonly or closed")
            try:
                self._store.close()  # idempotent; raises (keeping its files open) while fsync fails
                self._store = SegmentStore(self._store.path, segment_bytes=self._store.segment_bytes,
                                           writable=True)
            except OSError as exc:
                raise LogError(f"dead-letter log at {self.path} still cannot be written: {exc}") from exc

    def count(self) -> int:
        """Return how many records the log holds."""
        with self._mutex:
            self._store.refresh()
            return self._store.end_offset

    def read(self, start: int = 0, max_records: int | None = None) -> list[DeadLetter]:
        """Return records from offset ``start`` (at most ``max_records``, or READ_LIMIT)."""
        with self._mutex:
            self._store.refresh()
            stop = min(self._store.end_offset, start + (max_records or READ_LIMIT))
            out: list[DeadLetter] = []
            for base, _, payload in self._store.batches(start, stop):
                recs = _dec.decode(payload)
                out.extend(recs[max(0, start - base) : stop - base])
            return out

    def close(self) -> None:
        """Close the files and release the writer lock. Idempotent."""
        with self._mutex:
            self._store.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
