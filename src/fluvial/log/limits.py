"""What the event log can store, checked before anything is written or recorded.

The log keeps events as MessagePack (integers from ``-2**63`` to ``2**64 - 1``)
under batch headers holding event times as signed 64-bit integers, and its
de-duplication state, its Parquet export and Spark keep ``seq`` as a signed
64-bit integer. A payload nested deeper than :data:`MAX_DEPTH` would decode at
ingest but could fail to decode again in a reader with a deeper call stack (a
poisoned log), so it is refused too.

:func:`check_events` names the first problem with its path
(``$[3].payload.a.b``); :func:`all_storable` is the fast answer for the common
case where every event is fine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from fluvial.errors import ValidationError
from fluvial.events.envelope import Event

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "MAX_SEQ",
    "MAX_TS_MS",
    "MIN_INT",
    "MIN_TS_MS",
    "all_storable",
    "check_events",
    "event_problem",
]

MIN_INT = -(2**63)
"""The smallest integer a payload may hold (MessagePack int64)."""
MAX_INT = 2**64 - 1
"""The largest integer a payload may hold (MessagePack uint64)."""
MIN_TS_MS = -62_135_596_800_000
MAX_TS_MS = 253_402_300_799_999
"""Event times are epoch milliseconds of a date in the years 1 to 9999 (0001-01-01T00:00:00Z to
9999-12-31T23:59:59.999Z), as ISO 8601 writes them.  The batch headers would hold any signed
64-bit value, but a window or a watermark computed from a time at the ends of that range does
not fit in 64 bits: one such event stopped the speed layer for good."""
MAX_SEQ = 2**63 - 1
"""The largest ``seq``: a signed 64-bit counter (dedup state, Parquet export, Spark)."""
MAX_DEPTH = 256
"""Levels of objects and arrays a payload may nest (the payload object is level 1)."""

_enc = msgspec.msgpack.Encoder()
_LEAVES = (str, float, bool, type(None), bytes)
_CONTAINERS = (dict, list, tuple)


def all_storable(events: Sequence[Event]) -> bool:
    """Whether the log can store every event (fast: one encode, a walk over containers only).

    Assumes envelope types are right (as msgspec decoding guarantees); when this
    answers False, :func:`event_problem` says which event and why.
    """
    if not events:
        return True
    ts = [ev.ts for ev in events]
    seqs = [ev.seq for ev in events]
    if min(ts) < MIN_TS_MS or max(ts) > MAX_TS_MS or min(seqs) < 0 or max(seqs) > MAX_SEQ:
        return False
    try:
        _enc.encode(events)
    except (OverflowError, TypeError, ValueError, RecursionError):
        return False
    containers = _CONTAINERS
    for ev in events:  # a flat payload costs one pass over its values
        for value in ev.payload.values():
            if type(value) in containers and _too_deep(value, 2):
                return False
    return True


def check_events(events: Sequence[Event]) -> None:
    """Raise :class:`ValidationError` for the first event the log cannot store.

    The path names the event and the field: ``$[3].payload.a.b``.
    """
    if all_storable(events):
        return
    for i, ev in enumerate(events):
        problem = event_problem(ev)
        if problem is not None:
            raise ValidationError(f"$[{i}]{problem[0]}", problem[1])


def event_problem(ev: Event) -> tuple[str, str] | None:
    """The first part of an event the log cannot store, as ``(path suffix, reason)``; None if none.

    Example:
        >>> event_problem(Event(device="d", kind="k", ts=0, seq=0, payload={"a": {"b": 2**70}}))[0]
        '.payload.a.b'
    """
    if type(ev.ts) is int and not MIN_TS_MS <= ev.ts <= MAX_TS_MS:
        return ".ts", (f"{_show_int(ev.ts)} is outside the event times fluvial stores ({MIN_TS_MS} .. "
                       f"{MAX_TS_MS}, the years 1 to 9999): send epoch milliseconds")
    if type(ev.seq) is int and not 0 <= ev.seq <= MAX_SEQ:
        return ".seq", (f"{_show_int(ev.seq)} is outside the seqs the log stores (0 .. {MAX_SEQ}): "
                        "a device's counter must fit in a signed 64-bit integer")
    for name in ("device", "kind"):
        value = getattr(ev, name)
        if isinstance(value, str) and not _utf8(value):
            return f".{name}", "is not valid Unicode text (a lone surrogate): send UTF-8"
    problem = payload_problem(ev.payload)
    if problem is not None:
        return ".payload" + problem[0], problem[1]
    return None


def payload_problem(payload: Any) -> tuple[str, str] | None:
    """The first value of a payload the log cannot store: ``(".a.b", reason)``; None if none.

    Iterative (no recursion), so it copes with any depth.
    """
    stack: list[tuple[Any, tuple[Any, ...], int]] = [(payload, (), 1)]
    while stack:
        value, path, depth = stack.pop()
        kind = type(value)
        if kind in _CONTAINERS:
            if depth > MAX_DEPTH:
                return _path(path), (f"nested deeper than {MAX_DEPTH} levels of objects and arrays: "
                                     "flatten the payload")
            items = value.items() if kind is dict else enumerate(value)
            children = []
            for key, child in items:
                if kind is dict and type(key) is not str:
                    problem = _leaf_problem(key)
                    if problem is not None or type(key) in _CONTAINERS:
                        return _path((*path, key)), f"key {problem or 'must be a string or a number'}"
                children.append((child, (*path, key), depth + 1))
            stack.extend(reversed(children))
            continue
        problem = _leaf_problem(value)
        if problem is not None:
            return _path(path), problem
    return None


def _leaf_problem(value: Any) -> str | None:
    kind = type(value)
    if kind is int:
        if MIN_INT <= value <= MAX_INT:
            return None
        return (f"integer {_show_int(value)} cannot be stored: it does not fit in 64 bits (the log stores "
                f"integers from {MIN_INT} to {MAX_INT}); send it as a string")
    if kind is str:
        return None if _utf8(value) else "is not valid Unicode text (a lone surrogate): send UTF-8"
    if kind in _LEAVES:
        return None
    try:
        _enc.encode(value)
    except (OverflowError, TypeError, ValueError, RecursionError):
        return f"a value of type {kind.__name__} cannot be stored: use JSON types"
    return None


def _too_deep(container: Any, depth: int) -> bool:
    """Whether ``container``, at ``depth``, nests past MAX_DEPTH (visits containers only)."""
    stack = [(container, depth)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        items = value.items() if type(value) is dict else ((None, v) for v in value)
        for key, child in items:
            if type(child) in _CONTAINERS:
                stack.append((child, depth + 1))
            if type(key) is tuple:
                stack.append((key, depth + 1))
    return False


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _show_int(value: int) -> str:
    return str(value) if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"


def _path(parts: tuple[Any, ...]) -> str:
    shown = [f".{p}" if isinstance(p, str) and p.isidentifier() else f"[{p!r}]" for p in parts]
    if len(shown) > 12:
        shown = [*shown[:6], f"...({len(shown) - 10} more)...", *shown[-4:]]
    return "".join(shown)
