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

The package: :func:`export_parquet` runs an export; it is here, with the chunk size
and the manifest writer it calls, so that these are attributes of ``fluvial.log.parquet``
(the crash tests replace them there). Its steps are in ``export.py``, the manifest in
``manifest.py``, the files' columns in ``columns.py``, :class:`ParquetLog` in ``reader.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fluvial.errors import ConfigError, LogError
from fluvial.log.parquet.columns import load_pyarrow
from fluvial.log.parquet.export import (
    ExportReport,
    check_same_log,
    export_lock,
    read_range,
    remove_orphans,
    without_placeholders,
    write_chunk,
)
from fluvial.log.parquet.manifest import (
    MANIFEST,
    FileEntry,
    LostRange,
    Manifest,
    fsync_dir,
    merged,
    parquet_files,
    read_manifest,
)
from fluvial.log.parquet.manifest import write_manifest as _write_manifest
from fluvial.log.parquet.reader import ParquetLog

__all__ = ["MANIFEST", "ExportReport", "LostRange", "ParquetLog", "export_parquet", "parquet_files"]

CHUNK_RECORDS = 500_000   # log records per partition turned into files at once (bounds memory)


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
    pa = load_pyarrow()
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
    with export_lock(out):
        manifest = read_manifest(out)
        starts, ends = list(log.start_offsets()), list(log.end_offsets())
        fresh = manifest is None
        if manifest is None:
            manifest = Manifest(partitions=log.partitions, start=starts, upto=list(starts), files=[])
        check_same_log(out, manifest, log, ends)
        remove_orphans(out, manifest)
        written: list[FileEntry] = []
        lost: list[LostRange] = []
        total = 0
        for p in range(manifest.partitions):
            offset = manifest.upto[p]
            while offset < ends[p]:
                stop = min(ends[p], offset + CHUNK_RECORDS)
                events, append_ms = read_range(log, p, offset, stop)
                kept, gone = without_placeholders(p, offset, events, append_ms)
                written.extend(write_chunk(pa, out, p, [offset + i for i in kept], [events[i] for i in kept],
                                           [append_ms[i] for i in kept]))
                lost.extend(gone)
                total += len(kept)
                offset = stop
                if progress is not None:
                    progress(len(events))
        n_lost = sum(r.stop - r.first for r in lost)
        if written or lost or fresh or manifest.upto != ends:
            fsync_dir(out)
            manifest.files.extend(written)
            manifest.lost = merged(manifest.lost + lost)
            manifest.upto = ends
            manifest.exports.append({"at_ms": time.time_ns() // 1_000_000, "events": total,
                                     "files": len(written), "lost": n_lost, "upto": ends})
            _write_manifest(out, manifest)
        return ExportReport(events=total, files=len(written), seconds=time.perf_counter() - started,
                            upto=list(manifest.upto), lost=n_lost)
