"""Segment files of record batches: the on-disk format shared by every local log.

A partition is a directory of segment files named by the offset of their first
record (``00000000000000000000.seg``). A segment is a sequence of batches, one
per append; a batch is a fixed header followed by an opaque payload::

    magic      4s   b"FLB1"
    base       u64  offset of the first record
    count      u32  records in the batch
    length     u32  payload bytes
    append_ms  i64  wall-clock time of the append
    min_ts     i64  smallest event time in the batch
    max_ts     i64  largest event time in the batch
    crc        u32  crc32 of the payload
    header_crc u32  crc32 of the 48 header bytes before it

The header carries the time range so that the time index is rebuilt from
headers alone, without decoding payloads. A batch that is cut short, or whose
checksum fails, *at the very end* of the last segment is a torn write and is
cut off on open; anything wrong before that is corruption.
"""

from __future__ import annotations

import bisect
import fcntl
import mmap
import os
import struct
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fluvial.errors import CorruptLogError, LogError

__all__ = [
    "HEADER",
    "MAGIC",
    "BatchHeader",
    "SegmentStore",
    "acquire_writer_lock",
    "encode_batch",
    "parse_header",
    "segment_base",
]

MAGIC = b"FLB1"
_HEAD = struct.Struct("<4sQIIqqqI")
_HCRC = struct.Struct("<I")
HEADER = _HEAD.size + _HCRC.size
_SUFFIX = ".seg"


def encode_batch(
    base_offset: int, count: int, append_ms: int, min_ts: int, max_ts: int, payload: bytes
) -> bytes:
    """Return header + payload for one batch."""
    head = _HEAD.pack(
        MAGIC, base_offset, count, len(payload), append_ms, min_ts, max_ts, zlib.crc32(payload)
    )
    return head + _HCRC.pack(zlib.crc32(head)) + payload


