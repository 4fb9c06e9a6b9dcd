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

Corruption in a *sealed* segment (every segment but the last, complete on disk
since the writer fsyncs it before rolling) does not stop the partition from
opening, as Kafka skips a corrupt batch with a loud log line: a header with one
flipped bit is repaired in memory from its checksum (its records stay readable);
otherwise the damaged bytes run up to the next intact header (or to the end of
the segment, whose end the next file's name gives), and their offsets become a
*hole* of the index (:class:`Damage`, :attr:`SegmentStore.damaged`). A read
that reaches a hole fails (:class:`~fluvial.errors.CorruptLogError`), a read
around it works, and appends go on. A missing segment file is a hole too.
``fluvial log salvage`` makes the hole a batch of placeholders. Damage in the
last segment before its last batch, and segment files that overlap, still
refuse to open: the writer appends there.
"""

from __future__ import annotations

import bisect
import fcntl
import mmap
import os
import struct
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fluvial.errors import CorruptLogError, LogError

__all__ = [
    "HEADER",
    "MAGIC",
    "BatchHeader",
    "Damage",
    "SegmentStore",
    "acquire_writer_lock",
    "encode_batch",
    "next_header",
    "parse_header",
    "repair_header",
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


def repair_header(buf: bytes | bytearray | memoryview | mmap.mmap, pos: int,
                  expected: int) -> tuple[BatchHeader | None, bytes | None]:
    """The header at ``pos`` with the one flipped bit that makes it valid and at offset
    ``expected``, and its corrected bytes; ``(None, None)`` unless exactly one bit does."""
    raw = bytearray(buf[pos:pos + HEADER])
    if len(raw) < HEADER:
        return None, None
    found: list[tuple[BatchHeader, bytes]] = []
    for bit in range(HEADER * 8):
        raw[bit >> 3] ^= 1 << (bit & 7)
        head = parse_header(raw)
        if head is not None and head.base == expected:
            found.append((head, bytes(raw)))
        raw[bit >> 3] ^= 1 << (bit & 7)
    return found[0] if len(found) == 1 else (None, None)


def next_header(buf: bytes | bytearray | mmap.mmap, start: int, size: int, expected: int,
                next_base: int | None) -> tuple[int, int] | None:
    """``(position, base offset)`` of the first intact header at or after byte ``start`` whose
    base is past ``expected`` (and before ``next_base``): where reading resumes after damage."""
    at = buf.find(MAGIC, start, size)
    while at != -1:
        head = parse_header(buf, at)
        if head is not None and head.base > expected and (next_base is None or head.base < next_base):
            return at, head.base
        at = buf.find(MAGIC, at + 1, size)
    return None


@dataclass(frozen=True, slots=True)
class Damage:
    """Damage that opening a partition found in a sealed segment, and steps around.

    Attributes:
        path: The segment file (for a missing file: the one after the gap).
        byte_range: ``[start, end)`` bytes of ``path`` (None: a missing file).
        offsets: ``[first, stop)`` offsets that cannot be read (``first == stop``: none).
        what: What is wrong.
        readable: The records are read anyway (a header repaired from its checksum).
    """

    path: Path
    byte_range: tuple[int, int] | None
    offsets: tuple[int, int]
    what: str
    readable: bool = False

    def __str__(self) -> str:
        first, stop = self.offsets
        if self.byte_range is None:
            where = f"before {self.path}"
        else:
            start, end = self.byte_range
            where = f"{self.path} at byte {start}" + (f" (to {end})" if end > start else "")
        if self.readable:
            return (f"{where}: {self.what}; it was repaired from its checksum when the log opened, and its "
                    "records are read; `fluvial log salvage` rewrites the header")
        if first == stop:
            return (f"{where}: {self.what}; no offset is lost, the bytes are skipped (`fluvial log salvage` "
                    "moves them aside)")
        return (f"{where}: {self.what}; offsets [{first}, {stop}) cannot be read (a read that reaches them "
                "fails; the rest of the log is read and appended to). Run `fluvial log verify`, then "
                "`fluvial log salvage` keeps them as placeholders")


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

    __slots__ = ("base_offset", "bases", "end_offset", "fd", "fixed", "holes", "path", "positions", "rmax",
                 "size")

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.end_offset = base_offset
        self.size = 0
        self.bases = array("q")
        self.positions = array("q")
        self.rmax = array("q")
        self.fd: int | None = None
        self.holes: dict[int, Damage] = {}  # batch index -> the damage standing for those offsets
        self.fixed: dict[int, BatchHeader] = {}  # batch index -> its header, repaired from its checksum

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

    Attributes:
        recovered: What was cut as a torn tail on open (None: nothing).
        damaged: The damage stepped around in sealed segments (see the module docstring).
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
        self.damaged: list[Damage] = []
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
        new = [b for b in self._segment_bases() if b not in known]
        for i, base in enumerate(new):
            seg = _Segment(self.path / segment_name(base), base)
            if self._segments:
                prev = self._segments[-1]
                if base < prev.end_offset:
                    raise CorruptLogError(
                        f"{seg.path}: segment starts at offset {base} but the previous one ends at "
                        f"{prev.end_offset}; segment files overlap: move one of them aside (`fluvial log "
                        "verify` shows both)"
                    )
                if base > prev.end_offset:  # a missing file: its offsets are a hole
                    self._hole(prev, prev.size, base, f"offsets [{prev.end_offset}, {base}) are missing: no "
                               "segment file holds them", path=seg.path)
            self._segments.append(seg)
            self._scan(seg, is_last=i == len(new) - 1, next_base=new[i + 1] if i + 1 < len(new) else None)

    def _segment_bases(self) -> list[int]:
        return sorted(int(n[: -len(_SUFFIX)]) for n in os.listdir(self.path) if n.endswith(_SUFFIX))

    def _scan(self, seg: _Segment, *, is_last: bool, next_base: int | None = None) -> None:
        """Index the batches of ``seg`` from ``seg.size`` on; repair or stop at a torn tail in the
        last segment; step around damage in a sealed one (``next_base``: the next segment's start)."""
        size = seg.path.stat().st_size
        if size <= seg.size:
            return
        sealed = not is_last  # sealed segments: payload checksums are checked when read
        with open(seg.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            size = min(size, len(mm))
            while True:
                problem = self._scan_batches(seg, mm, size, sealed=sealed)
                if problem is None:
                    return
                if not sealed:
                    break
                if not self._step_over(seg, mm, size, next_base, problem[1]):
                    return
        kind, why = problem
        pos, expected = seg.size, seg.end_offset
        if kind == "corrupt":
            raise CorruptLogError(
                f"{seg.path}: {why} at byte {pos}; the log is damaged before its tail, in the segment the "
                "writer appends to. Run `fluvial log verify`, then `fluvial log salvage` (it keeps every "
                "intact record), or restore this file from a replica or backup."
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

    def _scan_batches(self, seg: _Segment, mm: mmap.mmap, size: int, *, sealed: bool) -> tuple[str, str] | None:
        """Index intact batches from ``seg.size``; return ``(kind, why)`` of what stopped it (None: the end)."""
        while seg.size < size:
            pos, expected = seg.size, seg.end_offset
            if size - pos < HEADER:
                return ("torn", f"partial batch header ({size - pos} bytes)")
            head, repaired = parse_header(mm, pos), False
            if head is None and sealed:  # one flipped bit: the checksum tells which
                head, repaired = repair_header(mm, pos, expected)[0], True
            if head is None:
                if not sealed and mm[pos:size].count(0) == size - pos:
                    return ("torn", "zero-filled tail")
                return ("corrupt", "bad batch header (magic or header checksum)")
            if head.base > expected:
                if not sealed:
                    return ("corrupt", f"batch offset {head.base}, expected {expected}")
                self._hole(seg, pos, head.base, f"offsets [{expected}, {head.base}) are missing: no batch "
                           "holds them")
                continue
            end = pos + HEADER + head.length
            if end > size:
                return ("torn", f"batch cut short ({size - pos} of {end - pos} bytes)")
            if head.base < expected:
                if not sealed:
                    return ("corrupt", f"batch offset {head.base}, expected {expected}")
                self._note(Damage(seg.path, (pos, end), (expected, expected), f"the batch repeats offsets "
                                  f"[{head.base}, {head.base + head.count}) that the batches before it hold"))
                seg.size = end
                continue
            if not sealed and zlib.crc32(mm[pos + HEADER : end]) != head.crc:
                return (("torn", "checksum mismatch in the last batch") if end == size
                        else ("corrupt", "payload checksum mismatch"))
            if repaired:
                seg.fixed[len(seg.bases)] = head
                self._note(Damage(seg.path, (pos, end), (head.base, head.base),
                                  "one bit of the batch header is flipped", readable=True))
            self._index(seg, head.base, pos, head.max_ts)
            self.min_ts = head.min_ts if self.min_ts is None else min(self.min_ts, head.min_ts)
            seg.size, seg.end_offset = end, head.base + head.count
        return None

    def _step_over(self, seg: _Segment, mm: mmap.mmap, size: int, next_base: int | None, why: str) -> bool:
        """Damage at ``seg.size`` of a sealed segment: index a hole up to the next intact header
        (True: scan on from there) or to the end of the segment (False)."""
        pos, expected = seg.size, seg.end_offset
        found = next_header(mm, pos + 1, size, expected, next_base)
        if found is not None:
            at, base = found
            self._hole(seg, at, base, f"{why}; the next intact batch starts at byte {at}")
            return True
        if next_base is None or next_base < expected:
            raise CorruptLogError(
                f"{seg.path}: {why} at byte {pos}, and nothing after it in the segment can be read, so "
                "where its offsets end is unknown. Run `fluvial log verify`, then `fluvial log salvage`."
            )
        self._hole(seg, size, next_base, f"{why}; nothing after it in the segment can be read")
        return False

    def _hole(self, seg: _Segment, end: int, stop: int, what: str, *, path: Path | None = None) -> None:
        """Bytes ``[seg.size, end)`` of ``seg`` stand for offsets ``[seg.end_offset, stop)`` that
        cannot be read: note the damage, index them as a hole, and go on after them."""
        damage = Damage(path or seg.path, None if path else (seg.size, end), (seg.end_offset, stop), what)
        self._note(damage)
        if stop > seg.end_offset:
            seg.holes[len(seg.bases)] = damage
            self._index(seg, seg.end_offset, seg.size, None)
        seg.size, seg.end_offset = end, stop

    def _note(self, damage: Damage) -> None:
        self.damaged.append(damage)

    def _index(self, seg: _Segment, base: int, pos: int, max_ts: int | None) -> None:
        prev = seg.rmax[-1] if seg.rmax else self._prev_rmax(seg)
        seg.bases.append(base)
        seg.positions.append(pos)
        seg.rmax.append(prev if max_ts is None else max(prev, max_ts))

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
            later = [b for b in self._segment_bases() if b > last.base_offset]
            if later:
                # the writer rolled: ``last`` is sealed now, so finish it before moving on
                self._scan(last, is_last=False, next_base=later[0])
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

    def batches(self, start_offset: int, stop_offset: int, *,
                on_damage: Callable[[Damage], None] | None = None) -> Iterator[tuple[int, int, bytes]]:
        """Yield ``(base_offset, append_ms, payload)`` of the batches overlapping the range.

        Args:
            on_damage: Called with each damaged batch (a hole of the index, a payload that fails
                its checksum) in the range, which is then skipped; by default it raises.

        Raises:
            CorruptLogError: A batch in the range is damaged (names file, byte and offsets).
        """
        if start_offset >= min(stop_offset, self.end_offset):
            return
        si, bi = self._locate(start_offset)
        while si < len(self._segments):
            seg = self._segments[si]
            while bi < len(seg.bases):
                base = seg.bases[bi]
                if base >= stop_offset:
                    return
                pos = seg.positions[bi]
                damage = seg.holes.get(bi)
                if damage is None:
                    end = seg.positions[bi + 1] if bi + 1 < len(seg.bases) else seg.size
                    data = os.pread(seg.read_fd(), end - pos, pos)
                    head = seg.fixed.get(bi)
                    if head is None:
                        _, _, _, length, append_ms, _, _, crc = _HEAD.unpack_from(data)
                    else:
                        length, append_ms, crc = head.length, head.append_ms, head.crc
                    payload = data[HEADER : HEADER + length]
                    if zlib.crc32(payload) == crc and len(payload) == length:
                        yield base, append_ms, payload
                        bi += 1
                        continue
                    stop = seg.bases[bi + 1] if bi + 1 < len(seg.bases) else seg.end_offset
                    damage = Damage(seg.path, (pos, pos + HEADER + length), (base, stop),
                                    "payload checksum mismatch")
                if on_damage is None:
                    raise CorruptLogError(str(damage))
                on_damage(damage)
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
