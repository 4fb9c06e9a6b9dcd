"""Envelope and codecs: round trips and precise decode errors."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluvial.errors import DecodeError, ValidationError
from fluvial.events import (
    Event,
    SchemaRegistry,
    decode_json,
    decode_json_items,
    decode_msgpack,
    decode_msgpack_items,
    encode_json,
    encode_msgpack,
    encode_ndjson,
)

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
events = st.builds(
    Event,
    device=st.text(min_size=1),
    kind=st.text(min_size=1),
    ts=st.integers(-(2**63), 2**63 - 1),
    seq=st.integers(0, 2**63 - 1),
    payload=st.dictionaries(st.text(), json_values, max_size=4),
)


@given(st.lists(events, max_size=5))
def test_json_round_trip(evs: list[Event]) -> None:
    assert decode_json(encode_json(evs)) == evs


@given(st.lists(events, min_size=1, max_size=5))
def test_ndjson_round_trip(evs: list[Event]) -> None:
    data = encode_ndjson(evs)
    assert data.count(b"\n") == len(evs)
    assert decode_json(data) == evs


@given(st.lists(events, max_size=5))
def test_msgpack_round_trip(evs: list[Event]) -> None:
    assert decode_msgpack(encode_msgpack(evs)) == evs


def test_single_object_and_concatenated_msgpack() -> None:
    ev = Event(device="d", kind="line", ts=1, seq=2, payload={"text": "a", "extra": [1, 2]})
    assert decode_json(msgspec.json.encode(ev)) == [ev]
    stream = msgspec.msgpack.encode(ev) * 3
    assert decode_msgpack(stream) == [ev, ev, ev]


def test_unknown_payload_fields_preserved() -> None:
    raw = b'{"device":"d","kind":"reading","ts":1,"seq":0,' \
          b'"payload":{"kind":"t","value":2,"note":{"x":null}}}'
    (ev,) = decode_json(raw, SchemaRegistry.with_builtins())
    assert ev.payload == {"kind": "t", "value": 2, "note": {"x": None}}
    assert type(ev.payload["value"]) is int  # kept as given, not coerced to float


def test_malformed_json_reports_byte() -> None:
    with pytest.raises(DecodeError, match=r"^invalid JSON: invalid character '}' at byte 5$"):
        decode_json_items(b'{"a":}')


def test_truncated_json() -> None:
    with pytest.raises(DecodeError, match=r"^invalid JSON: input ends early \(truncated\) at byte 5$"):
        decode_json_items(b'{"a":')


def test_malformed_ndjson_reports_line_and_byte() -> None:
    data = b'{"a":1}\n{"a":2}\n{"a":}\n'
    with pytest.raises(DecodeError, match=r"^invalid NDJSON at line 3: invalid character '}' at byte 21$"):
        decode_json_items(data)
    assert data[21:22] == b"}"


def test_non_utf8_json() -> None:
    data = b'{"a":1}\n{"a":"\xfe"}\n'
    with pytest.raises(DecodeError, match=r"^invalid NDJSON at line 2: invalid UTF-8 at byte 14$"):
        decode_json_items(data)
    assert data[14] == 0xFE
    with pytest.raises(DecodeError, match=r"^invalid JSON: invalid UTF-8 at byte 6$"):
        decode_json_items(b'{"a":"\xff"}')


def test_malformed_msgpack_reports_byte() -> None:
    good = msgspec.msgpack.encode({"a": 1})
    with pytest.raises(DecodeError, match=rf"^invalid MessagePack: invalid type byte 0xc1 at byte {len(good)}$"):
        decode_msgpack_items(good + b"\xc1")
    end = 2 * len(good) - 1
    with pytest.raises(DecodeError, match=rf"^invalid MessagePack: input ends early \(truncated\) at byte {end}$"):
        decode_msgpack_items(good + good[:-1])
    with pytest.raises(DecodeError, match=rf"^invalid MessagePack: invalid UTF-8 in a string at byte {len(good) + 4}$"):
        decode_msgpack_items(good + b"\x81\xa1a\xa1\xff")


def test_envelope_errors_carry_item_index() -> None:
    with pytest.raises(ValidationError) as info:
        decode_json(b'[{"device":"d","kind":"k","ts":1,"seq":0,"payload":{}},'
                    b'{"device":"d","kind":"k","ts":"x","seq":0,"payload":{}}]')
    assert (info.value.path, info.value.reason) == ("$[1].ts", "expected int, got str")


def test_event_is_immutable() -> None:
    ev = Event(device="d", kind="k", ts=1, seq=0, payload={})
    with pytest.raises(AttributeError):
        ev.ts = 2  # type: ignore[misc]
