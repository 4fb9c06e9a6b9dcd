"""The message format: the event envelope, payload schemas, and codecs (pure)."""

from fluvial.events.codec import (
    decode_json,
    decode_json_items,
    decode_msgpack,
    decode_msgpack_items,
    encode_json,
    encode_msgpack,
    encode_ndjson,
)
from fluvial.events.envelope import Event
from fluvial.events.schema import FIELD_TYPES, Schema, SchemaRegistry

__all__ = [
    "FIELD_TYPES",
    "Event",
    "Schema",
    "SchemaRegistry",
    "decode_json",
    "decode_json_items",
    "decode_msgpack",
    "decode_msgpack_items",
    "encode_json",
    "encode_msgpack",
    "encode_ndjson",
]
