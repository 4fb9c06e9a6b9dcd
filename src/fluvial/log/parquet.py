"""The master dataset as Parquet: an incremental, append-only export of the log,
and ``ParquetLog``, which reads it back through the read side of the ``Log`` API.

Layout (Hive style, so Spark, DuckDB, pandas... read it as one table)::

    out_dir/_fluvial_export.json                                  the manifest
    out_dir/kind=<kind>/date=<YYYY-MM-DD>/part-<p>-<first>-<last>.parquet

``date`` is the UTC date of the event time; ``p`` the log partition, ``first`` and
``last`` the first and last log offsets of the records in the file (a file holds
the records of one partition, kind and date exported by one run, in offset
order). Columns: ``device`` (string), ``kind`` (string), ``ts`` (int64, event
time, epoch ms), ``seq`` (int64), ``payload`` (string: the payload as JSON),
``partition`` (int32), ``offset`` (int64), ``append_ms`` (int64) and
``payload_msgpack`` (binary, null unless JSON cannot hold the payload exactly:
NaN/infinite floats, bytes, non-string keys; it then holds the payload as the
log stores it, and readers use it instead of ``payload``).

Placeholders of records lost to damage (kind ``fluvial.lost``, written by
``fluvial log salvage``; see :mod:`fluvial.events.lost`) are not events: the
files leave them out, so Spark or DuckDB reading the files see real events only,
and the manifest lists them instead (``lost``: per partition, offset ranges with
the placeholders' time, append time and salvage report), counted in each run's
entry of ``exports`` and in :attr:`ExportReport.lost`. ``ParquetLog`` gives them
back at their offsets, so reading the export is reading the log.

The manifest is the truth of the export: it lists every file and, per log
partition, the offset exported up to. An export writes only what the log gained
since (new files, never rewriting old ones): each file to a temporary name and
renamed, then the manifest, last, the same way. A crash leaves the old manifest
(the files it does not list are ignored by readers and removed by the next
export) or the new one. File names derive from the offsets they hold, so a rerun
over the same log writes the same files.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import msgspec

from fluvial.errors import ConfigError, CorruptLogError, LogError, MissingDependency
from fluvial.events.envelope import Event
from fluvial.events.lost import LOST_KIND, placeholders
from fluvial.log.base import PartitionStats, RecordBatch

__all__ = ["MANIFEST", "ExportReport", "LostRange", "ParquetLog", "export_parquet", "parquet_files"]

MANIFEST = "_fluvial_export.json"
_LOCK = "_fluvial_export.lock"
_FORMAT = 1
_DAY_MS = 86_400_000
CHUNK_RECORDS = 500_000   # log records per partition turned into files at once (bounds memory)
ROW_GROUP_ROWS = 32_768   # rows per Parquet row group: the unit a read skips by offset
READ_LIMIT = 1 << 20      # records returned by one read() when max_records is None (as LocalLog)
_PART_RE = re.compile(r"^part-\d+-\d+-\d+\.parquet(\.tmp)?$")
_json_enc = msgspec.json.Encoder()
_json_dec = msgspec.json.Decoder()
_mp_enc = msgspec.msgpack.Encoder()
_mp_dec = msgspec.msgpack.Decoder()


def _pa() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingDependency(
            "the Parquet export needs pyarrow: pip install 'fluvial[parquet]'") from None
    return pyarrow


def _schema(pa: Any) -> Any:
    return pa.schema([
        ("device", pa.string()), ("kind", pa.string()), ("ts", pa.int64()), ("seq", pa.int64()),
        ("payload", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
        ("append_ms", pa.int64()), ("payload_msgpack", pa.binary()),
    ])


# -- manifest -----------------------------------------------------------------------------


class FileEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One exported file, as the manifest lists it (``path`` relative to the export)."""

    path: str
    partition: int
    first: int
    last: int
    rows: int
    min_ts: int
    max_ts: int
    bytes: int


class LostRange(msgspec.Struct, frozen=True, kw_only=True):
    """Offsets ``[first, stop)`` of partition ``partition`` hold placeholders of records lost to
    damage: no file holds them; ``ts``, ``append_ms`` and ``report`` are the placeholders' own."""

    partition: int
    first: int
    stop: int
    ts: int
    append_ms: int
    report: str

    def events(self, first: int, stop: int) -> list[Event]:
        """The placeholders of offsets ``[first, stop)`` (within this range), as the log holds them."""
        return placeholders(first, stop - first, ts_ms=self.ts, note=self.report)


