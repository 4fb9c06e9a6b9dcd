"""A bounded on-disk queue for a device: store and forward, across restarts and power loss.

Records (bytes) are appended to segment files in a directory; the sender reads them from the
head, and once the server has acknowledged them, moves the head past them (:meth:`DiskQueue.ack`)
and deletes the segments wholly behind it.

On disk:

* ``<n>.seg``: records, each ``length (u32) | crc32 (u32) | bytes``, little-endian; a new
  segment starts when the current one passes ``segment_bytes``.
* ``head``: where the first record not yet acknowledged is (segment, offset) and the highest
  ``seq`` ever handed to the sender (:attr:`DiskQueue.high`): 24 bytes and a crc32, replaced
  atomically (write, fsync, rename, fsync of the directory).

Durability (``fsync``): ``"always"`` (the default) makes every :meth:`put` durable before it
returns, so a record the device was told is stored survives a power loss; ``"never"`` leaves it
to the operating system (a process crash loses nothing, a power loss may lose the last
records). On open, a record cut short by a crash or a power loss at the end of the last segment
is cut off (that :meth:`put` had not returned), as is everything after a record whose checksum
does not match in an earlier segment (counted in :attr:`Stats.damaged`).

Bound (``max_bytes``): the segment files never hold more than that. When a :meth:`put` would
pass it, ``on_full="refuse"`` raises :class:`QueueFull` (nothing of that put is stored; the
caller decides), and ``on_full="drop_oldest"`` deletes the oldest segments not yet sent
(their records counted in :attr:`Stats.dropped`) until the new records fit.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

__all__ = ["DiskQueue", "QueueFull", "Stats"]

_RECORD = struct.Struct("<II")
_HEAD = struct.Struct("<qqqI")
OnFull = Literal["refuse", "drop_oldest"]


class QueueFull(Exception):
    """A :meth:`DiskQueue.put` would pass the queue's bound (``on_full="refuse"``)."""


@dataclass
class Stats:
    """What the queue holds and what it had to give up (since it was opened).

    Attributes:
        records: Records stored and not yet acknowledged.
        bytes: Bytes of the segment files.
        dropped: Records deleted unsent to make room (``on_full="drop_oldest"``).
        refused: Records a :meth:`DiskQueue.put` refused (``on_full="refuse"``).
        damaged: Segments found damaged on open (not at the end of the last one, where a crash
            tears the record being written): what followed the damage in them is lost.
    """

    records: int = 0
    bytes: int = 0
    dropped: int = 0
    refused: int = 0
    damaged: int = 0


