"""Check the local logs byte by byte: what ``fluvial log verify`` reports and salvage repairs.

The scan reads segment files directly (read-only, no writer lock), so it works
while a server appends and on a log that :class:`~fluvial.log.LocalLog` refuses
to open. Unlike opening, it does not stop at the first damage: it walks the
whole frame layout of :mod:`fluvial.log.segment` and reports every problem with
its partition, segment file, byte range and offset range.

Per segment, every batch (frame) is checked for:

* its header: magic and header checksum. A header with one flipped bit is
  repaired from its checksum (CRC-32 corrects any single-bit error in 52 bytes);
  otherwise the scan finds the next intact header, and the bytes in between are
  one damaged frame whose offsets run up to that header's base offset;
* the index: base offsets consecutive within and across segments, and segment
  file names equal to their first offset (a missing file is a gap of offsets);
* its payload checksum (``mode="checksums"`` and ``"full"``);
* ``mode="full"``: the payload decodes as the readers decode it, holds exactly the
  header's record count, and the header's time range (the time index is rebuilt
  from headers) is the records' own.

Bytes the writer may still be writing (a partial batch or zeros at the very end
of the last segment) are a note, not damage: the writer cuts a torn tail when it
opens the log. Outside the segments, a damaged ``dedup.snapshot`` (the writer
rebuilds it from the log) and an unreadable ``meta.json`` are problems too.

Example:
    >>> import tempfile
    >>> from fluvial.log import LocalLog
    >>> from fluvial.events import Event
    >>> d = tempfile.mkdtemp()
    >>> with LocalLog.open(f"{d}/log", partitions=1) as log:
    ...     _ = log.append([Event(device="a", kind="line", ts=1, seq=0, payload={})])
    >>> verify(d).intact
    True
"""

from __future__ import annotations

import json
import mmap
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from fluvial.events.envelope import Event
from fluvial.log.dedup import DedupState
from fluvial.log.segment import (
    HEADER,
    BatchHeader,
    encode_batch,
    next_header,
    parse_header,
    repair_header,
    segment_base,
)

__all__ = [
    "LOGS",
    "Frame",
    "Mode",
    "PartitionReport",
    "Problem",
    "Report",
    "SegmentScan",
    "log_bytes",
    "log_dirs",
    "verify",
]

Mode = Literal["headers", "checksums", "full"]
LOGS = {"events": "log", "dead-letters": "dead-letters"}
"""The logs of a data directory: name -> directory. Both use the segment format."""
SNAPSHOT = "dedup.snapshot"
Progress = Callable[[int], None]

_events = msgspec.msgpack.Decoder(list[Event])


class _Letter(msgspec.Struct):  # the one field of a DeadLetter the checks need
    at_ms: int


_letters = msgspec.msgpack.Decoder(list[_Letter])


def _record_times(log: str, payload: bytes) -> list[int]:
    """Event times (dead letters: refusal times) of a payload, decoded as the readers do."""
    if log == "events":
        return [e.ts for e in _events.decode(payload)]
    return [d.at_ms for d in _letters.decode(payload)]


@dataclass(frozen=True)
class Frame:
    """One batch of a segment as the scan found it.

    Attributes:
        pos: Byte position of its header; ``end``: the byte after it (``pos == end``
            for offsets that no batch holds).
        base: Its first offset; ``count``: its records (None: unknown).
        min_ts: Its smallest event time, when the header can be trusted.
        append_ms: When it was appended, when the header can be trusted.
        damage: What is wrong (None: intact).
        header: A corrected header: the records are intact and only the header
            is rewritten (a repaired bit, or a wrong time range).
    """

    pos: int
    end: int
    base: int
    count: int | None
    min_ts: int | None = None
    max_ts: int | None = None
    append_ms: int | None = None
    damage: str | None = None
    header: bytes | None = None

    @property
    def lost(self) -> bool:
        """Its records cannot be read (a damaged frame that no header rewrite fixes)."""
        return self.damage is not None and self.header is None


@dataclass
class SegmentScan:
    """The frames of one segment file, and what is after the last one."""

    name: str
    base: int
    size: int
    last: bool
    frames: list[Frame] = field(default_factory=list)
    end_offset: int = 0
    tail_pos: int = 0
    tail: str | None = None


