"""Persisted flows in batch runs: start from what an earlier action kept, keep what this one computed.

A persisted flow (:mod:`fluvial.flow.storage`) is kept with the *input* it was
computed from (:func:`input_key`: the log's offsets at the run's cut-off, the
size and modification time of source files).  A batch run whose input is the
same gives the kept chunks to the executor and plans without what feeds them
(:func:`~fluvial.engine.plan.compile_plan` ``cut``), so it reads none of their
sources; an input that grew is a miss, computed and kept anew.

``MEMORY`` keeps the chunks on the flow's :class:`~fluvial.flow.storage.CacheSlot`;
``DISK`` in ``DATA_DIR/cache/PIPELINE/LINEAGE.pickle``, where ``LINEAGE`` hashes the
operators up to the persisted flow with their parameters and the code of their
functions (a changed lambda is another file; a changed global it reads is not seen).
"""

from __future__ import annotations

import hashlib
import marshal
import os
import pickle
from pathlib import Path
from typing import Any

from fluvial.engine.execute import Chunk
from fluvial.engine.plan import Plan
from fluvial.errors import UnsupportedOperation
from fluvial.flow.graph import Node
from fluvial.flow.storage import CacheSlot

__all__ = ["Persisted", "input_key"]


def input_key(plan: Plan, cutoff: list[int] | None) -> tuple[Any, ...]:
    """What the plan's result depends on besides its code: log offsets and source files."""
    files: list[tuple[str, int | None, int | None]] = []
    for node in plan.sources:
        if node.op in ("text", "jsonl"):
            try:
                st = os.stat(node.params["path"])
                files.append((node.params["path"], st.st_size, st.st_mtime_ns))
            except OSError:
                files.append((node.params["path"], None, None))
    return (None if cutoff is None else tuple(cutoff), tuple(files))


class Persisted:
    """The persisted flows of the runs of one batch runner.

    Args:
        directory: Where ``DISK`` levels keep their files (``DATA_DIR/cache``); None: the
            runner has no data directory and refuses them.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    @staticmethod
    def _persisted(plan: Plan) -> list[Node]:
        return [n for n in plan.nodes if n.op == "cache"]

    def check(self, plan: Plan) -> None:
        """Refuse a ``DISK`` level without a data directory, before the run."""
        if self.directory is not None:
            return
        for node in self._persisted(plan):
            if node.params["level"].disk:
                raise UnsupportedOperation(
                    f"persist({node.params['level']}) at {node.label} keeps its elements in the data "
                    "directory, and this runner has none: run it on fluvial.open(DATA_DIR).batch_runner() "
                    "(or `fluvial run`), or keep them in memory with cache()")

    def hits(self, plan: Plan, key: tuple[Any, ...]) -> dict[int, list[Chunk]]:
        """The kept chunks of the plan's persisted flows computed from ``key``, by node id
        (the first found on each path: what is upstream of a hit is not needed)."""
        found: dict[int, list[Chunk]] = {}
        for node in self._persisted(plan):
            slot: CacheSlot = node.params["slot"]
            if slot.level.memory and slot.key == key and slot.value is not None:
                found[node.id] = slot.value
            elif slot.level.disk and self.directory is not None:
                chunks = self._load(plan, node, key)
                if chunks is not None:
                    found[node.id] = chunks
                    slot.key, slot.partitions = key, len(chunks)
                    slot.disk_bytes = self._file(plan, node).stat().st_size
                    if slot.level.memory:
                        self._remember(slot, key, chunks, len(pickle.dumps(chunks, pickle.HIGHEST_PROTOCOL)))
        return found

    def keep(self, plan: Plan, key: tuple[Any, ...], computed: dict[int, list[Chunk]]) -> None:
        """Keep what the run computed for its persisted flows, at their levels."""
        for node in self._persisted(plan):
            if node.id not in computed:
                continue
            chunks = computed[node.id]
            slot: CacheSlot = node.params["slot"]
            blob = pickle.dumps(chunks, pickle.HIGHEST_PROTOCOL)
            if slot.level.memory:
                self._remember(slot, key, chunks, len(blob))
            if slot.level.disk and self.directory is not None:
                self._store(plan, node, key, blob)
                slot.key, slot.disk_bytes, slot.partitions = key, len(blob), len(chunks)

    @staticmethod
    def _remember(slot: CacheSlot, key: tuple[Any, ...], chunks: list[Chunk], size: int) -> None:
        slot.key, slot.value, slot.partitions, slot.memory_bytes = key, chunks, len(chunks), size

    # -- on disk ---------------------------------------------------------------------------
    def _file(self, plan: Plan, node: Node) -> Path:
        assert self.directory is not None
        folder = plan.name if plan.name.strip(".") else f"_{len(plan.name)}"   # "." and ".." are names too
        return self.directory / folder / f"{lineage(node)}.pickle"

    def _load(self, plan: Plan, node: Node, key: tuple[Any, ...]) -> list[Chunk] | None:
        try:
            with open(self._file(plan, node), "rb") as f:
                if pickle.load(f) != key:
                    return None   # computed from another input (the log grew): compute it again
                chunks = pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError):
            return None   # none yet, or unreadable: compute it again
        return chunks  # type: ignore[no-any-return]

    def _store(self, plan: Plan, node: Node, key: tuple[Any, ...], blob: bytes) -> None:
        path = self._file(plan, node)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            pickle.dump(key, f, pickle.HIGHEST_PROTOCOL)
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def lineage(node: Node) -> str:
    """A hash of ``node`` and everything upstream: operators, parameters, function code."""
    digest = hashlib.sha256()
    seen: dict[int, int] = {}

    def visit(n: Node) -> int:
        if n.id not in seen:
            parents = [visit(p) for p in n.parents]
            seen[n.id] = len(seen)
            params = {k: v for k, v in n.params.items() if k != "slot"}
            digest.update(f"{seen[n.id]}:{n.op}:{parents}:".encode())
            digest.update(_fingerprint(params))
        return seen[n.id]

    visit(node)
    return digest.hexdigest()[:24]


def _fingerprint(value: Any, depth: int = 0) -> bytes:
    if depth > 4:
        return b"..."
    if isinstance(value, dict):
        return b"{" + b",".join(repr(k).encode() + b":" + _fingerprint(v, depth + 1)
                                for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))) + b"}"
    if isinstance(value, list | tuple):
        return b"[" + b",".join(_fingerprint(v, depth + 1) for v in value) + b"]"
    code = getattr(value, "__code__", None)
    if code is not None:
        cells = [c.cell_contents for c in (getattr(value, "__closure__", None) or ()) if _filled(c)]
        return (marshal.dumps(code) + _fingerprint(getattr(value, "__defaults__", None), depth + 1)
                + _fingerprint(cells, depth + 1))
    if callable(value) and not isinstance(value, type):
        return repr(value).encode()   # a builtin or an object with __call__: its repr
    spec = getattr(value, "spec", None)
    if callable(spec):
        try:
            return repr(spec()).encode()
        except TypeError:
            pass
    return repr(value).encode()


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True
