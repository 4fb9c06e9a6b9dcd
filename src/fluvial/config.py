"""Frozen, keyword-only configuration objects and their defaults.

Environment variables are read only in :mod:`fluvial.cli`; library code gets
everything through these objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from fluvial.errors import ConfigError
from fluvial.state.ownership import DEFAULT_LEASE_MS

DEFAULT_DATA_DIR = ".fluvial"
FSYNC_POLICIES = ("batch", "interval", "never")


@dataclass(frozen=True, kw_only=True)
class LogConfig:
    """How the embedded log stores events.

    Attributes:
        partitions: Partitions of a new log (fixed when the log is created). ``None`` (the
            default): an existing log's own count, 4 for a new one; a number is checked against
            an existing log's count.
        fsync: ``batch`` (an acknowledged append is on disk), ``interval`` or ``never``.
        fsync_interval_ms: With ``fsync="interval"``, the longest time between two fsyncs.
        segment_bytes: Size at which a partition starts a new segment file.
    """

    partitions: int | None = None
    fsync: str = "batch"
    fsync_interval_ms: int = 1000
    segment_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.partitions is not None and not 1 <= self.partitions <= 1024:
            raise ConfigError(f"partitions must be between 1 and 1024, got {self.partitions}")
        if self.fsync not in FSYNC_POLICIES:
            raise ConfigError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, got {self.fsync!r}")
        if self.fsync_interval_ms <= 0 or self.segment_bytes < 4096:
            raise ConfigError("fsync_interval_ms must be > 0 and segment_bytes >= 4096")


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """Micro-batching of the stream runner.

    Attributes:
        batch_interval_ms: Time between the starts of two micro-batches.
        max_batch_records: Most log records in one micro-batch: bounds memory
            while catching up (at steady state a micro-batch holds what arrived
            in one interval).
        lease_ms: How long a runner may go silent (paused, cut off from the store)
            before another runner may claim its pipeline (see
            :mod:`fluvial.state.ownership`); it renews its claim every ``lease_ms / 4``.
    """

    batch_interval_ms: int = 1000
    max_batch_records: int = 250_000
    lease_ms: int = DEFAULT_LEASE_MS

    def __post_init__(self) -> None:
        if self.batch_interval_ms < 0 or self.max_batch_records <= 0:
            raise ConfigError("batch_interval_ms must be >= 0 and max_batch_records > 0")
        if self.lease_ms <= 0:
            raise ConfigError(f"lease_ms must be > 0, got {self.lease_ms}")


DEFAULT_LOG = LogConfig()
DEFAULT_STREAM = StreamConfig()
