"""The messages of a partition stream: one batch of events each, described by its headers.

A message's body is the MessagePack list of its events (as a LocalLog batch);
its headers say where the events sit among the partition's records, so that
offsets count events, not messages::

    Fluvial-Batch:      1                       the format
    Fluvial-Offset:     1200                    offset of the first event
    Fluvial-Count:      300                     events in the message
    Fluvial-Ts:         lo hi run_max run_min   event-time range; running max/min over the partition
    Fluvial-Append-Ms:  1764560000000           when the writer appended it
    Nats-Msg-Id:        <blake2b of the body>   JetStream drops a re-publish in its window

Offsets are consecutive across messages (the next message starts at
``offset + count``), so the message holding offset ``o`` is found by binary search
over stream sequences, reading headers only; the running max event time grows
with the sequence too, which makes ``offset_for_time`` a binary search as well.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec

from fluvial.errors import CorruptLogError
from fluvial.events.envelope import Event

__all__ = ["Frame", "batch_headers", "decode_events", "msg_id", "parse_frame"]

FORMAT = "1"
_dec = msgspec.msgpack.Decoder(list[Event])


@dataclass(frozen=True)
class Frame:
    """What the headers of the message at ``seq`` say (see the module docstring)."""

    seq: int
    first: int
    count: int
    lo: int
    hi: int
    run_max: int
    run_min: int
    append_ms: int

    @property
    def end(self) -> int:
        """The offset after the message's last event."""
        return self.first + self.count


def msg_id(partition: int, body: bytes) -> str:
    """The ``Nats-Msg-Id`` of a batch: its content, so a retried batch has the same id."""
    return f"p{partition}-{hashlib.blake2b(body, digest_size=16).hexdigest()}"


def batch_headers(partition: int, body: bytes, *, first: int, count: int, lo: int, hi: int,
                  run_max: int, run_min: int, append_ms: int, last_seq: int) -> dict[str, str]:
    """The headers of a batch published after stream sequence ``last_seq`` (the writer's view
    of the tail: JetStream refuses the publish if another writer appended since)."""
    return {
        "Fluvial-Batch": FORMAT,
        "Fluvial-Offset": str(first),
        "Fluvial-Count": str(count),
        "Fluvial-Ts": f"{lo} {hi} {run_max} {run_min}",
        "Fluvial-Append-Ms": str(append_ms),
        "Nats-Msg-Id": msg_id(partition, body),
        "Nats-Expected-Last-Sequence": str(last_seq),
    }


def parse_frame(stream: str, seq: int, headers: dict[str, str] | None) -> Frame:
    """The frame of the message at ``seq`` of ``stream``.

    Raises:
        CorruptLogError: The message is not a fluvial batch (names the stream and sequence).
    """
    h = headers or {}
    try:
        if h.get("Fluvial-Batch") != FORMAT:
            raise ValueError(f"header Fluvial-Batch is {h.get('Fluvial-Batch')!r}, not {FORMAT!r}")
        lo, hi, run_max, run_min = (int(v) for v in h["Fluvial-Ts"].split())
        frame = Frame(seq, int(h["Fluvial-Offset"]), int(h["Fluvial-Count"]), lo, hi, run_max, run_min,
                      int(h["Fluvial-Append-Ms"]))
    except (KeyError, ValueError) as exc:
        raise _not_a_batch(stream, seq, exc) from None
    if frame.first < 0 or frame.count < 1:
        raise _not_a_batch(stream, seq, ValueError(f"offset {frame.first}, count {frame.count}"))
    return frame


def decode_events(stream: str, frame: Frame, body: bytes) -> list[Event]:
    """The events of a message.

    Raises:
        CorruptLogError: The body is not a MessagePack list of ``frame.count`` events.
    """
    try:
        events = _dec.decode(body)
    except msgspec.DecodeError as exc:
        raise _not_a_batch(stream, frame.seq, exc) from None
    if len(events) != frame.count:
        raise _not_a_batch(stream, frame.seq, ValueError(f"{len(events)} events, headers say {frame.count}"))
    return events


def _not_a_batch(stream: str, seq: int, why: Any) -> CorruptLogError:
    return CorruptLogError(f"NATS stream {stream!r}, sequence {seq}: not a fluvial batch ({why}); "
                           "only fluvial appends may publish to a log's subjects")
