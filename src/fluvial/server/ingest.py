"""The ingest edge of ``fluvial serve``: request bodies -> validated events + dead letters.

``POST /v1/events`` takes many events per request, as a JSON array (or one
object), NDJSON, or MessagePack (an array or concatenated objects), optionally
gzip-compressed.  Every event is an envelope ``{device, kind, ts, seq,
payload}`` whose payload must match its kind's schema (a ``ts`` or ``seq``
written as a whole float, ``455.0``, is that integer: JSON, and the JSON
Schema of ``/openapi.json``, does not tell them apart).  Bad input gets a
precise reason and is kept, never silently dropped:

* a body that cannot be read at all (malformed JSON, invalid gzip, a content
  type we do not speak) is refused as a whole (400/415) and kept in the
  dead-letter log as received;
* invalid events of an otherwise readable body are refused one by one (index
  and reason in the response) and kept in the dead-letter log; the valid ones
  are appended. An event the log could not store is invalid too, refused
  before anything is recorded (:mod:`fluvial.log.limits`): ``ts`` or ``seq``
  beyond 64 bits, an integer beyond 64 bits anywhere in the payload, a payload
  nested deeper than 256 levels;
* an oversized body (413: over ``max_body_bytes``, inflating past it, or
  more than ``max_events_per_request`` events) is not kept: the device must
  send it again in smaller batches, and keeping it would let one request
  fill the disk.

The common case (every event valid) decodes straight into :class:`Event`
structs with msgspec and checks each payload against its schema; only a
body with a bad event takes the slower per-item path that finds which.
"""

from __future__ import annotations

import functools
import re
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from fluvial.errors import DecodeError, FluvialError, SchemaError, ValidationError
from fluvial.events.codec import decode_json_items, decode_msgpack_items
from fluvial.events.envelope import Event
from fluvial.events.schema import SchemaRegistry
from fluvial.log.deadletter import DeadLetter
from fluvial.log.limits import all_storable, event_problem

__all__ = ["JSON_TYPES", "MSGPACK_TYPES", "AllRejected", "IngestError", "ParsedBody", "decompress", "parse_body",
           "raw_bytes"]

JSON_TYPES = frozenset({"application/json", "application/x-ndjson", "application/ndjson",
                        "application/jsonl", "application/x-jsonlines", "text/plain"})
