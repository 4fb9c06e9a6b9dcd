"""fluvial's error texts are fluvial's own: a dependency's wording never reaches users.

Three checks:

1. Known bad inputs get exactly fluvial's sentences, with positions planted at a random
   place (seed printed) and computed independently of the code under test.
2. The same texts come out when msgspec's own messages are replaced with nonsense: the
   wording cannot depend on msgspec's release.
3. Random corruption of valid bodies either decodes or gives a DecodeError in fluvial's
   grammar whose byte offset is inside the body.
"""

from __future__ import annotations

import os
import random
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluvial.errors import DecodeError, ValidationError
from fluvial.events import codec
from fluvial.events import schema as schema_module
from fluvial.events.codec import decode_json, decode_json_items, decode_msgpack_items
from fluvial.events.schema import Schema, SchemaRegistry

SEED = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))


def _rng() -> random.Random:
    print(f"seed {SEED} (FLUVIAL_TEST_SEED={SEED} reproduces it)")
    return random.Random(SEED)


def _events(rng: random.Random, n: int) -> list[dict[str, Any]]:
    return [{"device": f"d{rng.randrange(9)}", "kind": "reading", "ts": rng.randrange(2**40), "seq": i,
             "payload": {"kind": "temp", "value": rng.random(), "note": "é" * rng.randrange(3)}}
            for i in range(n)]


def _cases(rng: random.Random) -> list[tuple[str, bytes, str]]:
    """(decoder, body, the exact message), each position planted at a random place."""
    events = _events(rng, 1 + rng.randrange(5))
    body = msgspec.json.encode(events)
    cut = rng.choice([i for i, c in enumerate(body) if c == ord(":")])  # outside every string
    lines = [msgspec.json.encode(e) for e in events] + [msgspec.json.encode(_events(rng, 1)[0])]
    bad_line = rng.randrange(1, len(lines))  # not the first: the first line tells NDJSON apart
    broken = lines[bad_line].replace(b'"kind":"reading"', b'"kind":reading', 1)
    ndjson = b"\n".join([*lines[:bad_line], broken, *lines[bad_line + 1:]])
    at = sum(len(x) + 1 for x in lines[:bad_line]) + broken.index(b"reading")
    utf8 = b"\n".join([*lines[:bad_line], broken.replace(b"reading", b"r\xffading"), *lines[bad_line + 1:]])
    mp = msgspec.msgpack.encode(events)
    mp_cut = rng.randrange(1, len(mp))
    return [
        ("json", body[:cut] + b"#" + body[cut + 1:], f"invalid JSON: invalid character '#' at byte {cut}"),
        ("json", body[:cut], f"invalid JSON: input ends early (truncated) at byte {cut}"),
        ("json", ndjson, f"invalid NDJSON at line {bad_line + 1}: invalid character 'r' at byte {at}"),
        ("json", utf8, f"invalid NDJSON at line {bad_line + 1}: invalid UTF-8 at byte {at + 1}"),
        ("json", b'{"a": "\xc3(" }', "invalid JSON: invalid UTF-8 at byte 7"),
        ("json", b'{"a": 1} {"b": 2}', "invalid JSON: unexpected data after the value at byte 9"),
        ("json", b"[NaN]", "invalid JSON: invalid character 'N' at byte 1"),
        ("json", b'[1, ' + b"9" * 5000 + b"]", "invalid JSON: number out of range at byte 4"),
        ("json", b'{"v": 1e999}', "invalid JSON: number out of range at byte 6"),
        ("msgpack", mp[:mp_cut], f"invalid MessagePack: input ends early (truncated) at byte {mp_cut}"),
        ("msgpack", mp + b"\xc1", f"invalid MessagePack: invalid type byte 0xc1 at byte {len(mp)}"),
        ("msgpack", mp + b"\x91\xa2o\xff", f"invalid MessagePack: invalid UTF-8 in a string at byte {len(mp) + 3}"),
    ]


def _decode(kind: str, body: bytes) -> list[Any]:
    return decode_json_items(body) if kind == "json" else decode_msgpack_items(body)


def _messages(cases: list[tuple[str, bytes, str]]) -> list[str]:
    out = []
    for kind, body, _ in cases:
        with pytest.raises(DecodeError) as info:
            _decode(kind, body)
        out.append(str(info.value))
    return out


def test_decode_errors_say_what_and_where_in_fluvials_words() -> None:
    cases = _cases(_rng())
    assert _messages(cases) == [expected for *_, expected in cases]


