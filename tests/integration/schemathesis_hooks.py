"""What schemathesis needs to speak fluvial's ingest API (loaded with ``hooks =`` in its config).

* Serializers for ``application/x-ndjson`` and ``application/msgpack``, the two media types of
  ``POST /v1/events`` that schemathesis does not write itself (it would send JSON only): the
  document describes both bodies as the array of Events that they carry.
* With ``FLUVIAL_FUZZ_DEVICE`` set (the device token's context), the ``device`` of every other
  generated body's events becomes the token's device, so that the token's writes are exercised
  and not only its ``403`` for other devices. Only a device that is already valid is replaced,
  by another valid one: whether a body breaks the schema is unchanged.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from typing import Any

import msgspec
import schemathesis

DEVICE = os.environ.get("FLUVIAL_FUZZ_DEVICE")
_VALID_DEVICE = re.compile(r"[^\x00-\x1f\x7f]{1,256}")  # the document's rule for a device id
NOT_MSGPACK = b"\xc1"
"""The one byte MessagePack never uses: sent for a value MessagePack cannot carry (an integer beyond
64 bits, a lone surrogate), which the server must refuse as unreadable (400)."""


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    """One JSON value per line: the items of an array, else the value itself."""
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode()


@schemathesis.serializer("application/msgpack")
def msgpack(ctx: Any, value: Any) -> bytes:
    try:
        return msgspec.msgpack.encode(value)
    except (OverflowError, UnicodeEncodeError, TypeError, msgspec.EncodeError):
        return NOT_MSGPACK


@schemathesis.hook
def map_body(ctx: Any, body: Any) -> Any:
    if DEVICE is None or ctx.operation is None or ctx.operation.path != "/v1/events":
        return body
    if zlib.crc32(repr(body).encode("utf-8", "backslashreplace")) % 2:  # the other half: another device's (403)
        return body
    return [_as_device(e) for e in body] if isinstance(body, list) else _as_device(body)


def _as_device(event: Any) -> Any:
    if isinstance(event, dict) and isinstance(event.get("device"), str) and _VALID_DEVICE.fullmatch(event["device"]):
        return {**event, "device": DEVICE}
    return event