MSGPACK_TYPES = frozenset({"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"})
MAX_REASON_CHARS = 500
MAX_DEVICE_CHARS = 256
"""The longest device id ingest accepts (the limit of ``fluvial token create --device``)."""
_DEVICE_OK = re.compile(r"[^\x00-\x1f\x7f]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_json_events = msgspec.json.Decoder(list[Event])
_msgpack_events = msgspec.msgpack.Decoder(list[Event])
_json_enc = msgspec.json.Encoder()


class IngestError(FluvialError):
    """A request refused as a whole.

    Attributes:
        status: The HTTP status (400, 403, 413, 415, 422...).
        reason: What was wrong, and how to fix it.
        raw: The bytes to keep in the dead-letter log (``None``: nothing to keep).
    """

    def __init__(self, status: int, reason: str, raw: bytes | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.raw = raw


@dataclass
class ParsedBody:
    """A readable body: the valid events (with their index in the body) and the rejected ones."""

    events: list[Event] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    total: int = 0


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def decompress(body: bytes | bytearray, content_encoding: str | None, max_bytes: int) -> bytes | bytearray:
    """Undo ``Content-Encoding: gzip`` (or ``identity``), refusing bodies that inflate past ``max_bytes``.

    Raises:
        IngestError: 415 for another encoding, 400 for invalid gzip, 413 past the limit.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise IngestError(415, f"Content-Encoding {content_encoding!r} is not supported: send gzip or "
                               "no Content-Encoding", raw=bytes(body))
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error:
        raise IngestError(400, _gzip_problem(body), raw=bytes(body)) from None
    if len(out) > max_bytes:
        raise IngestError(413, f"the body inflates to more than {max_bytes} bytes (the server's "
                               "max_body_bytes): send fewer events per request")
    if not inflater.eof:
        raise IngestError(400, "invalid gzip body: the compressed stream ends early (truncated)", raw=bytes(body))
    if inflater.unused_data:
        raise IngestError(400, "invalid gzip body: bytes after the end of the gzip stream", raw=bytes(body))
    return out


def _gzip_problem(body: bytes | bytearray) -> str:
    """fluvial's words for a body zlib cannot inflate."""
    if bytes(body[:2]) != b"\x1f\x8b":
        return ("invalid gzip body: it does not start as gzip data does (bytes 1f 8b); "
                "send the gzip file format, or no Content-Encoding")
    return "invalid gzip body: the compressed data is damaged (a block or a checksum does not match)"


def parse_body(body: bytes | bytearray, content_type: str | None, registry: SchemaRegistry, *,
               max_events: int, source: str = "http") -> ParsedBody:
    """Decode and validate the events of a (decompressed) body.

    Raises:
        IngestError: 415 for an unknown content type, 400 when the body is not
            readable, 413 for too many events, 422 when no event is valid.
    """
    mtype = media_type(content_type)
    fast: Any
    if mtype in JSON_TYPES or mtype == "":
        fast, slow, what = _json_events, decode_json_items, "JSON"
    elif mtype in MSGPACK_TYPES:
        fast, slow, what = _msgpack_events, decode_msgpack_items, "MessagePack"
    else:
        raise IngestError(415, f"Content-Type {content_type!r} is not supported: send application/json "
                               "(an array of events), application/x-ndjson or application/msgpack", raw=bytes(body))
    if not body or body.isspace():  # (no copy of a large body, unlike strip())
        raise IngestError(400, "empty body: send one or more events")
    parsed = ParsedBody()
    try:
        events = fast.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        events = None  # not a plain array of well-formed envelopes: find out which items fail
    if events is not None:
        parsed.total = len(events)
        _check_count(parsed.total, max_events)
        if _all_valid(events, registry) and all_storable(events):
            parsed.events, parsed.indices = events, list(range(len(events)))
            return parsed
        for i, ev in enumerate(events):
            _accept(parsed, registry, i, ev, ev, source)
        return _done(parsed)
    try:
        items = slow(body)
    except DecodeError as exc:
        raise IngestError(400, f"the body is not valid {what}: {exc}", raw=bytes(body)) from None
    except RecursionError:
        raise IngestError(400, f"the body is {what} nested too deeply to read: events are flat "
                               "envelopes with a payload object", raw=bytes(body)) from None
    parsed.total = len(items)
    _check_count(parsed.total, max_events)
    for i, item in enumerate(items):
        try:
            ev = registry.validate(_whole_numbers(item))
        except ValidationError as exc:
            _reject(parsed, i, f"{exc.path}: {exc.reason}", item, source)
            continue
        _accept(parsed, registry, i, ev, item, source)
    return _done(parsed)


def _whole_numbers(item: Any) -> Any:
    """``item`` with a ``ts`` or ``seq`` written as a whole float (``455.0``) as that integer.

    JSON does not tell ``455.0`` from ``455`` (JSON Schema calls both integers; some encoders write
    whole numbers that way); a fraction is still refused. The payload is kept exactly as sent.
    """
    if type(item) is dict:
        for name in ("ts", "seq"):
            value = item.get(name)
            if type(value) is float and value.is_integer():
                item = {**item, name: int(value)}
    return item


def devices_of(body_events: ParsedBody) -> Iterable[tuple[int, str | None]]:
    """``(index, device)`` of every event of a body, valid or not (for device tokens)."""
    for i, ev in zip(body_events.indices, body_events.events):
        yield i, ev.device
    for letter_index, letter in zip((i for i, _ in body_events.rejected), body_events.letters):
        device = None
        try:
            item = msgspec.json.decode(letter.raw)
            if isinstance(item, dict) and isinstance(item.get("device"), str):
                device = item["device"]
        except msgspec.DecodeError:
            pass
        yield letter_index, device


def _check_count(n: int, max_events: int) -> None:
    if n > max_events:
        raise IngestError(413, f"{n} events in one request; the server takes at most {max_events} "
                               "(max_events_per_request): split the batch")


def _all_valid(events: list[Event], registry: SchemaRegistry) -> bool:
    """Whether every event is valid, checked a whole body at a time (the common case):
    the device ids at once, and the payloads of each kind in one msgspec call."""
    devices = [ev.device for ev in events]
    if max(map(len, devices), default=0) > MAX_DEVICE_CHARS or _CONTROL.search("".join(devices)):
        return False
    payloads: dict[str, list[Any]] = {}
    for ev in events:
        group = payloads.get(ev.kind)
        if group is None:
            payloads[ev.kind] = [ev.payload]
        else:
            group.append(ev.payload)
    for kind, group in payloads.items():
        try:
            msgspec.convert(group, _list_of(registry.get(kind)._type))
        except (SchemaError, msgspec.ValidationError):
            return False
    return True


@functools.lru_cache(maxsize=256)
def _list_of(payload_type: Any) -> Any:
    return list[payload_type]  # type: ignore[valid-type]


def _accept(parsed: ParsedBody, registry: SchemaRegistry, i: int, ev: Event, item: Any, source: str) -> None:
    if len(ev.device) > MAX_DEVICE_CHARS or not _DEVICE_OK.fullmatch(ev.device):
        shown = ev.device if len(ev.device) <= 60 else ev.device[:60] + "..."
        _reject(parsed, i, f"$.device: {shown!r} is not a device id (1 to {MAX_DEVICE_CHARS} characters, "
                           "no control characters)", item, source)
        return
    try:
        registry.get(ev.kind).validate_payload(ev.payload)
    except SchemaError:
        _reject(parsed, i, f"$.kind: unknown kind {ev.kind!r}; registered kinds: "
                           f"{', '.join(registry.kinds())} (register it: `fluvial schema add`)", item, source)
        return
    except ValidationError as exc:
        _reject(parsed, i, f"{exc.path}: {exc.reason}", item, source)
        return
    problem = event_problem(ev)  # what the log could not store: refused here, before anything is recorded
    if problem is not None:
        _reject(parsed, i, f"${problem[0]}: {problem[1]}", item, source)
        return
    parsed.events.append(ev)
    parsed.indices.append(i)


def _reject(parsed: ParsedBody, i: int, reason: str, item: Any, source: str) -> None:
    reason = reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS] + "..."
    parsed.rejected.append((i, reason))
    parsed.letters.append(DeadLetter(reason=f"event {i}: {reason}", source=source, line=i, raw=raw_bytes(item),
                                     at_ms=time.time_ns() // 1_000_000))


def raw_bytes(item: Any) -> bytes:
    """A refused item as bytes for the dead-letter log: JSON, else MessagePack, else its ``repr``.

    Never raises: whatever a body decoded to (integers beyond 64 bits, bytes keys, deep
    nesting, lone surrogates), the dead-letter log can keep it.
    """
    for encode in (_json_enc.encode, msgspec.msgpack.encode):
        try:
            return encode(item)
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError):
            continue  # MessagePack items JSON cannot hold (bytes keys...), integers MessagePack cannot
    try:
        return repr(item).encode("utf-8", "backslashreplace")
    except (RecursionError, ValueError):
        return f"<a {type(item).__name__} that cannot be encoded>".encode()


def _done(parsed: ParsedBody) -> ParsedBody:
    if parsed.total and not parsed.events:
        first = parsed.rejected[0]
        more = f" (and {len(parsed.rejected) - 1} more)" if len(parsed.rejected) > 1 else ""
        raise AllRejected(parsed, f"no valid event in the body; event {first[0]}: {first[1]}{more}")
    return parsed


class AllRejected(IngestError):
    """Every event of a readable body is invalid (422); they go to the dead-letter log one by one."""

    def __init__(self, parsed: ParsedBody, reason: str) -> None:
        super().__init__(422, reason)
        self.parsed = parsed
