"""An append's events as the batches LocalLog writes, checked before anything is written.

:func:`check_envelope` checks the envelope types of an event that msgspec did not
decode; :func:`encode_batches` makes each partition's batch (its event-time range
and one MessagePack payload); :func:`raise_unstorable` names the first event of a
batch the log cannot store (``$[3].payload.a.b``), as :mod:`fluvial.log.limits`
words it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

import msgspec

from fluvial.errors import ValidationError
from fluvial.events.envelope import Event
from fluvial.log.limits import MAX_TS_MS, MIN_TS_MS, event_problem

__all__ = ["check_envelope", "encode_batches", "raise_unstorable"]

_enc = msgspec.msgpack.Encoder()


def check_envelope(i: int, ev: Event) -> None:
    """Raise ValidationError (path ``$[i].field``) if ``ev``, the ``i``-th event, has a wrong envelope type."""
    if not isinstance(ev, Event):
        raise ValidationError(f"$[{i}]", f"expected Event, got {type(ev).__name__}")
    if type(ev.device) is not str or not ev.device:
        raise ValidationError(f"$[{i}].device", "expected a non-empty str")
    if type(ev.kind) is not str or not ev.kind:
        raise ValidationError(f"$[{i}].kind", "expected a non-empty str")
    if type(ev.ts) is not int:
        raise ValidationError(f"$[{i}].ts", f"expected int, got {type(ev.ts).__name__}")
    if type(ev.seq) is not int or ev.seq < 0:
        raise ValidationError(f"$[{i}].seq", "expected int >= 0")
    if type(ev.payload) is not dict:
        raise ValidationError(f"$[{i}].payload", "expected object")


def encode_batches(
    events: Sequence[Event], groups: dict[int, tuple[list[Event], list[int]]]
) -> dict[int, tuple[int, int, bytes]]:
    """Each partition's batch as ``(min ts, max ts, payload)``, before anything is written.

    Args:
        events: The append's events.
        groups: The events to store, with their indexes in ``events``, by partition.

    Raises:
        ValidationError: An event has a time or a value the log cannot store.
    """
    out = {}
    for p, (evs, idx) in groups.items():
        ts = [e.ts for e in evs]
        lo, hi = min(ts), max(ts)
        if lo < MIN_TS_MS or hi > MAX_TS_MS:
            raise_unstorable(events, idx)
        try:
            payload = _enc.encode(evs)
        except (OverflowError, TypeError, ValueError, RecursionError):
            raise_unstorable(events, idx)
        out[p] = (lo, hi, payload)
    return out


def raise_unstorable(events: Sequence[Event], indexes: Sequence[int]) -> NoReturn:
    """Raise ValidationError naming the first of ``events[indexes]`` the log cannot store."""
    for i in indexes:
        problem = event_problem(events[i])
        if problem is None:
            try:
                _enc.encode(events[i])
                continue
            except (OverflowError, TypeError, ValueError, RecursionError) as exc:
                problem = ("", f"cannot be stored: {exc}")
        raise ValidationError(f"$[{i}]{problem[0]}", problem[1])
    raise ValidationError(f"$[{indexes[0]}]", "cannot be stored (the batch failed to encode)")
