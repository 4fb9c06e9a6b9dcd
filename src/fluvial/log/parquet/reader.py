"""``ParquetLog``: the read side of the ``Log`` API over a Parquet export."""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from fluvial.errors import CorruptLogError, LogError
from fluvial.events.envelope import Event
from fluvial.log.base import PartitionStats, RecordBatch
from fluvial.log.parquet.columns import decode_payloads, load_pyarrow
from fluvial.log.parquet.manifest import MANIFEST, FileEntry, LostRange, Manifest, read_manifest

__all__ = ["READ_LIMIT", "ParquetLog"]

READ_LIMIT = 1 << 20      # records returned by one read() when max_records is None (as LocalLog)


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
        load_pyarrow()
        path = Path(out_dir)
        m = read_manifest(path)
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
        pa = load_pyarrow()
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

            pa = load_pyarrow()
            if pc.any(pc.not_equal(table.column("offset"), pa.array(want, pa.int64()))).as_py():
                raise CorruptLogError(f"the export at {self.path} has a gap or duplicate in partition "
                                      f"{partition} within [{start_offset}, {stop})")
            payloads = decode_payloads(table)
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