@dataclass(frozen=True)
class Problem:
    """One piece of damage.

    Attributes:
        log: ``events`` or ``dead-letters``.
        partition: The partition (None: the whole log).
        file: The file, relative to its partition directory (or log directory).
        what: What is wrong.
        fix: What ``fluvial log salvage`` does about it.
        byte_range: ``[start, end)`` bytes of the file, when it applies.
        offsets: ``[start, stop)`` offsets affected (stop None: unknown).
        records: Records in ``offsets`` (None: unknown).
        lost: Records salvage gives up (0: none, None: unknown).
        sealed: In a sealed segment (not the one the writer appends to).
    """

    log: str
    partition: int | None
    file: str
    what: str
    fix: str
    byte_range: tuple[int, int] | None = None
    offsets: tuple[int, int | None] | None = None
    records: int | None = None
    lost: int | None = 0
    sealed: bool = True

    @property
    def fixable(self) -> bool:
        """Salvage handles it (else it needs a person)."""
        return not self.fix.startswith("none")

    def to_dict(self) -> dict[str, Any]:
        return {"log": self.log, "partition": self.partition, "file": self.file, "what": self.what,
                "fix": self.fix, "bytes": list(self.byte_range) if self.byte_range else None,
                "offsets": list(self.offsets) if self.offsets else None, "records": self.records,
                "lost": self.lost, "sealed": self.sealed}


@dataclass
class PartitionReport:
    """One partition of one log: its size and what is wrong with it."""

    log: str
    partition: int
    path: Path
    segments: int = 0
    batches: int = 0
    start_offset: int = 0
    end_offset: int = 0
    bytes: int = 0
    min_ts: int | None = None
    max_ts: int | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    scans: list[SegmentScan] = field(default_factory=list, repr=False)

    @property
    def records(self) -> int:
        return self.end_offset - self.start_offset

    def to_dict(self) -> dict[str, Any]:
        return {"log": self.log, "partition": self.partition, "segments": self.segments,
                "batches": self.batches, "records": self.records,
                "offsets": [self.start_offset, self.end_offset], "bytes": self.bytes,
                "min_ts": self.min_ts, "max_ts": self.max_ts, "intact": not self.problems,
                "problems": [p.to_dict() for p in self.problems], "notes": self.notes}