class Manifest(msgspec.Struct, kw_only=True):
    format: int = _FORMAT
    partitions: int
    start: list[int]
    upto: list[int]
    files: list[FileEntry]
    exports: list[dict[str, Any]] = msgspec.field(default_factory=list)
    lost: list[LostRange] = msgspec.field(default_factory=list)


_manifest_dec = msgspec.json.Decoder(Manifest)


def _read_manifest(out: Path) -> Manifest | None:
    path = out / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LogError(f"cannot read the export manifest {path}: {exc.strerror or exc}") from None
    try:
        m = _manifest_dec.decode(raw)
    except msgspec.DecodeError as exc:
        raise CorruptLogError(f"the export manifest {path} is unreadable: {exc}") from None
    if m.format != _FORMAT:
        raise LogError(f"{path}: unsupported export format {m.format!r} (this is format {_FORMAT})")
    return m


def _write_manifest(out: Path, m: Manifest) -> None:
    """Replace the manifest atomically (temp file, fsync, rename, fsync the directory)."""
    tmp = out / (MANIFEST + ".tmp")
    data = msgspec.json.format(msgspec.json.encode(m), indent=1) + b"\n"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out / MANIFEST)
    _fsync_dir(out)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def parquet_files(out_dir: str | os.PathLike[str]) -> list[str]:
    """The absolute paths of the files the export's manifest lists, in manifest order.

    Only these are part of the export (a crashed export may leave others):
    give them to ``spark.read.parquet(*files)`` (with
    ``.option("basePath", out_dir)`` to get the ``kind``/``date`` columns of the layout).

    Raises:
        LogError: There is no export at ``out_dir``.
    """
    out = Path(out_dir)
    m = _read_manifest(out)
    if m is None:
        raise LogError(f"no Parquet export at {out} ({MANIFEST} missing): "
                       "run `fluvial log export --format parquet DIR` first")
    return [str((out / f.path).absolute()) for f in m.files]


# -- export -------------------------------------------------------------------------------


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


