"""fluvial's own words for bad input: what is wrong, and at which byte (pure).

msgspec decodes and validates on every hot path, but its error texts change between
releases and are not fluvial's to show. When a decode or a validation fails, the
functions here look at the input again, on the slow path only, and say what is wrong
in fluvial's sentences with fluvial's positions: the byte offset in the whole body,
the line of an NDJSON body, the field path ``$.payload.value``.

Example:
    >>> json_problem(b'{"a": }')
    "invalid character '}' at byte 6"
    >>> json_problem(b'{"a": 1')
    'input ends early (truncated) at byte 7'
    >>> msgpack_problem(bytes([0x92, 0x01]))
    'input ends early (truncated) at byte 2'
    >>> payload_problem({"value": "hot"}, {"value": "float"})
    ('.value', 'expected float, got str')
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = [
    "MsgpackProblem",
    "envelope_problem",
    "json_first_value_end",
    "json_problem",
    "msgpack_item_end",
    "msgpack_problem",
    "payload_problem",
    "type_name",
]

# the structure only: numbers are not converted (no int digit limit, no float overflow)
_json = json.JSONDecoder(parse_int=lambda s: 0, parse_float=lambda s: 0.0)


# -- JSON -------------------------------------------------------------------------------


def json_problem(data: bytes | bytearray | memoryview, base: int = 0) -> str:
    """Say why ``data`` is not one JSON value, with the byte offset ``base + i``."""
    raw = bytes(data)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {base + exc.start}"
    try:
        end = json_first_value_end(text)
    except _JsonProblem as exc:
        return exc.describe(text, base)
    after = _lead(text, end)
    if after < len(text):
        return f"unexpected data after the value at byte {base + _byte(text, after)}"
    return _unreadable_value(text, base)


# a JSON string, or a token outside strings: NaN/Infinity, or a number
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|(?P<const>-?(?:NaN|Infinity))|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)')


def _unreadable_value(text: str, base: int) -> str:
    """Where Python's JSON reads what fluvial refuses: NaN, Infinity, numbers out of range."""
    for m in _TOKEN.finditer(text):
        if m["const"]:
            return f"invalid character {m['const'][0]!r} at byte {base + _byte(text, m.start())}"
        if m["num"] and math.isinf(float(m["num"])):
            return f"number out of range at byte {base + _byte(text, m.start())}"
    return f"a value fluvial cannot read in the item starting at byte {base}"


def json_first_value_end(text: str) -> int:
    """Index in ``text`` just past its first JSON value (leading blanks skipped).

    Raises:
        _JsonProblem: The first value is malformed.
    """
    start = _lead(text, 0)
    try:
        return _json.raw_decode(text, start)[1]
    except json.JSONDecodeError as exc:
        raise _JsonProblem(exc.pos) from None
    except RecursionError:
        raise _JsonProblem(start, nested=True) from None


class _JsonProblem(ValueError):
    def __init__(self, pos: int, *, nested: bool = False) -> None:
        super().__init__(pos)
        self.pos, self.nested = pos, nested

    def describe(self, text: str, base: int) -> str:
        at = base + _byte(text, self.pos)
        if self.nested:
            return f"nested too deeply (the value starting at byte {at})"
        if _ends_early(text[self.pos:].rstrip()):
            return f"input ends early (truncated) at byte {base + len(text.encode('utf-8'))}"
        return f"invalid character {text[self.pos]!r} at byte {at}"


def _ends_early(rest: str) -> bool:
    """Whether the text from an error on is the start of a value cut short."""
    if not rest:
        return True
    if rest[0] == '"':  # a string never closed
        return _TOKEN.match(rest) is None
    return any(word.startswith(rest) for word in ("true", "false", "null")) or rest in ("-",)


def _lead(text: str, i: int) -> int:
    return len(text) - len(text[i:].lstrip()) if i < len(text) else i


def _byte(text: str, i: int) -> int:
    """Byte offset of character ``i`` of ``text`` in its UTF-8 encoding."""
    return i if text.isascii() else len(text[:i].encode("utf-8"))


# -- MessagePack ------------------------------------------------------------------------


class MsgpackProblem(ValueError):
    """Raised by :func:`msgpack_item_end`: ``reason`` at byte ``at`` of the whole input."""

    def __init__(self, reason: str, at: int) -> None:
        super().__init__(f"{reason} at byte {at}")
        self.reason, self.at = reason, at


# first byte -> (size of the length field, extra bytes before the data, kind)
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
          0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}