@dataclass
class Report:
    """What :func:`verify` found in a data directory."""

    partitions: list[PartitionReport] = field(default_factory=list)
    log_problems: list[Problem] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        return self.log_problems + [p for part in self.partitions for p in part.problems]

    @property
    def intact(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        problems = self.problems
        lost = [p.lost for p in problems]
        return {"intact": not problems, "problems": len(problems),
                "records": sum(p.records for p in self.partitions),
                "records_at_risk": sum(n for n in lost if n), "records_at_risk_unknown": None in lost,
                "partitions": [p.to_dict() for p in self.partitions],
                "log_problems": [p.to_dict() for p in self.log_problems]}


# -- one segment ------------------------------------------------------------------------------


class _Scanner:
    """Walks the frames of one mapped segment file."""

    def __init__(self, mm: mmap.mmap | bytes, size: int, *, log: str, mode: Mode, last: bool,
                 next_base: int | None) -> None:
        self.mm, self.size, self.log, self.mode = mm, size, log, mode
        self.last, self.next_base = last, next_base

    def frames(self, scan: SegmentScan) -> None:
        pos, expected = 0, scan.base
        while pos < self.size:
            step = self._frame(pos, expected)
            if isinstance(step, str):
                scan.tail = step
                break
            scan.frames.append(step)
            pos = step.end
            if step.count is None:
                break
            expected = max(expected, step.base + step.count)
        scan.end_offset, scan.tail_pos = expected, pos

    def _frame(self, pos: int, expected: int) -> Frame | str:
        head, repaired = parse_header(self.mm, pos), None
        if head is None:
            rem = self.size - pos
            if self.last and self.mm[pos:self.size].count(0) == rem:
                return f"zero-filled tail ({rem} bytes at byte {pos})"
            if rem < HEADER:
                if self.last:
                    return f"partial batch header ({rem} bytes at byte {pos})"
                return self._unreadable(pos, expected, f"{rem} stray bytes after the last batch")
            head, repaired = repair_header(self.mm, pos, expected)
            if head is None:
                return self._unreadable(pos, expected, "batch header damaged (magic or header checksum)")
        if head.base > expected:  # a hole: offsets no batch holds (zero bytes; the header is read again)
            return Frame(pos, pos, expected, head.base - expected,
                         damage=f"offsets [{expected}, {head.base}) are missing: no batch holds them")
        end = pos + HEADER + head.length
        if end > self.size:
            if self.last:
                return f"batch cut short ({self.size - pos} of {end - pos} bytes at byte {pos})"
            return self._unreadable(pos, expected, "the batch runs past the end of the segment")
        if head.base < expected:
            return Frame(pos, end, head.base, 0, damage=f"batch repeats offsets [{head.base}, "
                         f"{head.base + head.count}) that the batches before it hold")
        return self._check(pos, end, head, repaired)

    def _check(self, pos: int, end: int, head: BatchHeader, repaired: bytes | None) -> Frame:
        """The frame of an intact (or repaired) header, with its payload checked as ``mode`` asks."""
        if repaired is None and self.mode == "headers":
            return _framed(pos, end, head)
        payload = self.mm[pos + HEADER:end]
        if zlib.crc32(payload) != head.crc:
            what = "payload checksum mismatch" + (" (and one bit of its header)" if repaired else "")
            return _framed(pos, end, head, damage=what)
        if self.mode == "full":
            damage = self._decode(pos, end, head, bytes(payload))
            if damage is not None:
                return damage
        if repaired is not None:
            return _framed(pos, end, head, header=repaired,
                           damage="one bit of the batch header is flipped (repaired from its checksum); "
                                  "the records are intact")
        return _framed(pos, end, head)

    def _decode(self, pos: int, end: int, head: BatchHeader, payload: bytes) -> Frame | None:
        try:
            times = _record_times(self.log, payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _framed(pos, end, head, damage=f"payload passes its checksum but does not decode ({exc})")
        if len(times) != head.count:
            return _framed(pos, end, head, damage=f"payload holds {len(times)} records, its header says {head.count}")
        lo, hi = (min(times), max(times)) if times else (head.min_ts, head.max_ts)
        if (lo, hi) != (head.min_ts, head.max_ts):
            fixed = encode_batch(head.base, head.count, head.append_ms, lo, hi, payload)[:HEADER]
            return Frame(pos, end, head.base, head.count, lo, hi, head.append_ms, header=fixed,
                         damage=f"the header's time range [{head.min_ts}, {head.max_ts}] is not its "
                                f"records' [{lo}, {hi}] (the time index is built from headers)")
        return None

    def _unreadable(self, pos: int, expected: int, what: str) -> Frame:
        """A damaged stretch from ``pos`` up to the next intact header (or the end of the file)."""
        found = next_header(self.mm, pos + 1, self.size, expected, self.next_base)
        if found is not None:
            at, base = found
            return Frame(pos, at, expected, base - expected,
                         damage=f"{what}; the next intact batch starts at byte {at}")
        if self.next_base is not None:
            return Frame(pos, self.size, expected, max(0, self.next_base - expected),
                         damage=f"{what}; nothing after it in the segment can be read")
        return Frame(pos, self.size, expected, None,
                     damage=f"{what}; nothing after it can be read, so how many records it held is unknown")


def _framed(pos: int, end: int, head: BatchHeader, *, damage: str | None = None,
            header: bytes | None = None) -> Frame:
    """The frame of a header that can be trusted."""
    return Frame(pos, end, head.base, head.count, head.min_ts, head.max_ts, head.append_ms, damage, header)


def scan_segment(path: Path, base: int, *, log: str, mode: Mode, last: bool,
                 next_base: int | None) -> SegmentScan:
    """Scan one segment file (as big as it is now: a writer may be appending to it)."""
    size = path.stat().st_size
    scan = SegmentScan(path.name, base, size, last, end_offset=base)
    if size == 0:
        return scan
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        scan.size = min(size, len(mm))
        _Scanner(mm, scan.size, log=log, mode=mode, last=last, next_base=next_base).frames(scan)
    return scan


# -- one partition ----------------------------------------------------------------------------


def _segments(path: Path, report: PartitionReport) -> list[tuple[int, str]]:
    """(base offset, name) of the segment files, sorted; other ``*.seg`` files are problems."""
    out = []
    for name in sorted(os.listdir(path)):
        if not name.endswith(".seg"):
            continue
        base = segment_base(name)
        if base is None:
            report.problems.append(Problem(report.log, report.partition, name,
                                           "not a segment file name (20 digits: its first offset)",
                                           "salvage moves it aside", sealed=True))
        else:
            out.append((base, name))
    return sorted(out)


def scan_partition(path: Path, *, log: str, partition: int, mode: Mode = "full",
                   progress: Progress | None = None) -> PartitionReport:
    """Scan every segment of one partition directory."""
    report = PartitionReport(log, partition, path)
    if not path.is_dir():
        report.problems.append(Problem(log, partition, path.name, "the partition directory is missing",
                                       "none: the server recreates it empty; restore it from a backup "
                                       "if it held records", records=None, lost=None))
        return report
    snapshot = _read_snapshot(path / SNAPSHOT) if log == "events" else None  # before the segments grow
    segments = _segments(path, report)
    expected = 0
    for i, (base, name) in enumerate(segments):
        last = i == len(segments) - 1
        if base != expected:
            _gap(report, name, expected, base)
        scan = scan_segment(path / name, base, log=log, mode=mode, last=last,
                            next_base=None if last else segments[i + 1][0])
        _add_scan(report, scan)
        expected = scan.end_offset
        if progress is not None:
            progress(scan.size)
    report.segments = len(segments)
    report.start_offset = 0
    report.end_offset = expected
    if snapshot is not None:
        _check_snapshot(report, *snapshot)
    return report


def _gap(report: PartitionReport, name: str, expected: int, base: int) -> None:
    if base > expected:
        report.problems.append(Problem(
            report.log, report.partition, name,
            f"offsets [{expected}, {base}) are missing: no segment file holds them",
            f"salvage keeps those offsets as {base - expected} placeholders in a new segment file",
            offsets=(expected, base), records=base - expected, lost=base - expected))
    else:
        report.problems.append(Problem(
            report.log, report.partition, name,
            f"the segment starts at offset {base}, inside the segment before it (which ends at {expected})",
            "none: salvage cannot tell which copy is right; move one of the files aside by hand",
            offsets=(base, expected), records=expected - base, lost=None))


def _add_scan(report: PartitionReport, scan: SegmentScan) -> None:
    report.scans.append(scan)
    report.bytes += scan.size
    for fr in scan.frames:
        if fr.end > fr.pos:
            report.batches += 1
        if fr.min_ts is not None and fr.max_ts is not None and not fr.lost:
            report.min_ts = fr.min_ts if report.min_ts is None else min(report.min_ts, fr.min_ts)
            report.max_ts = fr.max_ts if report.max_ts is None else max(report.max_ts, fr.max_ts)
        if fr.damage is not None:
            report.problems.append(_frame_problem(report, scan, fr))
    if scan.tail is not None:
        report.notes.append(f"{scan.name}: {scan.tail}: a batch being written, or a torn write that the "
                            "writer cuts when it opens the log (never an acknowledged batch under fsync=batch)")


def _frame_problem(report: PartitionReport, scan: SegmentScan, fr: Frame) -> Problem:
    stop = None if fr.count is None else fr.base + fr.count
    if not fr.lost:
        fix, lost = "salvage rewrites the header; the records are kept", 0
    elif fr.count is None:
        fix, lost = ("salvage moves the bytes aside and the partition ends before them "
                     "(how many records they held is unknown)"), None
    elif fr.end == fr.pos:
        fix, lost = f"salvage keeps the offsets as {fr.count} placeholders", fr.count
    elif fr.count == 0:
        fix, lost = "salvage moves the batch aside (no offset is lost)", 0
    else:
        fix, lost = (f"salvage moves the batch aside and keeps its offsets as {fr.count} placeholders "
                     f"(kind fluvial.lost)"), fr.count
    return Problem(report.log, report.partition, scan.name, fr.damage or "", fix, (fr.pos, fr.end),
                   (fr.base, stop), fr.count, lost, sealed=not scan.last)


def _read_snapshot(path: Path) -> tuple[bool, int | None] | None:
    """(readable, offset covered) of a dedup snapshot; None if there is none."""
    if not path.exists():
        return None
    loaded = DedupState.load(path)
    return (False, None) if loaded is None else (True, loaded[1])


def _check_snapshot(report: PartitionReport, readable: bool, offset: int | None) -> None:
    if not readable:
        report.problems.append(Problem(
            report.log, report.partition, SNAPSHOT,
            "the de-duplication snapshot is damaged (magic, checksum or format)",
            "salvage moves it aside; the server rebuilds it from the log (no record is lost)"))
    elif offset is not None and offset > report.end_offset:
        report.notes.append(f"{SNAPSHOT} covers offsets up to {offset} but the partition ends at "
                            f"{report.end_offset}: the end of the log was cut (a torn tail); the writer "
                            "rebuilds it")


# -- a data directory --------------------------------------------------------------------------


def log_dirs(data_dir: Path, log_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """The directory of each log: the event log (``log_dir``, else ``DATA_DIR/log``) and the
    dead-letter log (always in the data directory)."""
    events = Path(log_dir) if log_dir is not None else data_dir / LOGS["events"]
    return {"events": events, "dead-letters": data_dir / LOGS["dead-letters"]}


def _partitions(data_dir: Path, log_dir: str | os.PathLike[str] | None = None) -> Iterator[tuple[str, int, Path]]:
    """(log, partition, directory) of every partition the data directory should have."""
    dirs = log_dirs(data_dir, log_dir)
    log_dir = dirs["events"]
    count, _ = _meta_partitions(log_dir)
    for p in range(count):
        yield "events", p, log_dir / f"p-{p:04d}"
    dead = dirs["dead-letters"] / "p-0000"
    if dead.is_dir():
        yield "dead-letters", 0, dead


def _meta_partitions(log_dir: Path) -> tuple[int, str | None]:
    """Partitions of the event log by its meta.json (else by its directories), and what is wrong."""
    meta = log_dir / "meta.json"
    dirs = sorted(d.name for d in log_dir.glob("p-[0-9][0-9][0-9][0-9]") if d.is_dir()) \
        if log_dir.is_dir() else []
    by_dirs = int(dirs[-1][2:]) + 1 if dirs else 0
    if not meta.exists():
        return by_dirs, None if not dirs else "meta.json is missing"
    try:
        data = json.loads(meta.read_text())
        count = int(data["partitions"])
        if data["format"] != 1 or not 1 <= count <= 1024:
            raise ValueError(f"format {data['format']!r}, partitions {count}")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return by_dirs, f"meta.json is unreadable ({exc})"
    if count < by_dirs:
        return by_dirs, f"meta.json says {count} partitions but there are directories up to p-{by_dirs - 1:04d}"
    return count, None


def log_bytes(data_dir: Path, log_dir: str | os.PathLike[str] | None = None) -> int:
    """Bytes of every segment file of the data directory's logs (the total of a progress bar)."""
    total = 0
    for _, _, path in _partitions(Path(data_dir), log_dir):
        if path.is_dir():
            total += sum(f.stat().st_size for f in path.glob("*.seg"))
    return total


def verify(data_dir: str | os.PathLike[str], *, mode: Mode = "full",
           progress: Progress | None = None, log_dir: str | os.PathLike[str] | None = None) -> Report:
    """Check every segment of the event log and the dead-letter log of ``data_dir``.

    Args:
        data_dir: The data directory (``DATA_DIR/log``, ``DATA_DIR/dead-letters``).
        mode: ``"full"`` decodes every payload too; ``"checksums"`` stops at the
            checksums; ``"headers"`` reads headers only (sizes and the index).
        progress: Called with the bytes of each segment file once it is scanned.
        log_dir: Where the event log is when not in the data directory (``--log file://DIR``).
    """
    data_dir = Path(data_dir)
    report = Report()
    _, meta_problem = _meta_partitions(log_dirs(data_dir, log_dir)["events"])
    if meta_problem is not None:
        report.log_problems.append(Problem("events", None, "meta.json", meta_problem,
                                           "salvage rewrites it with the partitions found on disk"))
    for log, partition, path in _partitions(data_dir, log_dir):
        report.partitions.append(scan_partition(path, log=log, partition=partition, mode=mode,
                                                progress=progress))
    return report
