"""Watermarks: how far event time has progressed, per input partition.

The watermark of a window operator, for one input partition (a log
partition, a file, a queue), is the largest event time the operator has seen
from it minus ``allowed_lateness_ms``.  An element whose event time is below
the watermark *before* it arrives is late.  Because it depends only on the
order of records inside each partition, and the log fixes that order, the set
of late events does not depend on how the stream was cut into micro-batches:
a crash and a restart with other batch boundaries flags the same events.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

_NEG_INF = -(2**63)


class Watermarks:
    """Per-partition event-time watermarks of one operator.

    Example:
        >>> wm = Watermarks(allowed_lateness_ms=10)
        >>> wm.split("p0", [100, 95, 80, 120, 111])
        [True, True, False, True, True]
    """

    def __init__(self, allowed_lateness_ms: int = 0, max_ts: dict[Hashable, int] | None = None) -> None:
        self.allowed_lateness_ms = allowed_lateness_ms
        self._max_ts: dict[Hashable, int] = dict(max_ts or {})

    def split(self, origin: Hashable, ts_ms: Sequence[int]) -> list[bool]:
        """Flags, in order, which elements of ``origin`` are on time; advances the watermark."""
        high = self._max_ts.get(origin, _NEG_INF)
        lateness = self.allowed_lateness_ms
        flags: list[bool] = []
        append = flags.append
        for ts in ts_ms:
            append(ts >= high - lateness)
            if ts > high:
                high = ts
        self._max_ts[origin] = high
        return flags

    def watermark(self, origin: Hashable) -> int | None:
        """The current watermark of one partition (None before its first element)."""
        high = self._max_ts.get(origin)
        return None if high is None else high - self.allowed_lateness_ms

    def snapshot(self) -> dict[Hashable, int]:
        return dict(self._max_ts)
