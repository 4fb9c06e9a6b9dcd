"""JSON and MessagePack codecs for events.

Decoders accept one event object, an array of events, or a stream: NDJSON
(one object per line) for JSON, concatenated objects for MessagePack.
``decode_*_items`` returns the raw decoded items (so that ingest can validate
each one and dead-letter the bad ones); ``decode_*`` returns :class:`Event`
objects, validated through a registry when one is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from fluvial.errors import DecodeError, ValidationError
from fluvial.events.diagnose import (
    MsgpackProblem,
    json_first_value_end,
    json_problem,
    msgpack_item_end,
    msgpack_problem,
)
from fluvial.events.envelope import Event
from fluvial.events.schema import to_event

if TYPE_CHECKING:
    from fluvial.events.schema import SchemaRegistry

__all__ = [
    "decode_json",
    "decode_json_items",
    "decode_msgpack",
    "decode_msgpack_items",
    "encode_json",
    "encode_msgpack",
    "encode_ndjson",
]

_json_enc = msgspec.json.Encoder()
_json_dec = msgspec.json.Decoder()
_mp_enc = msgspec.msgpack.Encoder()
_mp_dec = msgspec.msgpack.Decoder()


def encode_json(events: Iterable[Event]) -> bytes:
    """Encode events as one JSON array."""
    return _json_enc.encode(list(events))


def encode_ndjson(events: Iterable[Event]) -> bytes:
    """Encode events as NDJSON: one object per line, newline-terminated."""
    buf = bytearray()
    for ev in events:
        _json_enc.encode_into(ev, buf, -1)
        buf += b"\n"
    return bytes(buf)


def encode_msgpack(events: Iterable[Event]) -> bytes:
    """Encode events as one MessagePack array."""
    return _mp_enc.encode(list(events))


def _as_items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def decode_json_items(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode a JSON object, a JSON array or NDJSON into raw items.

    Raises:
        DecodeError: Saying where (line and byte for NDJSON, byte otherwise).
    """
    try:
        return _as_items(_json_dec.decode(data))
    except msgspec.DecodeError:
        pass  # not one JSON value: NDJSON, or malformed (fluvial words the error below)
    raw = bytes(data)
    try:
        text = raw.decode("utf-8")
        first_end = json_first_value_end(text)
    except UnicodeDecodeError:
        if _first_line_is_a_value(raw):
            return _ndjson_items(raw)
        raise DecodeError(f"invalid JSON: {json_problem(raw)}") from None
    except ValueError:
        raise DecodeError(f"invalid JSON: {json_problem(raw)}") from None
    first_end = len(text[:first_end].encode("utf-8"))
    if b"\n" in raw[first_end:] and b"\n" not in raw[:first_end].strip():
        return _ndjson_items(raw)  # the first value ends on its own line: one value per line
    raise DecodeError(f"invalid JSON: {json_problem(raw)}")


def _first_line_is_a_value(raw: bytes) -> bool:
    first, newline, _ = raw.lstrip().partition(b"\n")
    try:
        _json_dec.decode(first)
    except msgspec.DecodeError:
        return False
    return bool(newline)


def _ndjson_items(raw: bytes) -> list[Any]:
    items: list[Any] = []
    pos = 0
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if line.strip():
            try:
                items.append(_json_dec.decode(line))
            except msgspec.DecodeError:
                raise DecodeError(f"invalid NDJSON at line {lineno}: {json_problem(line, pos)}") from None
        pos += len(line) + 1
    return items


def decode_msgpack_items(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode one MessagePack object, an array, or concatenated objects into raw items.

    Raises:
        DecodeError: Saying at which byte the data is malformed.
    """
    try:
        return _as_items(_mp_dec.decode(data))
    except msgspec.DecodeError:
        pass  # concatenated objects, or malformed (fluvial words the error below)
    view = memoryview(data)
    items: list[Any] = []
    pos = 0
    while pos < len(view):
        try:
            end = msgpack_item_end(view, pos)
            items.append(_mp_dec.decode(view[pos:end]))
        except MsgpackProblem as exc:
            raise DecodeError(f"invalid MessagePack: {exc.reason} at byte {exc.at}") from None
        except msgspec.DecodeError:
            raise DecodeError(f"invalid MessagePack: {msgpack_problem(view[pos:end], pos)}") from None
        pos = end
    return items


def decode_json(
    data: bytes | bytearray | memoryview, registry: SchemaRegistry | None = None
) -> list[Event]:
    """Decode JSON into events (see :func:`decode_json_items` for accepted shapes).

    Raises:
        DecodeError: The bytes are not JSON.
        ValidationError: An item is not a valid event; the path starts ``$[i]``.
    """
    return _to_events(decode_json_items(data), registry)


def decode_msgpack(
    data: bytes | bytearray | memoryview, registry: SchemaRegistry | None = None
) -> list[Event]:
    """Decode MessagePack into events (see :func:`decode_msgpack_items`).

    Raises:
        DecodeError: The bytes are not MessagePack.
        ValidationError: An item is not a valid event; the path starts ``$[i]``.
    """
    return _to_events(decode_msgpack_items(data), registry)


def _to_events(items: list[Any], registry: SchemaRegistry | None) -> list[Event]:
    out = []
    for i, item in enumerate(items):
        try:
            if registry is not None:
                out.append(registry.validate(item))
            else:
                out.append(to_event(item))
        except ValidationError as exc:
            raise ValidationError(f"$[{i}]{exc.path[1:]}", exc.reason) from None
    return out
