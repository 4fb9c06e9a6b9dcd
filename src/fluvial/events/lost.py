"""Placeholders for records lost to damage on disk: they keep the log's offsets stable.

``fluvial log salvage`` replaces each damaged batch of the log with a batch of
the same offsets holding one placeholder event per lost record, of kind and
device :data:`LOST_KIND` (a name reserved for this). Offsets stay consecutive,
so every checkpoint, batch cut-off and ``(partition, offset)`` position stays
valid; readers by kind never see a placeholder, and the runners drop them from
``from_log()`` (all kinds) too. What was lost is in the salvage report.

Example:
    >>> [e.seq for e in placeholders(100, 3, ts_ms=5, note="log-quarantine/x")]
    [100, 101, 102]
    >>> without_lost(placeholders(0, 2, ts_ms=0, note="")) == []
    True
"""

from __future__ import annotations

from collections.abc import Sequence

from fluvial.events.envelope import Event
from fluvial.events.schema import RESERVED_KIND_PREFIX

__all__ = ["LOST_KIND", "placeholders", "without_lost"]

LOST_KIND = f"{RESERVED_KIND_PREFIX}lost"
"""Kind and device of a placeholder: under the reserved prefix, so no schema can take this name."""


def placeholders(base: int, count: int, *, ts_ms: int, note: str) -> list[Event]:
    """``count`` placeholders for offsets ``base ..``; ``seq`` is the offset (unique per partition).

    Args:
        base: The first lost offset.
        count: How many records were lost.
        ts_ms: Their event time (the time index needs one; the lost times are unknown).
        note: Where the report of the loss is, relative to the data directory.
    """
    payload = {"lost": "a damaged batch, moved aside by fluvial log salvage", "report": note}
    return [Event(device=LOST_KIND, kind=LOST_KIND, ts=ts_ms, seq=base + i, payload=payload)
            for i in range(count)]


def without_lost(events: Sequence[Event]) -> list[Event]:
    """``events`` without the placeholders of lost records."""
    return [e for e in events if e.kind != LOST_KIND]
