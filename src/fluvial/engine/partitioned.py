"""One partition of a pipeline, as a worker runs it: the log seen through one partition,
and what a pipeline must be for its partitions to run apart.

The log puts every event of a device in one partition (``partition_for``, a
stable hash of the device), in append order.  A stream runner given
:class:`PartitionSlice` reads one partition as if it were a one-partition
log, and commits that partition's checkpoint (its offset and the operator
state of its devices alone).  The results of the partitions meet only in the
store, where monoid aggregations merge (``Txn.merge_rows`` adds partials).

:func:`check_partitionable` refuses, before anything runs, the operators
whose result depends on events of several partitions meeting in one process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fluvial.errors import UnsupportedOperation
from fluvial.flow.graph import NARROW_OPS

if TYPE_CHECKING:
    from fluvial.engine.plan import Plan
    from fluvial.log.base import LogReader, PartitionStats, RecordBatch

__all__ = ["PartitionSlice", "check_partitionable"]

_ALLOWED = NARROW_OPS | {"log", "cache", "aggregate", "late", "view", "foreach", "print"}
_WHY = {
    "state": "per-key state (map_with_state / update_state_by_key) needs every event of a key in one "
             "place, and a key other than the device spreads over partitions",
    "join": "a join needs both sides of a key in one place, and they may come from different partitions",
    "text": "a file source is not partitioned like the log", "jsonl": "a file source is not partitioned "
            "like the log", "queue": "an in-memory source lives in one process",
    "rate": "a generator source lives in one process",
    "save": "save_to upserts whole rows, so the partial rows of two partitions would overwrite each other",
    "file": "file sinks write one part file per micro-batch of one runner",
    "sort": "sorting needs all of its input in one place",
}


def check_partitionable(plan: Plan) -> None:
    """Refuse a pipeline whose partitions cannot run in separate workers.

    Allowed: log sources, narrow operators (map, filter, ...), monoid aggregations whose
    only consumers are views (``to_view``), and at-least-once sinks (``print``,
    ``foreach``).  Per-device event time holds, since a device stays in one partition.

    Raises:
        UnsupportedOperation: Names the operator, why, and what to do instead.
    """
    fix = (f"Run pipeline {plan.name!r} with a single stream runner (`fluvial run FLOW --mode stream`, or "
           "`fluvial serve`), which sees every partition; repartitioning through the log is not built yet")
    # the operator that says most first: a join or per-key state before the tables feeding it
    for node in [n for n in plan.nodes if n.op not in _ALLOWED] + [
            n for n in plan.nodes if n.op == "aggregate" and n.id in plan.stateful]:
        why = _WHY.get(node.op, f"operator {node.op!r} combines elements across partitions")
        if node.op == "aggregate":
            why = ("an aggregation consumed by other operators than to_view is a table kept per key in "
                   "one process, and its keys spread over partitions")
        raise UnsupportedOperation(f"{node.label}: workers run each log partition apart, and {why}. {fix}")
    for name, spec in plan.views.items():
        if spec.source.op != "aggregate":
            raise UnsupportedOperation(
                f"{spec.sink.label}: to_view({name!r}) of (key, value) pairs keeps the latest value per key, "
                "and 'latest' across partitions read by different workers has no order. Aggregate it "
                f"(reduce_by_key, aggregate_by_key: monoids merge in the store), or: {fix}")


class PartitionSlice:
    """Partition ``partition`` of ``log``, seen as a log of one partition (partition 0).

    It does not own ``log``: :meth:`close` leaves it open.
    """

    partitions = 1

    def __init__(self, log: LogReader, partition: int) -> None:
        if not 0 <= partition < log.partitions:
            raise UnsupportedOperation(f"partition {partition} is not in the log (0..{log.partitions - 1})")
        self.base = log
        self.partition = partition

    def partition_for(self, device: str) -> int:
        return 0

    def read(self, partition: int, start_offset: int, *, max_records: int | None = None,
             stop_offset: int | None = None) -> RecordBatch:
        self._check(partition)
        return self.base.read(self.partition, start_offset, max_records=max_records, stop_offset=stop_offset)

    def start_offsets(self) -> list[int]:
        return [self.base.start_offsets()[self.partition]]

    def end_offsets(self) -> list[int]:
        return [self.base.end_offsets()[self.partition]]

    def offset_for_time(self, partition: int, ts_ms: int) -> int:
        self._check(partition)
        return self.base.offset_for_time(self.partition, ts_ms)

    def stats(self) -> list[PartitionStats]:
        return [self.base.stats()[self.partition]]

    def close(self) -> None:
        """The underlying log stays open (its owner closes it)."""

    def _check(self, partition: int) -> None:
        if partition != 0:
            raise UnsupportedOperation(f"a slice of partition {self.partition} has one partition (0), "
                                       f"asked for {partition}")