def segment_name(base_offset: int) -> str:
    """Return the file name of the segment whose first offset is ``base_offset``."""
    return f"{base_offset:020d}{_SUFFIX}"


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The fields of a batch header (see the module docstring)."""

    base: int
    count: int
    length: int
    append_ms: int
    min_ts: int
    max_ts: int
    crc: int


def parse_header(buf: bytes | bytearray | memoryview | mmap.mmap, pos: int = 0) -> BatchHeader | None:
    """The batch header at byte ``pos`` of ``buf``; None when it is cut short or its magic or
    header checksum fails. For scanners that must not stop at damage (``fluvial log verify``)."""
    if len(buf) - pos < HEADER:
        return None
    head = bytes(buf[pos : pos + _HEAD.size])
    magic, base, count, length, append_ms, min_ts, max_ts, crc = _HEAD.unpack(head)
    if magic != MAGIC or _HCRC.unpack_from(buf, pos + _HEAD.size)[0] != zlib.crc32(head):
        return None
    return BatchHeader(base, count, length, append_ms, min_ts, max_ts, crc)


def segment_base(name: str) -> int | None:
    """The base offset a segment file name stands for; None if it is not one (``x.seg``)."""
    stem = name[: -len(_SUFFIX)] if name.endswith(_SUFFIX) else ""
    return int(stem) if len(stem) == 20 and stem.isdigit() else None


def acquire_writer_lock(path: Path) -> int:
    """Take the single-writer lock ``path/.lock``; return its file descriptor.

    Raises:
        LogError: Another process holds it (the message gives its pid).
    """
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LogError(
            f"log at {path} is already open for writing (pid {holder}); close that writer "
            "first, or open with readonly=True to read alongside it"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Segment:
    """One segment file and the index of its batches (base offset, position, running max ts)."""

    __slots__ = ("base_offset", "bases", "end_offset", "fd", "path", "positions", "rmax", "size")

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.end_offset = base_offset
        self.size = 0
        self.bases = array("q")
        self.positions = array("q")
        self.rmax = array("q")
        self.fd: int | None = None

    def read_fd(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY)
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class SegmentStore:
    """The batches of one partition, across its segment files.

    Args:
        path: The partition directory.
        segment_bytes: Roll to a new segment when a batch would make it larger.
        writable: Writer mode: repairs a torn tail and allows :meth:`append`.
    """

    def __init__(
        self,
        path: Path,
        *,
        segment_bytes: int,
        writable: bool,
    ) -> None:
        self.path = path
        self.segment_bytes = segment_bytes
        self.writable = writable
        self.recovered: str | None = None
        self.min_ts: int | None = None
        self._segments: list[_Segment] = []
        self._wfd: int | None = None
        self._dirty = False
        self._open()

    # -- opening and scanning -------------------------------------------------

    def _open(self) -> None:
        if self.writable:
            self.path.mkdir(parents=True, exist_ok=True)
        self._load_new_segments()
        if self.writable:
            if not self._segments:
                self._create_segment(0)
            last = self._segments[-1]
            self._wfd = os.open(last.path, os.O_WRONLY | os.O_APPEND)

    def _load_new_segments(self) -> None:
        if not self.path.is_dir():
            return
        known = {s.base_offset for s in self._segments}
        names = sorted(p for p in os.listdir(self.path) if p.endswith(_SUFFIX))
        new = [int(n[: -len(_SUFFIX)]) for n in names if int(n[: -len(_SUFFIX)]) not in known]
        for base in sorted(new):
            seg = _Segment(self.path / segment_name(base), base)
            expected = self.end_offset
            if self._segments and base != expected:
                raise CorruptLogError(
                    f"{seg.path}: segment starts at offset {base} but the previous one ends at "
                    f"{expected}; a segment file is missing or misnamed"
                )
            self._segments.append(seg)
            self._scan(seg, is_last=base == max(new))

    def _scan(self, seg: _Segment, *, is_last: bool) -> None:
        """Index the batches of ``seg`` from ``seg.size`` on; repair or stop at a torn tail."""
        size = seg.path.stat().st_size
        if size <= seg.size:
            return
        verify = is_last  # sealed segments: payload checksums are checked when read
        with open(seg.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            size = min(size, len(mm))
            pos, expected = seg.size, seg.end_offset
            prev_max = seg.rmax[-1] if seg.rmax else self._prev_rmax(seg)
            problem: tuple[str, str] | None = None
            while pos < size:
                if size - pos < HEADER:
                    problem = ("torn", f"partial batch header ({size - pos} bytes)")
                    break
                head = mm[pos : pos + _HEAD.size]
                magic, base, count, length, _, min_ts, max_ts, crc = _HEAD.unpack(head)
                if magic != MAGIC or _HCRC.unpack_from(mm, pos + _HEAD.size)[0] != zlib.crc32(
                    head
                ):
                    if mm[pos:size].count(0) == size - pos:
                        problem = ("torn", "zero-filled tail")
                    else:
                        problem = ("corrupt", "bad batch header (magic or header checksum)")
                    break
                if base != expected:
                    problem = ("corrupt", f"batch offset {base}, expected {expected}")
                    break
                end = pos + HEADER + length
                if end > size:
                    problem = ("torn", f"batch cut short ({size - pos} of {end - pos} bytes)")
                    break
                if verify and zlib.crc32(mm[pos + HEADER : end]) != crc:
                    problem = (
                        ("torn", "checksum mismatch in the last batch")
                        if end == size
                        else ("corrupt", "payload checksum mismatch")
                    )
                    break
                prev_max = max(prev_max, max_ts)
                seg.bases.append(base)
                seg.positions.append(pos)
                seg.rmax.append(prev_max)
                self.min_ts = min_ts if self.min_ts is None else min(self.min_ts, min_ts)
                pos, expected = end, base + count
        seg.size, seg.end_offset = pos, expected
        if problem is None:
            return
        kind, why = problem
        if kind == "corrupt" or not is_last:
            raise CorruptLogError(
                f"{seg.path}: {why} at byte {pos}; the log is damaged before its tail. "
                "Restore this file from a replica or backup."
            )
        if self.writable:
            with open(seg.path, "r+b") as g:
                g.truncate(pos)
                os.fsync(g.fileno())
            self.recovered = (
                f"{seg.path}: cut a torn tail at byte {pos} ({why}, {size - pos} bytes removed); "
                f"partition ends at offset {expected}"
            )
        # readonly: the writer may still be writing this batch; it is simply not visible yet

    def _prev_rmax(self, seg: _Segment) -> int:
        for s in reversed(self._segments):
            if s is not seg and s.rmax and s.base_offset < seg.base_offset:
                return s.rmax[-1]
        return -(2**63)

    def refresh(self) -> None:
        """Readers: pick up batches and segments appended by the writer since last time."""
        if self.writable:
            return
        if self._segments:
            last = self._segments[-1]
            self._scan(last, is_last=True)
            names = [p for p in os.listdir(self.path) if p.endswith(_SUFFIX)]
            if len(names) > len(self._segments):
                # the writer rolled: ``last`` is sealed now, so finish it before moving on
                self._scan(last, is_last=False)
        self._load_new_segments()

    # -- writing --------------------------------------------------------------

    def _create_segment(self, base: int) -> None:
        seg = _Segment(self.path / segment_name(base), base)
        fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        _fsync_dir(self.path)
        self._segments.append(seg)

    def append(self, count: int, append_ms: int, min_ts: int, max_ts: int, payload: bytes) -> int:
        """Write one batch; return its base offset. Not durable until :meth:`sync`."""
        if self._wfd is None:
            raise LogError(f"{self.path}: not open for writing")
        base = self.end_offset
        data = encode_batch(base, count, append_ms, min_ts, max_ts, payload)
        seg = self._segments[-1]
        if seg.size and seg.size + len(data) > self.segment_bytes:
            self._roll(base)
            seg = self._segments[-1]
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._wfd, view) :]
        except OSError as exc:
            os.ftruncate(self._wfd, seg.size)
            raise LogError(f"{seg.path}: append failed: {exc}") from exc
        prev = seg.rmax[-1] if seg.rmax else self._prev_rmax(seg)
        seg.bases.append(base)
        seg.positions.append(seg.size)
        seg.rmax.append(max(prev, max_ts))
        seg.size += len(data)
        seg.end_offset = base + count
        self.min_ts = min_ts if self.min_ts is None else min(self.min_ts, min_ts)
        self._dirty = True
        return base

    def _roll(self, base: int) -> None:
        assert self._wfd is not None
        os.fsync(self._wfd)  # a sealed segment is always complete on disk
        self._dirty = False
        os.close(self._wfd)
        self._wfd = None
        self._create_segment(base)
        self._wfd = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND)

    def sync(self) -> None:
        """fsync what was appended since the last sync."""
        if self._dirty and self._wfd is not None:
            os.fsync(self._wfd)
            self._dirty = False

    def close(self) -> None:
        """Sync and close every file."""
        self.sync()
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        for seg in self._segments:
            seg.close()

    # -- reading --------------------------------------------------------------

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def start_offset(self) -> int:
        return self._segments[0].base_offset if self._segments else 0

    @property
    def end_offset(self) -> int:
        return self._segments[-1].end_offset if self._segments else 0

    @property
    def max_ts(self) -> int | None:
        for seg in reversed(self._segments):
            if seg.rmax:
                return seg.rmax[-1]
        return None

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def _locate(self, offset: int) -> tuple[int, int]:
        """Return (segment index, batch index) of the batch holding ``offset``."""
        si = bisect.bisect_right([s.base_offset for s in self._segments], offset) - 1
        seg = self._segments[si]
        return si, bisect.bisect_right(seg.bases, offset) - 1

    def batches(self, start_offset: int, stop_offset: int) -> Iterator[tuple[int, int, bytes]]:
        """Yield ``(base_offset, append_ms, payload)`` of the batches overlapping the range.

        Raises:
            CorruptLogError: A payload fails its checksum (names file and byte).
        """
        if start_offset >= min(stop_offset, self.end_offset):
            return
        si, bi = self._locate(start_offset)
        while si < len(self._segments):
            seg = self._segments[si]
            fd = seg.read_fd()
            while bi < len(seg.bases):
                base = seg.bases[bi]
                if base >= stop_offset:
                    return
                pos = seg.positions[bi]
                end = seg.positions[bi + 1] if bi + 1 < len(seg.bases) else seg.size
                data = os.pread(fd, end - pos, pos)
                _, _, _, length, append_ms, _, _, crc = _HEAD.unpack_from(data)
                payload = data[HEADER : HEADER + length]
                if zlib.crc32(payload) != crc or len(payload) != length:
                    raise CorruptLogError(
                        f"{seg.path}: payload checksum mismatch in the batch at byte {pos} "
                        f"(offset {base}); restore this file from a replica or backup"
                    )
                yield base, append_ms, payload
                bi += 1
            si, bi = si + 1, 0

    def find_time(self, ts_ms: int) -> tuple[int, int] | None:
        """Return (base offset, running max before it) of the first batch reaching ``ts_ms``."""
        for _si, seg in enumerate(self._segments):
            if seg.rmax and seg.rmax[-1] >= ts_ms:
                bi = bisect.bisect_left(seg.rmax, ts_ms)
                if bi > 0:
                    before = seg.rmax[bi - 1]
                else:
                    before = self._prev_rmax(seg)
                return seg.bases[bi], before
        return None
