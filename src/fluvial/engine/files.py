"""File sinks: ``save_as_text_file``, ``save_as_json_lines``, ``save_as_parquet``.

Every part file is written whole under a hidden name (``.NAME.tmp-PID``),
fsynced, then renamed into place (``os.replace``, atomic on POSIX): a reader
listing the directory sees complete files only (it skips names starting with a
dot, as Spark and Hadoop skip ``.`` and ``_`` files).

* A batch run writes ``part-00000.EXT``, replacing the previous run's.
* A stream run writes ``microbatch-NNNNNNNN.EXT`` for micro-batch N, before it
  commits that micro-batch: a crash before the commit replays micro-batch N from
  the same offsets, and the replay rewrites the same file (a micro-batch with no
  output removes it).  So every committed element is in exactly one file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from fluvial.engine.plan import Plan
from fluvial.errors import ConfigError, FlowError, MissingDependency
from fluvial.flow.actions import FILE_FORMATS
from fluvial.flow.graph import Node

__all__ = ["batch_part", "check_file_sinks", "micro_batch_part", "write_part"]

_SINK_NAMES = {"text": "save_as_text_file", "jsonl": "save_as_json_lines", "parquet": "save_as_parquet"}


def _where(node: Node) -> str:
    return f"{_SINK_NAMES[node.params['format']]} at {node.label}"


def batch_part(node: Node) -> str:
    """The part file of a batch run."""
    return f"part-00000{FILE_FORMATS[node.params['format']]}"


def micro_batch_part(node: Node, micro_batch: int) -> str:
    """The part file of micro-batch ``micro_batch`` of a stream run."""
    return f"microbatch-{micro_batch:08d}{FILE_FORMATS[node.params['format']]}"


def check_file_sinks(plan: Plan) -> None:
    """Before a run: every file sink's directory exists (created if missing) and is
    writable, and Parquet can be written; else a :class:`ConfigError` saying which
    sink, which path, why, and what to do."""
    for sink in plan.sinks:
        if sink.op != "file":
            continue
        path = Path(sink.params["path"])
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{_where(sink)}: {path} is a file; give a directory (the part files "
                              "are written into it), or remove the file")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{_where(sink)}: cannot create the directory {path}: {exc.strerror}; "
                              "give a path under a writable directory") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{_where(sink)}: the directory {path} is not writable; give a directory "
                              "this process may write to, or change its permissions")
        if sink.params["format"] == "parquet":
            _pyarrow(sink)
        for stale in path.glob(".*.tmp-*"):   # a crash between write and rename left it
            stale.unlink(missing_ok=True)


def write_part(node: Node, elements: list[Any], name: str) -> Path | None:
    """Write ``elements`` as the part file ``name`` of ``node``'s directory, atomically;
    no elements: remove the part (a replayed micro-batch that now has none)."""
    directory = Path(node.params["path"])
    final = directory / name
    if not elements:
        final.unlink(missing_ok=True)
        return None
    data = _encode(node, elements)
    tmp = directory / f".{name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FlowError(f"{_where(node)}: cannot write {final}: {exc.strerror}") from None
    _fsync_dir(directory)
    return final


def _encode(node: Node, elements: list[Any]) -> bytes:
    fmt = node.params["format"]
    if fmt == "text":
        return "".join(f"{e}\n" for e in elements).encode("utf-8")
    if fmt == "jsonl":
        encode = msgspec.json.Encoder().encode
        out = bytearray()
        for e in elements:
            try:
                out += encode(e)
            except (TypeError, msgspec.EncodeError) as exc:
                raise FlowError(f"{_where(node)}: element {e!r:.60} is not JSON ({exc}); map it to "
                                "dicts, lists, strings and numbers first") from None
            out += b"\n"
        return bytes(out)
    return _parquet(node, elements)


def _pyarrow(node: Node) -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet  # the submodule, as pa.parquet
    except ImportError:
        raise MissingDependency(f"{_where(node)}: Parquet needs pyarrow: pip install pyarrow "
                                "(or write JSON lines: save_as_json_lines)") from None
    return pa


def _parquet(node: Node, elements: list[Any]) -> bytes:
    pa = _pyarrow(node)
    rows = []
    for e in elements:
        if isinstance(e, dict):
            rows.append(e)
        elif isinstance(e, msgspec.Struct):
            rows.append(msgspec.structs.asdict(e))
        elif isinstance(e, tuple) and hasattr(e, "_asdict"):
            rows.append(e._asdict())
        else:
            raise FlowError(f"{_where(node)}: element {e!r:.60} is not a row; Parquet takes dicts "
                            "(or structs, named tuples): map the elements to dicts of one shape first")
    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise FlowError(f"{_where(node)}: the rows do not make one Parquet table ({exc}); give every "
                        "row the same keys with values of one type per key") from None
    sink = pa.BufferOutputStream()
    pa.parquet.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
