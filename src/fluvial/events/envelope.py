"""The envelope every fluvial event travels in: ``{device, kind, ts, seq, payload}``."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

__all__ = ["Event"]


class Event(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """One immutable event.

    Attributes:
        device: Id of the device that produced the event.
        kind: Name of the registered schema the payload follows.
        ts: Event time, set by the device, in epoch milliseconds.
        seq: The device's own counter; ``(device, seq)`` identifies a retry.
        payload: The body, kept exactly as sent (unknown fields are preserved).

    Example:
        >>> Event(device="d1", kind="line", ts=0, seq=1, payload={"text": "hi"}).device
        'd1'

    Instances are not tracked by the garbage collector (``gc=False``): this
    makes decoding millions of them from the log much faster. Do not build a
    reference cycle through a payload.
    """

    device: Annotated[str, msgspec.Meta(min_length=1)]
    kind: Annotated[str, msgspec.Meta(min_length=1)]
    ts: int
    seq: Annotated[int, msgspec.Meta(ge=0)]
    payload: dict[str, Any]
