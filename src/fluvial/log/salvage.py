"""Quarantine damaged batches and keep every intact record: ``fluvial log salvage``.

Offsets stay stable. The log is append-only and checkpoints, batch cut-offs and
acknowledged positions all refer to ``(partition, offset)``, so salvage never
renumbers: a damaged batch is replaced, in place, by a batch of the *same*
offsets holding one placeholder per lost record (kind ``fluvial.lost``, see
:mod:`fluvial.events.lost`). Readers by kind never see them and the runners drop
them from ``from_log()`` too, so every reader carries on across the hole, and a
checkpoint inside or after it stays valid. The damaged bytes themselves are
moved aside, never deleted::

    DATA_DIR/log-quarantine/20250101T120000Z/
        report.json                              what was lost, exactly (see below)
        events/p-0002/00000000000000001200.seg   the segment file as it was (a hard link when possible)
        events/p-0002/00000000000000001200.seg@4096-8192.batch   the damaged batch's bytes
        events/p-0002/dedup.snapshot             rebuilt from the log by the next writer

Only damage is touched: an intact batch is copied byte for byte, a header with one
flipped bit (or a wrong time range) is rewritten and its records are kept, and a
segment is replaced atomically (written beside it, fsynced, renamed over it) after
the original is in the quarantine directory, so a crash leaves either file in place.
The de-duplication snapshot of a partition that lost records is moved aside: the
lost ``(device, seq)`` pairs are no longer stored, so a device that sends one again
is accepted. Salvage takes the writer lock of each log and refuses to run while a
server or an ingest holds it. A second salvage finds nothing to do.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from fluvial.errors import LogError
from fluvial.events.lost import LOST_KIND, placeholders
from fluvial.log.segment import HEADER, acquire_writer_lock, encode_batch, segment_name
from fluvial.log.verify import (
    SNAPSHOT,
    Frame,
    PartitionReport,
    Problem,
    Progress,
    Report,
    SegmentScan,
    log_dirs,
    verify,
)

__all__ = ["QUARANTINE", "Action", "SalvageResult", "salvage", "salvage_history"]

QUARANTINE = "log-quarantine"
"""Directory of the data directory that holds what salvage moved aside."""
_enc = msgspec.msgpack.Encoder()


@dataclass(frozen=True)
class Action:
    """What salvage did (or would do) about one problem.

    Attributes:
        problem: The problem.
        done: What was done, in words.
        moved_to: Where its bytes went, relative to the quarantine directory.
        lost: Records given up (0: none; None: unknown).
    """

    problem: Problem
    done: str
    moved_to: str | None = None
    lost: int | None = 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.problem.to_dict(), "done": self.done, "moved_to": self.moved_to, "lost": self.lost}


@dataclass
class SalvageResult:
    """The outcome of :func:`salvage`.

    Attributes:
        dry_run: Nothing was changed.
        quarantine: The quarantine directory (None: nothing to move, or a dry run).
        actions: One per problem that salvage handles.
        unfixed: Problems it cannot handle (they need a person).
        after: What :func:`~fluvial.log.verify.verify` finds once it is done (None: dry run).
        writer: Who holds the writer lock (a dry run only reports it).
        moved: Other files moved aside (the de-duplication snapshot of a partition
            that lost records), with why.
    """

    dry_run: bool
    quarantine: Path | None = None
    actions: list[Action] = field(default_factory=list)
    unfixed: list[Problem] = field(default_factory=list)
    after: Report | None = None
    writer: str | None = None
    moved: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return sum(a.lost or 0 for a in self.actions)

    @property
    def lost_unknown(self) -> bool:
        return any(a.lost is None for a in self.actions)

    def to_dict(self) -> dict[str, Any]:
        return {"format": 1, "dry_run": self.dry_run,
                "quarantine": None if self.quarantine is None else str(self.quarantine),
                "records_lost": self.lost, "records_lost_unknown": self.lost_unknown,
                "actions": [a.to_dict() for a in self.actions],
                "moved": self.moved, "unfixed": [p.to_dict() for p in self.unfixed],
                "intact_after": None if self.after is None else self.after.intact,
                "writer": self.writer}


def salvage(data_dir: str | os.PathLike[str], *, dry_run: bool = False,
            progress: Progress | None = None, log_dir: str | os.PathLike[str] | None = None) -> SalvageResult:
    """Keep every intact record of the data directory's logs and move the damage aside.

    Args:
        data_dir: The data directory.
        dry_run: Only report what would be done (works while a server runs).
        progress: Called with the bytes of each segment file scanned.
        log_dir: Where the event log is when not in the data directory (``--log file://DIR``);
            the quarantine stays in the data directory.

    Raises:
        LogError: A server or another writer holds a log (not for a dry run).
    """
    data_dir = Path(data_dir)
    with _writer_locks(log_dirs(data_dir, log_dir), dry_run) as writer:
        report = verify(data_dir, mode="full", progress=progress, log_dir=log_dir)
        result = SalvageResult(dry_run, writer=writer)
        fixable = [p for p in report.problems if p.fixable]
        result.unfixed = [p for p in report.problems if not p.fixable]
        if not fixable:
            return result
        if dry_run:
            result.actions = [Action(p, "would: " + p.fix, lost=p.lost) for p in fixable]
            return result
        result.quarantine = _new_quarantine(data_dir)
        _Salvager(log_dirs(data_dir, log_dir)["events"], result).run(report)
        result.after = verify(data_dir, mode="full", log_dir=log_dir)
        _write_report(result, "done")
        return result


@contextlib.contextmanager
def _writer_locks(dirs: dict[str, Path], dry_run: bool) -> Iterator[str | None]:
    """Hold the writer lock of every log; a dry run only says who holds one."""
    fds: list[int] = []
    held: str | None = None
    try:
        for name, path in dirs.items():
            if not path.is_dir():
                continue
            try:
                fds.append(acquire_writer_lock(path))
            except LogError:
                pid = (path / ".lock").read_text(errors="replace").strip() or "unknown"
                held = f"the {name} log at {path} is open for writing by pid {pid} (a running server or ingest)"
                if not dry_run:
                    raise LogError(f"{held}: stop it first. Salvage rewrites segment files and needs the log "
                                   "to itself; `fluvial log verify` works while it runs") from None
        yield held
    finally:
        for fd in fds:
            os.close(fd)


def _new_quarantine(data_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    root = data_dir / QUARANTINE
    root.mkdir(exist_ok=True)
    for n in range(1000):
        path = root / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise LogError(f"cannot make a quarantine directory under {root}")


def _write_report(result: SalvageResult, status: str) -> None:
    assert result.quarantine is not None
    body = {**result.to_dict(), "status": status,
            "quarantine": f"{QUARANTINE}/{result.quarantine.name}",
            "created_utc": result.quarantine.name.split("-")[0]}
    tmp = result.quarantine / "report.json.tmp"
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, result.quarantine / "report.json")


class _Salvager:
    """Carries out the repairs of one :class:`Report`."""

    def __init__(self, events_dir: Path, result: SalvageResult) -> None:
        assert result.quarantine is not None
        self.events_dir = events_dir   # the event log's directory (meta.json)
        self.result = result
        self.qdir = result.quarantine
        self.note = f"{QUARANTINE}/{self.qdir.name}/report.json"
        self.now_ms = time.time_ns() // 1_000_000

    def run(self, report: Report) -> None:
        _write_report(self.result, "started")  # a crash half-way still leaves a record
        for problem in report.log_problems:
            if problem.file == "meta.json":
                self._rewrite_meta(problem, report)
        for part in report.partitions:
            if part.problems:
                self._partition(part)

    def _act(self, problem: Problem, done: str, moved_to: str | None = None, lost: int | None = 0) -> None:
        self.result.actions.append(Action(problem, done, moved_to, lost))

    def _rel(self, part: PartitionReport) -> Path:
        rel = Path(part.log) / f"p-{part.partition:04d}"
        (self.qdir / rel).mkdir(parents=True, exist_ok=True)
        return rel

    # -- a partition -------------------------------------------------------------------------
    def _partition(self, part: PartitionReport) -> None:
        if not part.path.is_dir():
            return
        for stale in part.path.glob("*.seg.salvage"):  # left by a salvage that was killed
            stale.unlink()
        self._move_snapshot(part)  # first: killed later, a rerun still finds the segment damage
        by_key = {(p.file, p.byte_range, p.offsets): p for p in part.problems}
        expected, running = 0, None
        for scan in part.scans:
            if scan.base > expected:
                self._fill_gap(part, by_key[(scan.name, None, (expected, scan.base))], expected, scan.base,
                               running)
            if any(fr.damage is not None for fr in scan.frames):
                self._rewrite(part, scan, by_key, running)
            for fr in scan.frames:
                if not fr.lost and fr.max_ts is not None:
                    running = fr.max_ts if running is None else max(running, fr.max_ts)
            expected = scan.end_offset
        for problem in part.problems:
            if problem.byte_range is None and problem.offsets is None and problem.file.endswith(".seg"):
                self._move(part, problem, problem.file, "moved aside (not a segment of the log)")
        _fsync_dir(part.path)

    def _move_snapshot(self, part: PartitionReport) -> None:
        """A damaged snapshot, or one that holds the (device, seq) of records about to be lost:
        aside (the next writer rebuilds it from the log)."""
        snapshot = next((p for p in part.problems if p.file == SNAPSHOT), None)
        loses = any(p.lost != 0 and p.fixable for p in part.problems)
        if snapshot is not None:
            self._move(part, snapshot, SNAPSHOT, "moved aside; the next writer rebuilds it from the log")
        elif loses and (part.path / SNAPSHOT).exists():
            rel = self._rel(part) / SNAPSHOT
            os.replace(part.path / SNAPSHOT, self.qdir / rel)
            self.result.moved.append(f"{rel}: holds the lost records' (device, seq); the next writer "
                                     "rebuilds it from the log")

    def _move(self, part: PartitionReport, problem: Problem, name: str, done: str) -> None:
        rel = self._rel(part) / name
        os.replace(part.path / name, self.qdir / rel)
        self._act(problem, done, str(rel))

    def _fill_gap(self, part: PartitionReport, problem: Problem, start: int, stop: int,
                  running: int | None) -> None:
        path = part.path / segment_name(start)
        data = self._placeholder_batch(part.log, start, stop - start, 0 if running is None else running)
        tmp = path.with_name(path.name + ".salvage")
        _write_synced(tmp, [data])
        os.replace(tmp, path)
        self._act(problem, f"wrote {path.name}: {stop - start} placeholders for offsets [{start}, {stop})",
                  lost=stop - start)

    def _rewrite(self, part: PartitionReport, scan: SegmentScan, by_key: dict[Any, Problem],
                 running: int | None) -> None:
        """Write the segment again: intact batches as they are, damage as placeholders."""
        src = part.path / scan.name
        rel = self._rel(part)
        pieces: list[bytes] = []
        with open(src, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            for fr in scan.frames:
                if fr.damage is None:
                    pieces.append(mm[fr.pos:fr.end])
                else:
                    key = (scan.name, (fr.pos, fr.end), (fr.base, None if fr.count is None else fr.base + fr.count))
                    pieces += self._replace(part, scan, fr, by_key[key], mm, rel, running)
                if not fr.lost and fr.max_ts is not None:
                    running = fr.max_ts if running is None else max(running, fr.max_ts)
            pieces.append(mm[scan.tail_pos:scan.size])  # a tail the writer judges when it opens the log
        tmp = src.with_name(src.name + ".salvage")
        _write_synced(tmp, pieces)
        _link_or_copy(src, self.qdir / rel / scan.name)
        os.replace(tmp, src)

    def _replace(self, part: PartitionReport, scan: SegmentScan, fr: Frame, problem: Problem,
                 mm: mmap.mmap, rel: Path, running: int | None) -> list[bytes]:
        """The bytes that take the place of a damaged frame (and its bytes moved aside)."""
        if not fr.lost:
            assert fr.header is not None
            self._act(problem, "rewrote the batch header; its records are kept")
            return [fr.header, mm[fr.pos + HEADER:fr.end]]
        moved = None
        if fr.end > fr.pos:
            moved = str(rel / f"{scan.name}@{fr.pos}-{fr.end}.batch")
            _write_synced(self.qdir / moved, [mm[fr.pos:fr.end]])
        if not fr.count:
            done = ("moved the bytes aside; the partition now ends at offset "
                    f"{fr.base}" if fr.count is None else "moved the batch aside (no offset lost)")
            self._act(problem, done, moved, lost=fr.count)
            return []
        ts = fr.min_ts if fr.min_ts is not None else (0 if running is None else running)
        self._act(problem, f"moved the batch aside; offsets [{fr.base}, {fr.base + fr.count}) are "
                           f"{fr.count} placeholders now", moved, lost=fr.count)
        return [self._placeholder_batch(part.log, fr.base, fr.count, ts, fr.append_ms)]

    def _placeholder_batch(self, log: str, base: int, count: int, ts_ms: int,
                           append_ms: int | None = None) -> bytes:
        if log == "events":
            payload = _enc.encode(placeholders(base, count, ts_ms=ts_ms, note=self.note))
        else:
            from fluvial.log.deadletter import DeadLetter

            letter = DeadLetter(reason=f"lost: a damaged batch moved aside by fluvial log salvage ({self.note})",
                                source=LOST_KIND, line=None, raw=b"", at_ms=ts_ms)
            payload = _enc.encode([letter] * count)
        return encode_batch(base, count, self.now_ms if append_ms is None else append_ms, ts_ms, ts_ms, payload)

    # -- the whole log -----------------------------------------------------------------------
    def _rewrite_meta(self, problem: Problem, report: Report) -> None:
        log_dir = self.events_dir
        count = sum(1 for p in report.partitions if p.log == "events")
        moved = None
        if (log_dir / "meta.json").exists():
            (self.qdir / "events").mkdir(exist_ok=True)
            moved = "events/meta.json"
            os.replace(log_dir / "meta.json", self.qdir / moved)
        _write_synced(log_dir / "meta.json.tmp", [json.dumps({"format": 1, "partitions": count}).encode() + b"\n"])
        os.replace(log_dir / "meta.json.tmp", log_dir / "meta.json")
        _fsync_dir(log_dir)
        self._act(problem, f"rewrote meta.json with {count} partitions", moved)


def _write_synced(path: Path, pieces: list[bytes]) -> None:
    with open(path, "wb") as f:
        for piece in pieces:
            f.write(piece)
        f.flush()
        os.fsync(f.fileno())


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(src, dst)
    with open(dst, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def salvage_history(data_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The reports of earlier salvages of ``data_dir``, oldest first (unreadable ones are skipped)."""
    root = Path(data_dir) / QUARANTINE
    out = []
    for report in sorted(root.glob("*/report.json")) if root.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(report.read_text()))
    return out
