"""The export's manifest, ``_fluvial_export.json``: the truth of what the export holds.

It lists every file (:class:`FileEntry`) and, per log partition, the offset
exported up to, and the offsets of the placeholders of records lost to damage
(:class:`LostRange`), which no file holds. It is written last, atomically
(:func:`write_manifest`), so a crashed export leaves the old one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from fluvial.errors import CorruptLogError, LogError
from fluvial.events.envelope import Event
from fluvial.events.lost import placeholders

__all__ = ["MANIFEST", "FileEntry", "LostRange", "Manifest", "fsync_dir", "merged", "parquet_files",
           "read_manifest", "write_manifest"]

MANIFEST = "_fluvial_export.json"
_FORMAT = 1


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
    """The manifest: the log's partition count, per partition the first offset and the offset
    exported up to, the files, one entry per export run, and the lost ranges."""

    format: int = _FORMAT
    partitions: int
    start: list[int]
    upto: list[int]
    files: list[FileEntry]
    exports: list[dict[str, Any]] = msgspec.field(default_factory=list)
    lost: list[LostRange] = msgspec.field(default_factory=list)


_manifest_dec = msgspec.json.Decoder(Manifest)


def read_manifest(out: Path) -> Manifest | None:
    """The manifest of the export at ``out``; None if there is none.

    Raises:
        LogError: It cannot be read, or is of another format.
        CorruptLogError: It is not a manifest.
    """
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


def write_manifest(out: Path, m: Manifest) -> None:
    """Replace the manifest atomically (temp file, fsync, rename, fsync the directory)."""
    tmp = out / (MANIFEST + ".tmp")
    data = msgspec.json.format(msgspec.json.encode(m), indent=1) + b"\n"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out / MANIFEST)
    fsync_dir(out)


def fsync_dir(path: Path) -> None:
    """fsync a directory (its new and renamed entries), ignoring failures."""
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
    m = read_manifest(out)
    if m is None:
        raise LogError(f"no Parquet export at {out} ({MANIFEST} missing): "
                       "run `fluvial log export --format parquet DIR` first")
    return [str((out / f.path).absolute()) for f in m.files]


def merged(ranges: list[LostRange]) -> list[LostRange]:
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
