"""Reading the sources of a plan into chunks, whole or in splits."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import msgspec

from fluvial.engine.execute import Chunk
from fluvial.engine.plan import Plan
from fluvial.errors import ConfigError, FlowError
from fluvial.events.lost import LOST_KIND, without_lost  # placeholders of records lost to damage
from fluvial.flow.graph import Node
from fluvial.windows.watermark import DEFAULT_FUTURE_MS

if TYPE_CHECKING:
    from fluvial.log.base import LogReader
    from fluvial.serving.base import ViewStore

_json = msgspec.json.Decoder()
SPLIT_BYTES = 8 * 1024 * 1024


class LazyLog:
    """What runners run against: a log (opened only when a pipeline first reads it) and a store.

    A runner may be made without either (``collect()`` of an in-memory flow needs
    neither); asking for one it lacks is a :class:`~fluvial.errors.ConfigError` that
    says how to give it one.
    """

    _log: LogReader | Callable[[], LogReader] | None
    _store: ViewStore | Callable[[], ViewStore] | None

    @property
    def has_log(self) -> bool:
        return self._log is not None

    @property
    def log(self) -> LogReader:
        """The log; a callable given instead is called once, when a pipeline first needs it."""
        if self._log is None:
            raise ConfigError("this runner has no log: give it one (log=..., or a runner of "
                              "fluvial.open(DATA_DIR), or `fluvial run`)")
        if callable(self._log) and not hasattr(self._log, "read"):
            self._log = self._log()
        return cast("LogReader", self._log)

    @property
    def log_if_any(self) -> LogReader | None:
        """The log, or ``None`` for a runner made without one (its flows read no log)."""
        return self.log if self._log is not None else None

    @property
    def has_store(self) -> bool:
        return self._store is not None

    @property
    def store(self) -> ViewStore:
        """The store views, checkpoints and leases are written to; a callable given instead is
        called once, when first needed (a stream runner then opens it where it rides out a
        store that cannot be reached yet)."""
        if self._store is None:
            raise ConfigError("this runner has no store to write views to: give it one (store=..., or a "
                              "runner of fluvial.open(DATA_DIR), or `fluvial run`)")
        if callable(self._store) and not hasattr(self._store, "transaction"):
            self._store = self._store()
        return cast("ViewStore", self._store)


@dataclass(frozen=True)
class Split:
    """A piece of input one worker reads: a log partition range or a file byte range."""

    kind: str          # "log" | "file" | "memory"
    partition: int = 0
    start: int = 0
    stop: int = 0
    path: str = ""


def log_sources(plan: Plan) -> list[Node]:
    return [n for n in plan.sources if n.op == "log"]


def log_chunks(plan: Plan, partition: int, events: list[Any],
               append_ms: list[int] | None = None) -> dict[int, list[Chunk]]:
    """Dispatch decoded log events of one partition to the plan's log sources by kind.

    With ``append_ms`` (when the log stored each event; stream runs), the chunks of
    timed sources say each event's device, or ``None`` for an event stamped more than
    the source's ``future_ms`` after the log stored it (a clock ahead: it moves no
    watermark, see :mod:`fluvial.windows.watermark`).
    """
    out: dict[int, list[Chunk]] = {}
    for node in log_sources(plan):
        kind = node.params["kind"]
        timed = node.id in plan.timed
        picked = without_lost(events) if kind is None else [e for e in events if e.kind == kind]
        origin = (plan.index[node.id], partition)
        devices: list[Any] | None = None
        if timed and append_ms is not None:
            arrivals = append_ms
            if len(picked) != len(events):
                arrivals = [a for e, a in zip(events, append_ms)
                            if (e.kind != LOST_KIND if kind is None else e.kind == kind)]
            margin = node.params.get("future_ms", DEFAULT_FUTURE_MS)
            devices = [e.device if e.ts <= a + margin else None for e, a in zip(picked, arrivals)]
        out[node.id] = [Chunk(origin, picked, [e.ts for e in picked] if timed else None, devices)]
    return out


def plan_splits(plan: Plan, cutoff: list[int] | None, *, slice_records: int,
                sources: list[Node] | None = None) -> list[tuple[Split, int]]:
    """Splits of the whole (bounded) input, with a size estimate each (records or bytes)."""
    splits: list[tuple[Split, int]] = []
    if sources is None and log_sources(plan) and cutoff is not None:
        for partition, end in enumerate(cutoff):
            for start in range(0, end, slice_records):
                splits.append((Split("log", partition, start, min(end, start + slice_records)),
                               min(end, start + slice_records) - start))
    for node in plan.sources if sources is None else sources:
        if node.op in ("text", "jsonl"):
            path = node.params["path"]
            try:
                size = os.path.getsize(path)
            except OSError as exc:
                raise ConfigError(f"{node.op} source at {node.label}: cannot read {path!r}: "
                                  f"{exc.strerror}") from None
            for start in range(0, max(size, 1), SPLIT_BYTES):
                splits.append((Split("file", plan.index[node.id], start, min(size, start + SPLIT_BYTES),
                                     path), min(size, start + SPLIT_BYTES) - start))
        elif node.op in ("queue", "rate"):
            splits.append((Split("memory", plan.index[node.id]), 1))
    return splits


def read_split(plan: Plan, split: Split, log: Any) -> dict[int, list[Chunk]]:
    if split.kind == "log":
        if log is None:
            raise ConfigError("this pipeline reads the log: run it with a log "
                              "(fluvial.open(DATA_DIR).batch_runner(), or `fluvial run`)")
        events: list[Any] = []
        offset = split.start
        while offset < split.stop:
            batch = log.read(split.partition, offset, stop_offset=split.stop)
            if not batch.events:
                break
            events.extend(batch.events)
            offset = batch.next_offset
        return log_chunks(plan, split.partition, events)
    node = plan.nodes[split.partition]
    if split.kind == "file":
        lines = list(_file_lines(split.path, split.start, split.stop))
        return {node.id: [_file_chunk(plan, node, lines, split.start)]}
    return {node.id: memory_chunks(plan, node, 0, None)[0]}


def _file_lines(path: str, start: int, stop: int) -> Iterator[bytes]:
    """Lines whose first byte lies in ``[start, stop)`` (Hadoop's line splits)."""
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()  # the line started in the previous split
        while f.tell() < stop or (start == stop == 0):
            line = f.readline()
            if not line:
                break
            yield line.rstrip(b"\r\n") if line.endswith(b"\n") else line
            if start == stop == 0:
                continue


def _file_chunk(plan: Plan, node: Node, lines: list[bytes], at: int) -> Chunk:
    origin = (plan.index[node.id], at)
    timed = node.id in plan.timed
    if node.op == "text":
        try:
            values = [line.decode("utf-8") for line in lines]
        except UnicodeDecodeError as exc:
            raise FlowError(f"text source at {node.label}: {node.params['path']} is not UTF-8 "
                            f"(near byte {at}): {exc.reason}") from None
        return Chunk(origin, values, [0] * len(values) if timed else None)
    values, ts = [], []
    ts_field = node.params["ts_field"]
    for line in lines:
        if not line.strip():
            continue
        try:
            obj = _json.decode(line)
        except msgspec.DecodeError as exc:
            raise FlowError(f"jsonl source at {node.label}: {node.params['path']}: malformed line "
                            f"{line[:60]!r}: {exc}") from None
        values.append(obj)
        if timed:
            t = obj.get(ts_field, 0) if ts_field and isinstance(obj, dict) else 0
            ts.append(int(t) if isinstance(t, (int, float)) else 0)
    return Chunk(origin, values, ts if timed else None)


def memory_chunks(plan: Plan, node: Node, position: int, limit: int | None
                  ) -> tuple[list[Chunk], int, int | None]:
    """Queue and rate sources: chunks from ``position`` (batch index / element index).

    Returns the chunks, the new position, and the event time of the first batch
    taken (for the ``Time:`` header of print), or None when exhausted.
    """
    p = node.params
    origin_base = plan.index[node.id]
    if node.op == "queue":
        batches = p["batches"]
        stop = len(batches) if limit is None else min(len(batches), position + limit)
        chunks = []
        for i in range(position, stop):
            t = p["start_ms"] + i * p["interval_ms"]
            chunks.append(Chunk((origin_base, 0), list(batches[i]), [t] * len(batches[i])))
        first = p["start_ms"] + position * p["interval_ms"] if position < stop else None
        return chunks, stop, first
    total, rate, start = p["total"], p["per_second"], p["start_ms"]
    stop = total if limit is None else min(total, position + limit)
    values = list(range(position, stop))
    ts = [start + (i * 1000) // rate for i in values]
    return ([Chunk((origin_base, 0), values, ts)] if values else []), stop, (ts[0] if ts else None)
