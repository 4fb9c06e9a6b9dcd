"""The fluvial log as a Spark Structured Streaming source (Spark 4's Python data sources).

    spark.dataSource.register(FluvialLogSource)
    df = spark.readStream.format("fluvial").option("path", "/data/log").load()

Offsets are log positions: ``{"p0": next offset, "p1": ...}``, one entry per
log partition.  Every micro-batch reads, per partition, the records between
the previous batch's end and the new end; Spark's ``maxRecordsPerTrigger``
style cap is the option ``max_records`` (split evenly over the partitions,
as the local stream runner does).  Rows carry the whole event (msgpack, the
log's own encoding) next to its readable envelope fields and ``append_ms`` (when
the log stored it: how far ahead of that the event is stamped tells a clock ahead).  Placeholders of
records lost to damage (kind ``fluvial.lost``, see :mod:`fluvial.events.lost`)
are not events: they give no row, and their offsets are gaps in ``offset``.

Options:
    log: The log's URL (``file:///data/log``; see :mod:`fluvial.backends`), opened read only.
    path: The log directory (the same as ``log`` = ``file://PATH``).
    max_records: At most this many records per micro-batch (0: no cap).
    start: JSON offsets to start at when Spark has no checkpoint (default: 0).
    hold_at: JSON offsets no partition goes past until every partition reached
        them (the stream runner's warm-up: rebuilding state up to a cut-off).
    placeholders: ``skip`` (default) or ``keep``: rows for the placeholders too (the
        stream runner's, whose offsets must be consecutive; it drops them itself).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows, SupportsTriggerAvailableNow

from fluvial.events.envelope import Event
from fluvial.events.lost import LOST_KIND

SCHEMA = "partition int, offset long, device string, kind string, ts long, seq long, event binary, append_ms long"
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Event)


def decode_event(blob: bytes) -> Event:
    """The event of a row's ``event`` column."""
    return _dec.decode(blob)


def as_offsets(positions: Sequence[int]) -> dict[str, int]:
    """Log positions as a Spark offset: ``{"p0": n0, "p1": n1, ...}``."""
    return {f"p{p}": int(o) for p, o in enumerate(positions)}


def from_offsets(offset: dict[str, Any]) -> list[int]:
    """A Spark offset back as log positions per partition."""
    return [int(offset[f"p{p}"]) for p in range(len(offset))]


class LogRange(InputPartition):  # type: ignore[misc]
    """Records ``[start, stop)`` of one log partition."""

    def __init__(self, partition: int, start: int, stop: int) -> None:
        super().__init__((partition, start, stop))
        self.partition, self.start, self.stop = partition, start, stop


class FluvialLogSource(DataSource):  # type: ignore[misc]
    """The ``fluvial`` streaming source: records of a fluvial log."""

    @classmethod
    def name(cls) -> str:
        return "fluvial"

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema: Any) -> DataSourceStreamReader:
        return LogStreamReader(dict(self.options))


def _open(url: str) -> Any:
    from fluvial.backends import open_log

    return open_log(url, readonly=True)


class LogStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):  # type: ignore[misc]
    """Offsets, admission control (``max_records``) and reads of the log."""

    def __init__(self, options: dict[str, str]) -> None:
        if not options.get("log") and not options.get("path"):
            raise ValueError("the fluvial source needs option('log', LOG_URL) (or option('path', LOG_DIRECTORY))")
        self.path = options.get("log") or f"file://{options['path']}"   # what executors open
        self.max_records = int(options.get("max_records") or 0)
        self.start = json.loads(options["start"]) if options.get("start") else None
        self.hold_at = json.loads(options["hold_at"]) if options.get("hold_at") else None
        if options.get("placeholders", "skip") not in ("skip", "keep"):
            raise ValueError(f"option placeholders must be 'skip' or 'keep', got {options['placeholders']!r}")
        self.skip_lost = options.get("placeholders", "skip") == "skip"
        self._until: list[int] | None = None  # availableNow: the end offsets when the trigger began

    def _ends(self) -> list[int]:
        if self._until is not None:
            return list(self._until)
        log = _open(self.path)
        try:
            return log.end_offsets()  # type: ignore[no-any-return]
        finally:
            log.close()

    def initialOffset(self) -> dict[str, int]:
        if self.start is not None:
            return as_offsets(self.start)
        log = _open(self.path)
        try:
            return as_offsets(log.start_offsets())   # not 0: a retained log starts later
        finally:
            log.close()

    def prepareForTriggerAvailableNow(self) -> None:
        self._until = None
        self._until = self._ends()

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.max_records) if self.max_records > 0 else ReadAllAvailable()

    def latestOffset(self, start: dict[str, int], limit: ReadLimit) -> dict[str, int]:
        begin = from_offsets(start)
        ends = self._ends()
        if len(ends) != len(begin):
            raise ValueError(f"the log at {self.path} has {len(ends)} partitions, the offsets {len(begin)}")
        if self.hold_at is not None and any(b < h for b, h in zip(begin, self.hold_at)):
            ends = [min(e, max(b, h)) for e, b, h in zip(ends, begin, self.hold_at)]
        if isinstance(limit, ReadMaxRows) and limit.max_rows > 0:
            per_partition = max(1, limit.max_rows // max(1, len(begin)))
            ends = [min(e, b + per_partition) for e, b in zip(ends, begin)]
        return as_offsets([max(e, b) for e, b in zip(ends, begin)])

    def reportLatestOffset(self) -> dict[str, int]:
        return as_offsets(self._ends())

    def partitions(self, start: dict[str, int], end: dict[str, int]) -> Sequence[InputPartition]:
        return [LogRange(p, s, e) for p, (s, e) in enumerate(zip(from_offsets(start), from_offsets(end)))
                if e > s]

    def read(self, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
        assert isinstance(partition, LogRange)
        log = _open(self.path)
        try:
            offset = partition.start
            while offset < partition.stop:
                batch = log.read(partition.partition, offset, stop_offset=partition.stop)
                if not batch.events:
                    raise RuntimeError(f"log {self.path} partition {partition.partition}: offsets "
                                       f"[{offset}, {partition.stop}) were announced but cannot be read")
                for ev, append_ms in zip(batch.events, batch.append_ms):
                    if not (self.skip_lost and ev.kind == LOST_KIND):
                        yield (partition.partition, offset, ev.device, ev.kind, ev.ts, ev.seq, _enc.encode(ev),
                               append_ms)
                    offset += 1
        finally:
            log.close()

    def commit(self, end: dict[str, int]) -> None:
        pass  # the log keeps everything; the runner's store checkpoint is the truth
