"""The immutable event log: the ``Log`` interface and its local-disk default."""

from fluvial.log.base import AppendResult, Log, LogReader, PartitionStats, RecordBatch
from fluvial.log.deadletter import DeadLetter, DeadLetterLog
from fluvial.log.local import LocalLog

__all__ = [
    "AppendResult",
    "DeadLetter",
    "DeadLetterLog",
    "LocalLog",
    "Log",
    "LogReader",
    "PartitionStats",
    "RecordBatch",
]