_SIZED = {0xC4: (1, 0, "bin"), 0xC5: (2, 0, "bin"), 0xC6: (4, 0, "bin"),
          0xC7: (1, 1, "ext"), 0xC8: (2, 1, "ext"), 0xC9: (4, 1, "ext"),
          0xD9: (1, 0, "str"), 0xDA: (2, 0, "str"), 0xDB: (4, 0, "str")}
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def msgpack_item_end(data: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """Walk the MessagePack object starting at ``pos``; return the offset just past it.

    Checks the structure and that every string is UTF-8, without building objects.

    Raises:
        MsgpackProblem: Where and why the object is malformed.
    """
    buf = memoryview(data)
    n = len(buf)
    p, pending = pos, 1
    while pending:
        pending -= 1
        if p >= n:
            raise MsgpackProblem("input ends early (truncated)", n)
        b = buf[p]
        if b <= 0x7F or b >= 0xE0:
            p += 1
        elif b <= 0x8F:
            pending, p = pending + 2 * (b & 0x0F), p + 1
        elif b <= 0x9F:
            pending, p = pending + (b & 0x0F), p + 1
        elif b <= 0xBF:
            p = _string(buf, p + 1, b & 0x1F)
        elif b in _FIXED:
            p = _need(buf, p + 1 + _FIXED[b])
        elif b in _SIZED:
            width, extra, kind = _SIZED[b]
            size = int.from_bytes(_slice(buf, p + 1, width), "big")
            start = p + 1 + width + extra
            p = _string(buf, start, size) if kind == "str" else _need(buf, start + size)
        elif b in _CONTAINERS:
            width, per = _CONTAINERS[b]
            pending += per * int.from_bytes(_slice(buf, p + 1, width), "big")
            p += 1 + width
        else:  # 0xC1 is never used
            raise MsgpackProblem(f"invalid type byte 0x{b:02x}", p)
    return p


def msgpack_problem(data: bytes | bytearray | memoryview, base: int = 0) -> str:
    """Say why ``data`` (starting at byte ``base`` of the whole input) is not MessagePack."""
    try:
        end = msgpack_item_end(data, 0)
    except MsgpackProblem as exc:
        return f"{exc.reason} at byte {base + exc.at}"
    if end < len(data):
        return f"unexpected data after the object at byte {base + end}"
    return f"an object fluvial cannot read (an unsupported extension type?) starting at byte {base}"


def _need(buf: memoryview, end: int) -> int:
    if end > len(buf):
        raise MsgpackProblem("input ends early (truncated)", len(buf))
    return end


def _slice(buf: memoryview, start: int, width: int) -> memoryview:
    return buf[start:_need(buf, start + width)]


def _string(buf: memoryview, start: int, size: int) -> int:
    end = _need(buf, start + size)
    try:
        bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MsgpackProblem("invalid UTF-8 in a string", start + exc.start) from None
    return end


# -- envelope and payload ---------------------------------------------------------------

_ENVELOPE = ("device", "kind", "ts", "seq", "payload")
_NAMES = {str: "str", int: "int", float: "float", bool: "bool", list: "array", dict: "object"}


def type_name(value: Any) -> str:
    """The JSON-ish name of a value's type: ``str``, ``int``, ``array``, ``null``..."""
    if value is None:
        return "null"
    return _NAMES.get(type(value), type(value).__name__)


def envelope_problem(item: Any) -> tuple[str, str] | None:
    """The first problem of an event envelope, as ``(path suffix, reason)``; None if none."""
    if not isinstance(item, dict):
        return "", f"expected object, got {type_name(item)}"
    for name in item:
        if name not in _ENVELOPE:
            return f".{name}", "unknown envelope field; put extra data inside payload"
    for name in _ENVELOPE:
        if name not in item:
            return f".{name}", "missing required field"
    for name in ("device", "kind"):
        value = item[name]
        if not isinstance(value, str):
            return f".{name}", f"expected str, got {type_name(value)}"
        if not value:
            return f".{name}", "expected a non-empty str"
    for name in ("ts", "seq"):
        value = item[name]
        if type(value) is not int:
            return f".{name}", f"expected int, got {type_name(value)}"
    if item["seq"] < 0:
        return ".seq", "expected int >= 0"
    if not isinstance(item["payload"], dict):
        return ".payload", f"expected object, got {type_name(item['payload'])}"
    return None


_CHECKS: dict[str, tuple[str, Any]] = {
    "str": ("str", lambda v: isinstance(v, str)),
    "int": ("int", lambda v: type(v) is int),
    "float": ("float", lambda v: type(v) in (int, float)),
    "bool": ("bool", lambda v: type(v) is bool),
    "list": ("array", lambda v: isinstance(v, list)),
    "object": ("object", lambda v: isinstance(v, dict)),
    "any": ("any", lambda v: True),
}


def payload_problem(payload: Any, fields: dict[str, str]) -> tuple[str, str] | None:
    """The first field of ``payload`` that breaks a schema's ``fields``: ``(".name", reason)``."""
    if not isinstance(payload, dict):
        return "", f"expected object, got {type_name(payload)}"
    for name, spec in fields.items():
        optional = spec.endswith("?")
        label, ok = _CHECKS[spec.rstrip("?")]
        if name not in payload:
            if optional:
                continue
            return f".{name}", "missing required field"
        value = payload[name]
        if value is None and optional:
            continue
        if not ok(value):
            expected = f"{label} | null" if optional else label
            return f".{name}", f"expected {expected}, got {type_name(value)}"
    return None
