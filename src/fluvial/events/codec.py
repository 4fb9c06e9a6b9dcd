"""JSON and MessagePack codecs for events.

Decoders accept one event object, an array of events, or a stream: NDJSON
(one object per line) for JSON, concatenated objects for MessagePack.
``decode_*_items`` returns the raw decoded items (so that ingest can validate
each one and dead-letter the bad ones); ``decode_*`` returns :class:`Event`
objects, validated through a registry when one is given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from fluvial.errors import DecodeError, ValidationError
from fluvial.events.envelope import Event
from fluvial.events.schema import translate_error

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
_BYTE_RE = re.compile(r"\(byte (\d+)\)")


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


def _utf8_error(data: bytes | bytearray | memoryview, base: int, what: str) -> DecodeError:
    try:
        bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        return DecodeError(f"{what}: invalid UTF-8 at byte {base + exc.start}")
    return DecodeError(f"{what}: invalid UTF-8 in a string")


def _as_items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def decode_json_items(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode a JSON object, a JSON array or NDJSON into raw items.

    Raises:
        DecodeError: Saying where (line and byte for NDJSON, byte otherwise).
    """
    try:
        return _as_items(_json_dec.decode(data))
    except UnicodeDecodeError:
        raise _utf8_error(data, 0, "invalid JSON") from None
    except msgspec.DecodeError as exc:
        if "trailing characters" not in str(exc):
            raise DecodeError(f"invalid JSON: {_where(exc, 0, len(data))}") from None
    items: list[Any] = []
    pos = 0
    for lineno, line in enumerate(bytes(data).split(b"\n"), start=1):
        if line.strip():
            try:
                items.append(_json_dec.decode(line))
            except UnicodeDecodeError:
                raise _utf8_error(line, pos, f"invalid NDJSON at line {lineno}") from None
            except msgspec.DecodeError as exc:
                msg = _where(exc, pos, pos + len(line))
                raise DecodeError(f"invalid NDJSON at line {lineno}: {msg}") from None
        pos += len(line) + 1
    return items


def decode_msgpack_items(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode one MessagePack object, an array, or concatenated objects into raw items.

    Raises:
        DecodeError: Saying at which byte the data is malformed.
    """
    view = memoryview(data)
    items: list[Any] = []
    pos = 0
    while True:
        try:
            value = _mp_dec.decode(view[pos:])
        except UnicodeDecodeError:
            raise DecodeError(
                f"invalid MessagePack: invalid UTF-8 in a string of the object at byte {pos}"
            ) from None
        except msgspec.DecodeError as exc:
            m = _BYTE_RE.search(str(exc))
            if "trailing characters" in str(exc) and m:
                end = pos + int(m.group(1))
                items.append(_mp_dec.decode(view[pos:end]))
                pos = end
                continue
            raise DecodeError(f"invalid MessagePack: {_where(exc, pos, len(view))}") from None
        if pos == 0:
            return _as_items(value)
        items.append(value)
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
                try:
                    out.append(msgspec.convert(item, Event))
                except msgspec.ValidationError as exc:
                    raise translate_error(exc, "$") from None
        except ValidationError as exc:
            raise ValidationError(f"$[{i}]{exc.path[1:]}", exc.reason) from None
    return out


def _where(exc: Exception, base: int, end: int) -> str:
    """Rewrite a msgspec decode message as ``<what> at byte N`` of the whole input."""
    msg = str(exc)
    for prefix in ("JSON is malformed: ", "MessagePack data is malformed: "):
        msg = msg.removeprefix(prefix)
    m = _BYTE_RE.search(msg)
    if m:
        return f"{_BYTE_RE.sub('', msg).strip()} at byte {base + int(m.group(1))}"
    if "truncated" in msg:
        return f"input ends early (truncated) at byte {end}"
    return f"{msg} (in the item starting at byte {base})"
