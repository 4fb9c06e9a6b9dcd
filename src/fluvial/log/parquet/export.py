"""The steps of a Parquet export: its lock, the checks against the log, and chunks of log
records written as Parquet files, one per (kind, date), each to a temporary name and renamed.

:func:`fluvial.log.parquet.export_parquet` runs them and writes the manifest last.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluvial.errors import ConfigError, LogError
from fluvial.events.envelope import Event
from fluvial.events.lost import LOST_KIND, placeholders
from fluvial.log.parquet.columns import file_schema, payload_json
from fluvial.log.parquet.manifest import FileEntry, LostRange, Manifest, merged

__all__ = ["ROW_GROUP_ROWS", "ExportReport", "check_same_log", "export_lock", "read_range", "remove_orphans",
           "without_placeholders", "write_chunk"]

_LOCK = "_fluvial_export.lock"
_DAY_MS = 86_400_000
ROW_GROUP_ROWS = 32_768   # rows per Parquet row group: the unit a read skips by offset
_PART_RE = re.compile(r"^part-\d+-\d+-\d+\.parquet(\.tmp)?$")


@dataclass(frozen=True)
class ExportReport:
    """What one export wrote.

    Attributes:
        events: Events exported by this run (0 when the export was up to date).
        files: Parquet files written by this run.
        seconds: Wall-clock time of the run.
        upto: Per log partition, the offset the export now holds records up to (excluded).
        lost: Placeholders of records lost to damage that this run left out of the files
            (the manifest lists their offsets).
    """

    events: int
    files: int
    seconds: float
    upto: list[int]
    lost: int = 0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@contextlib.contextmanager
def export_lock(out: Path) -> Iterator[None]:
    """Hold the export's lock (flock): one export of a directory at a time.

    Raises:
        LogError: The directory is not writable, or another export holds the lock.
    """
    try:
        fd = os.open(out / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LogError(f"export directory {out} is not writable: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise LogError(f"another export of {out} is running; wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def check_same_log(out: Path, m: Manifest, log: Any, ends: list[int]) -> None:
    """Raise unless the export at ``out`` can be of ``log`` (same partitions, not ahead of it)."""
    if m.partitions != log.partitions:
        raise ConfigError(f"the export at {out} holds a log of {m.partitions} partitions, this log "
                          f"has {log.partitions}: export it into another directory")
    behind = [p for p in range(m.partitions) if m.upto[p] > ends[p]]
    if behind:
        p = behind[0]
        raise LogError(f"the export at {out} holds partition {p} up to offset {m.upto[p]} but the "
                       f"log ends at {ends[p]}: it is the export of another log; use another "
                       "directory")


def remove_orphans(out: Path, m: Manifest) -> None:
    """Delete part files a crashed export left that the manifest does not list."""
    listed = {f.path for f in m.files}
    for kind_dir in out.glob("kind=*"):
        for date_dir in kind_dir.glob("date=*"):
            for f in date_dir.iterdir():
                rel = f"{kind_dir.name}/{date_dir.name}/{f.name}"
                if _PART_RE.match(f.name) and rel not in listed:
                    f.unlink(missing_ok=True)


def read_range(log: Any, p: int, start: int, stop: int) -> tuple[list[Event], list[int]]:
    """The events of partition ``p`` in ``[start, stop)`` and their append times."""
    events: list[Event] = []
    append_ms: list[int] = []
    offset = start
    while offset < stop:
        batch = log.read(p, offset, stop_offset=stop, max_records=stop - offset)
        if not batch.events:
            raise LogError(f"partition {p} of the log ends at {offset}, before {stop}")
        events.extend(batch.events)
        append_ms.extend(batch.append_ms)
        offset = batch.next_offset
    return events, append_ms


def without_placeholders(p: int, first: int, events: list[Event],
                         append_ms: list[int]) -> tuple[list[int], list[LostRange]]:
    """The indexes of the events to export, and the placeholders among ``events`` (offsets
    ``first..``) as ranges. Only exact placeholders are left out: what the ranges give back."""
    kept: list[int] = []
    lost: list[LostRange] = []
    for i, ev in enumerate(events):
        report = ev.payload.get("report") if ev.kind == LOST_KIND else None
        if not isinstance(report, str) or [ev] != placeholders(first + i, 1, ts_ms=ev.ts, note=report):
            kept.append(i)
            continue
        r = LostRange(partition=p, first=first + i, stop=first + i + 1, ts=ev.ts, append_ms=append_ms[i],
                      report=report)
        lost[-1:] = merged([*lost[-1:], r])
    return kept, lost


_dates: dict[int, str] = {}


def _date(day: int) -> str:
    s = _dates.get(day)
    if s is None:
        try:
            s = (_dt.date(1970, 1, 1) + _dt.timedelta(days=day)).isoformat()
        except OverflowError:
            s = "out-of-range"
        if len(_dates) < 100_000:
            _dates[day] = s
    return s


def write_chunk(pa: Any, out: Path, p: int, offsets: list[int], events: list[Event],
                append_ms: list[int]) -> list[FileEntry]:
    """Write the records at ``offsets`` (increasing) of partition ``p``, one file per (kind, date)."""
    import pyarrow.parquet as pq

    if not events:
        return []
    first = offsets[0]
    groups: dict[tuple[str, int], list[int]] = {}
    for i, ev in enumerate(events):
        groups.setdefault((ev.kind, ev.ts // _DAY_MS), []).append(i)
    encoded = [payload_json(ev.payload) for ev in events]
    schema = file_schema(pa)
    try:
        table = pa.Table.from_arrays([
            pa.array([ev.device for ev in events], pa.string()),
            pa.array([ev.kind for ev in events], pa.string()),
            pa.array([ev.ts for ev in events], pa.int64()),
            pa.array([ev.seq for ev in events], pa.int64()),
            pa.array([e[0] for e in encoded], pa.string()),
            pa.array([p] * len(events), pa.int32()),
            pa.array(offsets, pa.int64()),
            pa.array(append_ms, pa.int64()),
            pa.array([e[1] for e in encoded], pa.binary()),
        ], schema=schema)
    except (OverflowError, pa.lib.ArrowInvalid) as exc:
        raise LogError(f"partition {p} from offset {first}: an event does not fit the Parquet "
                       f"columns (ts and seq are int64): {exc}") from None
    entries = []
    for (kind, day), idx in sorted(groups.items(), key=lambda kv: kv[1][0]):
        part = table.take(pa.array(idx, pa.int64()))
        lo, hi = offsets[idx[0]], offsets[idx[-1]]
        folder = f"kind={_escape(kind)}/date={_date(day)}"
        name = f"part-{p}-{lo}-{hi}.parquet"
        (out / folder).mkdir(parents=True, exist_ok=True)
        tmp, final = out / folder / (name + ".tmp"), out / folder / name
        try:
            pq.write_table(part, tmp, row_group_size=ROW_GROUP_ROWS, compression="zstd")
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            raise LogError(f"cannot write {final}: {exc.strerror or exc}") from None
        ts = [events[i].ts for i in idx]
        entries.append(FileEntry(path=f"{folder}/{name}", partition=p, first=lo, last=hi,
                                 rows=len(idx), min_ts=min(ts), max_ts=max(ts),
                                 bytes=final.stat().st_size))
    return entries


def _escape(kind: str) -> str:
    """A kind as a directory name (Hive escaping of '/', '%', '=' and control characters)."""
    return "".join(f"%{ord(c):02X}" if c in '/\\%=:"#\'*?<>|' or ord(c) < 32 else c
                   for c in kind)