class _Nonsense:
    """A decoder that decodes like msgspec's but words every failure differently."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def decode(self, data: Any) -> Any:
        try:
            return self.inner.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise msgspec.DecodeError(f"zz {type(exc).__name__} (byte 99999) at `$.nowhere`") from None


def test_decode_errors_do_not_depend_on_msgspec_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = _cases(_rng())
    expected = [e for *_, e in cases]
    monkeypatch.setattr(codec, "_json_dec", _Nonsense(codec._json_dec))
    monkeypatch.setattr(codec, "_mp_dec", _Nonsense(codec._mp_dec))
    assert _messages(cases) == expected


REG = SchemaRegistry.with_builtins()
REG.register(Schema(kind="probe", version=1, fields={"i": "int", "u": "str?", "b": "bool", "o": "object?"}))
GOOD = {"device": "d", "kind": "probe", "ts": 1, "seq": 0, "payload": {"i": 1, "b": True}}

VALIDATION = [
    ({**GOOD, "ts": "x"}, "$[0].ts: expected int, got str"),
    ({**GOOD, "seq": -1}, "$[0].seq: expected int >= 0"),
    ({**GOOD, "device": ""}, "$[0].device: expected a non-empty str"),
    ({**GOOD, "extra": 1}, "$[0].extra: unknown envelope field; put extra data inside payload"),
    ({k: v for k, v in GOOD.items() if k != "kind"}, "$[0].kind: missing required field"),
    ({**GOOD, "payload": []}, "$[0].payload: expected object, got array"),
    ({**GOOD, "payload": {"b": True}}, "$[0].payload.i: missing required field"),
    ({**GOOD, "payload": {"i": 1.5, "b": True}}, "$[0].payload.i: expected int, got float"),
    ({**GOOD, "payload": {"i": 1, "b": 1}}, "$[0].payload.b: expected bool, got int"),
    ({**GOOD, "payload": {"i": 1, "b": True, "u": 3}}, "$[0].payload.u: expected str | null, got int"),
    ({**GOOD, "payload": {"i": 1, "b": True, "o": "x"}}, "$[0].payload.o: expected object | null, got str"),
    ({**GOOD, "kind": "nope"}, "$[0].kind: unknown kind 'nope'; registered kinds: line, probe, reading, tweet"),
]


@pytest.mark.parametrize("nonsense", [False, True], ids=["msgspec", "msgspec-reworded"])
def test_validation_errors_are_fluvials(monkeypatch: pytest.MonkeyPatch, nonsense: bool) -> None:
    if nonsense:
        real = msgspec.convert

        def convert(obj: Any, typ: Any, **kw: Any) -> Any:
            try:
                return real(obj, typ, **kw)
            except msgspec.ValidationError:
                raise msgspec.ValidationError("Zz - at `$.somewhere.else`") from None

        monkeypatch.setattr(schema_module.msgspec, "convert", convert)
    for item, expected in VALIDATION:
        with pytest.raises(ValidationError) as info:
            decode_json(msgspec.json.encode([item]), REG)
        assert str(info.value) == expected


_GRAMMAR = re.compile(
    r"^invalid (JSON|NDJSON at line (?P<line>\d+)|MessagePack): .*(at byte |starting at byte )(?P<at>\d+)\)?$")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_bodies_get_fluvials_errors(data: st.DataObject) -> None:
    rng = random.Random(data.draw(st.integers(0, 2**32), label="seed"))
    kind = data.draw(st.sampled_from(["json", "ndjson", "msgpack"]))
    events = _events(rng, 1 + rng.randrange(4))
    if kind == "msgpack":
        body = bytearray(msgspec.msgpack.encode(events))
    elif kind == "json":
        body = bytearray(msgspec.json.encode(events))
    else:
        body = bytearray(b"\n".join(msgspec.json.encode(e) for e in events))
    for _ in range(data.draw(st.integers(1, 3))):
        i = rng.randrange(len(body))
        op = rng.randrange(3)
        if op == 0:
            body[i] = rng.randrange(256)
        elif op == 1:
            del body[i:]
            if not body:
                body = bytearray(b"[")
        else:
            body.insert(i, rng.randrange(256))
    try:
        _decode("msgpack" if kind == "msgpack" else "json", bytes(body))
    except DecodeError as exc:
        m = _GRAMMAR.match(str(exc))
        assert m, str(exc)
        assert 0 <= int(m["at"]) <= len(body), str(exc)
    except RecursionError:
        pass  # deep nesting: the HTTP and file edges turn it into their own error