def export_parquet(log: Any, out_dir: str | os.PathLike[str], *,
                   progress: Callable[[int], None] | None = None) -> ExportReport:
    """Export what ``log`` holds beyond the previous export of ``out_dir`` as Parquet.

    Args:
        log: Any object with the read side of the Log API (a ``LocalLog``, readonly is enough).
        out_dir: The export directory (created if missing).
        progress: Called with the number of records done after each piece.

    Returns:
        What this run wrote; ``upto`` is where the next export will start.

    Raises:
        MissingDependency: pyarrow is not installed.
        ConfigError: ``out_dir`` is not a directory, or holds an export of a log
            with another partition count.
        LogError: ``out_dir`` cannot be written, another export of it is running,
            or the export holds more than the log (an export of another log).
    """
    pa = _pa()
    started = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"export directory {out} is a file; give a directory (it is created "
                          "if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LogError(f"cannot create the export directory {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise LogError(f"export directory {out} is not writable")
    with _export_lock(out):
        manifest = _read_manifest(out)
        starts, ends = list(log.start_offsets()), list(log.end_offsets())
        fresh = manifest is None
        if manifest is None:
            manifest = Manifest(partitions=log.partitions, start=starts, upto=list(starts), files=[])
        _check_same_log(out, manifest, log, ends)
        _remove_orphans(out, manifest)
        written: list[FileEntry] = []
        lost: list[LostRange] = []
        total = 0
        for p in range(manifest.partitions):
            offset = manifest.upto[p]
            while offset < ends[p]:
                stop = min(ends[p], offset + CHUNK_RECORDS)
                events, append_ms = _read_range(log, p, offset, stop)
                kept, gone = _without_placeholders(p, offset, events, append_ms)
                written.extend(_write_chunk(pa, out, p, [offset + i for i in kept], [events[i] for i in kept],
                                            [append_ms[i] for i in kept]))
                lost.extend(gone)
                total += len(kept)
                offset = stop
                if progress is not None:
                    progress(len(events))
        n_lost = sum(r.stop - r.first for r in lost)
        if written or lost or fresh or manifest.upto != ends:
            _fsync_dir(out)
            manifest.files.extend(written)
            manifest.lost = _merged(manifest.lost + lost)
            manifest.upto = ends
            manifest.exports.append({"at_ms": time.time_ns() // 1_000_000, "events": total,
                                     "files": len(written), "lost": n_lost, "upto": ends})
            _write_manifest(out, manifest)
        return ExportReport(events=total, files=len(written), seconds=time.perf_counter() - started,
                            upto=list(manifest.upto), lost=n_lost)


@contextlib.contextmanager
def _export_lock(out: Path) -> Iterator[None]:
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


def _check_same_log(out: Path, m: Manifest, log: Any, ends: list[int]) -> None:
    if m.partitions != log.partitions:
        raise ConfigError(f"the export at {out} holds a log of {m.partitions} partitions, this log "
                          f"has {log.partitions}: export it into another directory")
    behind = [p for p in range(m.partitions) if m.upto[p] > ends[p]]
    if behind:
        p = behind[0]
        raise LogError(f"the export at {out} holds partition {p} up to offset {m.upto[p]} but the "
                       f"log ends at {ends[p]}: it is the export of another log; use another "
                       "directory")


def _remove_orphans(out: Path, m: Manifest) -> None:
    """Delete part files a crashed export left that the manifest does not list."""
    listed = {f.path for f in m.files}
    for kind_dir in out.glob("kind=*"):
        for date_dir in kind_dir.glob("date=*"):
            for f in date_dir.iterdir():
                rel = f"{kind_dir.name}/{date_dir.name}/{f.name}"
                if _PART_RE.match(f.name) and rel not in listed:
                    f.unlink(missing_ok=True)


def _read_range(log: Any, p: int, start: int, stop: int) -> tuple[list[Event], list[int]]:
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


def _without_placeholders(p: int, first: int, events: list[Event],
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
        lost[-1:] = _merged([*lost[-1:], r])
    return kept, lost


def _merged(ranges: list[LostRange]) -> list[LostRange]:
    """Ranges in (partition, offset) order, adjacent equal ones joined (chunks cut runs apart)."""
    out: list[LostRange] = []
    for r in sorted(ranges, key=lambda r: (r.partition, r.first)):
        prev = out[-1] if out else None
        if prev is not None and (prev.partition, prev.stop, prev.ts, prev.append_ms, prev.report) == \
                (r.partition, r.first, r.ts, r.append_ms, r.report):
            out[-1] = msgspec.structs.replace(prev, stop=r.stop)
        else:
            out.append(r)
    return out


def _payload_json(payload: dict[str, Any]) -> tuple[bytes, bytes | None]:
    """The payload as JSON and, when JSON does not give it back exactly, as MessagePack."""
    raw = _json_enc.encode(payload)
    if _json_dec.decode(raw) == payload:
        return raw, None
    return raw, _mp_enc.encode(payload)


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


def _write_chunk(pa: Any, out: Path, p: int, offsets: list[int], events: list[Event],
                 append_ms: list[int]) -> list[FileEntry]:
    """Write the records at ``offsets`` (increasing) of partition ``p``, one file per (kind, date)."""
    import pyarrow.parquet as pq

    if not events:
        return []
    first = offsets[0]
    groups: dict[tuple[str, int], list[int]] = {}
    for i, ev in enumerate(events):
        groups.setdefault((ev.kind, ev.ts // _DAY_MS), []).append(i)
    encoded = [_payload_json(ev.payload) for ev in events]
    schema = _schema(pa)
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


# -- reading ------------------------------------------------------------------------------


class ParquetLog:
    """The read side of the ``Log`` API over a Parquet export (read-only).

    Reads only the files the manifest lists, so it sees exactly the log up to
    the manifest's ``upto`` at open time. ``BatchRunner(log=ParquetLog.open(DIR),
    store=...)`` runs any pipeline over the exported history.

    Attributes:
        path: The export directory.
        partitions: Partition count of the exported log.
    """

    readonly = True

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.partitions = manifest.partitions
        self._manifest = manifest
        self._files: list[list[FileEntry]] = [[] for _ in range(manifest.partitions)]
        for f in manifest.files:
            self._files[f.partition].append(f)
        self._lost: list[list[LostRange]] = [[] for _ in range(manifest.partitions)]
        for r in manifest.lost:
            self._lost[r.partition].append(r)
        self._meta: dict[str, Any] = {}
        self._running: dict[int, tuple[Any, Any]] = {}  # partition -> (offsets, running max ts)
        self._closed = False

    @classmethod
    def open(cls, out_dir: str | os.PathLike[str]) -> ParquetLog:
        """Open the export at ``out_dir``.

        Raises:
            MissingDependency: pyarrow is not installed.
            LogError: There is no export at ``out_dir``.
        """
        _pa()
        path = Path(out_dir)
        m = _read_manifest(path)
        if m is None:
            raise LogError(f"no Parquet export at {path} ({MANIFEST} missing): "
                           "run `fluvial log export --format parquet DIR` first")
        return cls(path, m)

    def partition_for(self, device: str) -> int:
        """Return ``crc32(device) % partitions``, as ``LocalLog`` does."""
        return zlib.crc32(device.encode()) % self.partitions

    def append(self, events: Any) -> Any:
        raise LogError(f"the Parquet export at {self.path} is read-only; append to the log and "
                       "export again")

    def _check(self, partition: int) -> None:
        if self._closed:
            raise LogError(f"the Parquet export at {self.path} is closed")
        if not 0 <= partition < self.partitions:
            raise LogError(f"partition {partition} does not exist; the export at {self.path} has "
                           f"partitions 0..{self.partitions - 1}")

    def start_offsets(self) -> list[int]:
        """Return the first exported offset of each partition."""
        return list(self._manifest.start)

    def end_offsets(self) -> list[int]:
        """Return, per partition, the offset the export holds records up to (excluded)."""
        return list(self._manifest.upto)

    def _parquet(self, f: FileEntry) -> Any:
        import pyarrow.parquet as pq

        full = self.path / f.path
        meta = self._meta.get(f.path)
        try:
            if meta is None:
                meta = self._meta[f.path] = pq.read_metadata(full)
            return pq.ParquetFile(full, metadata=meta)
        except FileNotFoundError:
            raise CorruptLogError(f"{full} is listed in the export manifest but missing") from None
        except OSError as exc:
            raise LogError(f"cannot read {full}: {exc}") from None

    def _table(self, partition: int, start: int, stop: int, columns: list[str]) -> Any:
        """The rows of ``partition`` with offsets in [start, stop), in offset order."""
        pa = _pa()
        import pyarrow.compute as pc

        parts = []
        for f in self._files[partition]:
            if f.last < start or f.first >= stop:
                continue
            pf = self._parquet(f)
            md = pf.metadata
            col = md.schema.names.index("offset")
            groups = []
            for g in range(md.num_row_groups):
                st = md.row_group(g).column(col).statistics
                if st is None or not st.has_min_max or (st.max >= start and st.min < stop):
                    groups.append(g)
            if not groups:
                continue
            t = pf.read_row_groups(groups, columns=columns, use_threads=False)
            off = t.column("offset")
            if pc.min(off).as_py() < start or pc.max(off).as_py() >= stop:
                t = t.filter(pc.and_(pc.greater_equal(off, start), pc.less(off, stop)))
            parts.append(t)
        if not parts:
            return None
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        if len(parts) > 1:
            table = table.take(pc.sort_indices(table.column("offset")))
        return table

    def read(self, partition: int, start_offset: int, *, max_records: int | None = None,
             stop_offset: int | None = None) -> RecordBatch:
        """Read exported events of one partition from ``start_offset`` (before ``stop_offset``).

        Same contract as ``LocalLog.read``: at most ``max_records`` (at most
        :data:`READ_LIMIT` when None), an empty batch at the end.

        Raises:
            LogError: No such partition, or ``start_offset`` is outside the export.
            CorruptLogError: A file the manifest lists is missing or lacks records.
        """
        self._check(partition)
        begin, end = self._manifest.start[partition], self._manifest.upto[partition]
        if not begin <= start_offset <= end:
            raise LogError(f"offset {start_offset} is outside partition {partition} of the "
                           f"export at {self.path} [{begin}, {end}]")
        limit = READ_LIMIT if max_records is None else max(0, max_records)
        stop = min(end, start_offset + limit)
        if stop_offset is not None:
            stop = min(stop, stop_offset)
        if stop <= start_offset:
            return RecordBatch(partition=partition, start_offset=start_offset, events=[],
                               append_ms=[])
        lost = [(max(r.first, start_offset), min(r.stop, stop), r) for r in self._lost[partition]
                if r.first < stop and r.stop > start_offset]  # placeholders: in the manifest, not in files
        want = list(_without_ranges(start_offset, stop, [(a, b) for a, b, _ in lost]))
        table = self._table(partition, start_offset, stop,
                            ["device", "kind", "ts", "seq", "payload", "offset", "append_ms",
                             "payload_msgpack"]) if want else None
        got = 0 if table is None else table.num_rows
        if got != len(want):
            raise CorruptLogError(f"the export at {self.path} holds {got} records of partition "
                                  f"{partition} in [{start_offset}, {stop}), expected {len(want)}: "
                                  "a file is missing or damaged")
        if table is None:
            events, append_ms = [], []
        else:
            import pyarrow.compute as pc

            if pc.any(pc.not_equal(table.column("offset"), _pa().array(want, _pa().int64()))).as_py():
                raise CorruptLogError(f"the export at {self.path} has a gap or duplicate in partition "
                                      f"{partition} within [{start_offset}, {stop})")
            payloads = _decode_payloads(table)
            events = [Event(device=d, kind=k, ts=t, seq=s, payload=pl) for d, k, t, s, pl in zip(
                table.column("device").to_pylist(), table.column("kind").to_pylist(),
                table.column("ts").to_pylist(), table.column("seq").to_pylist(), payloads)]
            append_ms = table.column("append_ms").to_pylist()
        for a, b, r in lost:  # back at their offsets, in order
            at = a - start_offset
            events[at:at] = r.events(a, b)
            append_ms[at:at] = [r.append_ms] * (b - a)
        return RecordBatch(partition=partition, start_offset=start_offset, events=events,
                           append_ms=append_ms)

    def offset_for_time(self, partition: int, ts_ms: int) -> int:
        """Return the first offset whose running max event time is >= ``ts_ms``
        (the end offset when none), as ``LocalLog`` does."""
        import numpy as np

        self._check(partition)
        if partition not in self._running:
            begin, end = self._manifest.start[partition], self._manifest.upto[partition]
            table = self._table(partition, begin, end, ["ts", "offset"]) if end > begin else None
            offsets = [np.zeros(0, np.int64)] if table is None else [table.column("offset").to_numpy()]
            ts = [np.zeros(0, np.int64)] if table is None else [table.column("ts").to_numpy()]
            for r in self._lost[partition]:  # the placeholders' times count, as in the log's index
                offsets.append(np.arange(r.first, r.stop, dtype=np.int64))
                ts.append(np.full(r.stop - r.first, r.ts, np.int64))
            all_offsets, all_ts = np.concatenate(offsets), np.concatenate(ts)
            order = np.argsort(all_offsets, kind="stable")
            running = np.maximum.accumulate(all_ts[order]) if len(order) else all_ts
            self._running[partition] = (all_offsets[order], running)
        offsets, running = self._running[partition]
        i = int(np.searchsorted(running, ts_ms, side="left"))
        return int(offsets[i]) if i < len(offsets) else self._manifest.upto[partition]

    def stats(self) -> list[PartitionStats]:
        """Return offsets, record count, event-time range and Parquet bytes of every partition."""
        out = []
        for p in range(self.partitions):
            files = self._files[p]
            begin, end = self._manifest.start[p], self._manifest.upto[p]
            times = [t for f in files for t in (f.min_ts, f.max_ts)] + [r.ts for r in self._lost[p]]
            out.append(PartitionStats(
                partition=p, start_offset=begin, end_offset=end, records=end - begin,
                min_ts=min(times, default=None), max_ts=max(times, default=None),
                bytes=sum(f.bytes for f in files)))
        return out

    def files(self) -> list[str]:
        """The absolute paths of the files of the export (see :func:`parquet_files`)."""
        return [str((self.path / f.path).absolute()) for f in self._manifest.files]

    def close(self) -> None:
        """Forget cached metadata; reads fail afterwards. Idempotent."""
        self._closed = True
        self._meta.clear()
        self._running.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ParquetLog({str(self.path)!r}, partitions={self.partitions})"


def _without_ranges(start: int, stop: int, ranges: list[tuple[int, int]]) -> Iterator[int]:
    """The offsets of ``[start, stop)`` outside ``ranges`` (sorted, disjoint, within it)."""
    at = start
    for a, b in ranges:
        yield from range(at, a)
        at = b
    yield from range(at, stop)


def _decode_payloads(table: Any) -> list[Any]:
    """Every payload of ``table``: one JSON decode of all of them, MessagePack where set."""
    pa = _pa()
    import pyarrow.compute as pc

    col = table.column("payload").combine_chunks()
    n = len(col)
    lists = pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), col)
    joined = pc.binary_join(lists, ",")[0].as_buffer()
    payloads: list[Any] = _json_dec.decode(b"[" + joined.to_pybytes() + b"]") if n else []
    exact = table.column("payload_msgpack")
    if exact.null_count < n:
        for i, raw in enumerate(exact.to_pylist()):
            if raw is not None:
                payloads[i] = _mp_dec.decode(raw)
    return payloads