class DiskQueue:
    """A bounded FIFO of records in ``directory`` (one writer process at a time).

    Args:
        directory: Where the segments live (created if missing).
        max_bytes: The most the segment files may hold.
        on_full: ``"refuse"`` or ``"drop_oldest"`` (see the module docstring).
        fsync: ``"always"`` or ``"never"``.
        segment_bytes: Size at which a new segment starts (default: an eighth of ``max_bytes``,
            at most 1 MiB).

    Example:
        >>> import tempfile
        >>> q = DiskQueue(tempfile.mkdtemp(), max_bytes=1 << 20)
        >>> q.put([b"a", b"b"])
        >>> records, position = q.peek(10)
        >>> records
        [b'a', b'b']
        >>> q.ack(position); q.peek(10)[0]
        []
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int, on_full: OnFull = "refuse",
                 fsync: Literal["always", "never"] = "always", segment_bytes: int | None = None) -> None:
        if on_full not in ("refuse", "drop_oldest"):
            raise ValueError(f"on_full={on_full!r}: use 'refuse' or 'drop_oldest'")
        if fsync not in ("always", "never"):
            raise ValueError(f"fsync={fsync!r}: use 'always' or 'never'")
        self.segment_bytes = segment_bytes or max(1024, min(max_bytes // 8, 1 << 20))
        if max_bytes < 2 * self.segment_bytes:
            raise ValueError(f"max_bytes={max_bytes}: allow at least two segments "
                             f"({2 * self.segment_bytes} bytes)")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.on_full, self.fsync = max_bytes, on_full, fsync
        self.stats = Stats()
        self.high = -1
        """The highest ``seq`` handed to the sender so far, kept across restarts (-1: none)."""
        self._segments: dict[int, list[int]] = {}   # segment -> offsets of its records
        self._sizes: dict[int, int] = {}
        self._head = (0, 0)
        self._open()

    # -- opening ---------------------------------------------------------------------------------

    def _open(self) -> None:
        head = self._read_head()
        names = sorted(int(p.stem) for p in self.directory.glob("*.seg") if p.stem.isdigit())
        for n in names:
            if n < head[0]:   # wholly acknowledged: a crash came before its deletion
                self._path(n).unlink(missing_ok=True)
                continue
            offsets, end, damaged = self._scan(n, last=n == names[-1])
            self._segments[n], self._sizes[n] = offsets, end
            self.stats.damaged += damaged
        if head[0] not in self._segments:   # its segment was dropped or never written
            head = (min(self._segments, default=head[0]), 0)
        self._head = head
        if not self._segments:
            self._segments[head[0]], self._sizes[head[0]] = [], 0
        self.stats.records = self._count()
        self.stats.bytes = sum(self._sizes.values())

    def _read_head(self) -> tuple[int, int]:
        try:
            raw = (self.directory / "head").read_bytes()
        except FileNotFoundError:
            return (0, 0)
        if len(raw) != _HEAD.size or zlib.crc32(raw[:-4]) != _HEAD.unpack(raw)[3]:
            raise OSError(f"{self.directory / 'head'}: damaged (its checksum does not match); "
                          "remove it to send the whole queue again (the server drops what it already has)")
        segment, offset, high, _ = _HEAD.unpack(raw)
        self.high = high
        return (segment, offset)

    def _scan(self, n: int, *, last: bool) -> tuple[list[int], int, int]:
        """The record offsets of segment ``n`` and its good length; a bad tail is cut off."""
        path = self._path(n)
        data = path.read_bytes()
        offsets, pos = [], 0
        while pos + _RECORD.size <= len(data):
            length, crc = _RECORD.unpack_from(data, pos)
            body = data[pos + _RECORD.size:pos + _RECORD.size + length]
            if len(body) != length or zlib.crc32(body) != crc:
                break
            offsets.append(pos)
            pos += _RECORD.size + length
        damaged = 0
        if pos != len(data):
            # the end of the last segment: the record a crash or a power loss tore (its put had
            # not returned); elsewhere: damage, and what follows it in the segment is lost
            damaged = 0 if last else 1
            with open(path, "r+b") as f:
                f.truncate(pos)
                self._sync(f)
        return offsets, pos, damaged

    # -- writing ---------------------------------------------------------------------------------

    def put(self, records: Iterable[bytes]) -> None:
        """Append ``records`` (all or none); durable on return with ``fsync="always"``."""
        framed = [_RECORD.pack(len(r), zlib.crc32(r)) + r for r in records]
        size = sum(len(f) for f in framed)
        if not framed:
            return
        if size > self.max_bytes - 2 * self.segment_bytes:
            raise QueueFull(f"{size} bytes in one put: more than this queue can take at once")
        while self.stats.bytes + size > self.max_bytes:
            if self.on_full == "refuse" or not self._drop_oldest():
                self.stats.refused += len(framed)
                raise QueueFull(f"{self.directory}: {self.stats.bytes} of {self.max_bytes} bytes held "
                                f"({self.stats.records} records not yet sent); {len(framed)} more refused")
        tail = max(self._segments)
        if self._sizes[tail] >= self.segment_bytes:
            tail += 1
            self._segments[tail], self._sizes[tail] = [], 0
        with open(self._path(tail), "ab") as f:
            offsets, pos = self._segments[tail], self._sizes[tail]
            for frame in framed:
                offsets.append(pos)
                pos += len(frame)
            f.write(b"".join(framed))
            self._sync(f)
        self._sizes[tail] = pos
        self.stats.records += len(framed)
        self.stats.bytes += size

    def _drop_oldest(self) -> bool:
        """Delete the oldest segment (not the one being written); False if there is none."""
        segments = sorted(self._segments)
        if len(segments) < 2:
            return False
        oldest = segments[0]
        lost = len([o for o in self._segments[oldest] if (oldest, o) >= self._head])
        self._remove(oldest)
        self.stats.dropped += lost
        self.stats.records -= lost
        self._head = max(self._head, (segments[1], 0))
        self._write_head()
        return True

    # -- reading ---------------------------------------------------------------------------------

    def peek(self, n: int) -> tuple[list[bytes], tuple[int, int]]:
        """Up to ``n`` records from the head, and the position after them (for :meth:`ack`)."""
        out: list[bytes] = []
        segment, offset = self._head
        for seg in sorted(s for s in self._segments if s >= segment):
            wanted = [o for o in self._segments[seg] if seg > segment or o >= offset]
            if not wanted:
                continue
            with open(self._path(seg), "rb") as f:
                for o in wanted:
                    if len(out) == n:
                        return out, (seg, o)
                    f.seek(o)
                    length, _crc = _RECORD.unpack(f.read(_RECORD.size))
                    out.append(f.read(length))
        end = max(self._segments)
        return out, (end, self._sizes[end])

    def last(self) -> bytes | None:
        """The newest record stored (acknowledged or not), None if the queue holds none."""
        for seg in sorted(self._segments, reverse=True):
            if self._segments[seg]:
                with open(self._path(seg), "rb") as f:
                    f.seek(self._segments[seg][-1])
                    length, _crc = _RECORD.unpack(f.read(_RECORD.size))
                    return f.read(length)
        return None

    def ack(self, position: tuple[int, int], *, high: int | None = None) -> None:
        """The records before ``position`` reached the server: move the head past them."""
        if position < self._head:
            return
        before = self._count()
        self._head = position
        if high is not None:
            self.high = max(self.high, high)
        self._write_head()
        for seg in [s for s in self._segments if s < position[0]]:
            self._remove(seg)
        self.stats.records = self._count()
        assert self.stats.records <= before

    def remember(self, high: int) -> None:
        """Keep ``high`` (the highest seq about to be sent) durably before it goes out."""
        if high > self.high:
            self.high = high
            self._write_head()

    def close(self) -> None:
        """Nothing is held open between calls; here for symmetry with the other stores."""

    # -- helpers ---------------------------------------------------------------------------------

    def _count(self) -> int:
        segment, offset = self._head
        return sum(sum(1 for o in offsets if (seg, o) >= (segment, offset))
                   for seg, offsets in self._segments.items())

    def _remove(self, seg: int) -> None:
        self._path(seg).unlink(missing_ok=True)
        self.stats.bytes -= self._sizes.pop(seg)
        del self._segments[seg]
        if not self._segments:
            self._segments[seg + 1], self._sizes[seg + 1] = [], 0

    def _write_head(self) -> None:
        body = struct.pack("<qqq", *self._head, self.high)
        tmp = self.directory / "head.tmp"
        with open(tmp, "wb") as f:
            f.write(body + struct.pack("<I", zlib.crc32(body)))
            self._sync(f)
        os.replace(tmp, self.directory / "head")
        if self.fsync == "always":
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _sync(self, f: BinaryIO) -> None:
        if self.fsync == "always":
            f.flush()
            os.fsync(f.fileno())

    def _path(self, n: int) -> Path:
        return self.directory / f"{n:012d}.seg"
