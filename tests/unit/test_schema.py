"""Schema validation messages and registry evolution rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fluvial.errors import SchemaError, ValidationError
from fluvial.events import Event, Schema, SchemaRegistry
from fluvial.events.lost import LOST_KIND


def env(payload: Any, **over: Any) -> dict[str, Any]:
    base = {"device": "d1", "kind": "reading", "ts": 1000, "seq": 7, "payload": payload}
    base.update(over)
    return base


@pytest.fixture
def reg() -> SchemaRegistry:
    return SchemaRegistry.with_builtins()


@pytest.mark.parametrize(
    ("event", "path", "reason"),
    [
        (env({"kind": "t", "value": "hot"}), "$.payload.value", "expected float, got str"),
        (env({"kind": "t"}), "$.payload.value", "missing required field"),
        (env({"kind": 3, "value": 1.0}), "$.payload.kind", "expected str, got int"),
        (env({"kind": "t", "value": True}), "$.payload.value", "expected float, got bool"),
        (env({"kind": "t", "value": 1.0}, ts="1"), "$.ts", "expected int, got str"),
        (env({"kind": "t", "value": 1.0}, seq=-1), "$.seq", "expected int >= 0"),
        ({"kind": "reading", "ts": 1, "seq": 0, "payload": {}}, "$.device",
         "missing required field"),
        (env([1, 2]), "$.payload", "expected object, got array"),
        (env({"kind": "t", "value": 1.0}, extra=1), "$.extra",
         "unknown envelope field; put extra data inside payload"),
    ],
)
def test_validation_messages(reg: SchemaRegistry, event: Any, path: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        reg.validate(event)
    assert (info.value.path, info.value.reason) == (path, reason)
    assert str(info.value) == f"{path}: {reason}"


def test_unknown_kind_names_registered(reg: SchemaRegistry) -> None:
    with pytest.raises(ValidationError) as info:
        reg.validate(env({}, kind="temp"))
    assert info.value.path == "$.kind"
    assert info.value.reason == "unknown kind 'temp'; registered kinds: line, reading, tweet"


def test_valid_event_kept_as_given(reg: SchemaRegistry) -> None:
    payload = {"kind": "t", "value": 21, "unit": "C", "deep": {"a": [1]}}
    ev = reg.validate(env(payload))
    assert ev == Event(device="d1", kind="reading", ts=1000, seq=7, payload=payload)
    assert reg.validate(ev) == ev


def test_optional_and_all_types() -> None:
    s = Schema(kind="k", version=1, fields={
        "s": "str", "i": "int", "f": "float", "b": "bool", "a": "any", "l": "list",
        "o": "object", "u": "str?", "odd key": "int?"})
    ok = {"s": "", "i": 1, "f": 1.5, "b": False, "a": None, "l": [], "o": {}}
    s.validate_payload(ok)
    s.validate_payload({**ok, "u": None, "odd key": 3})
    with pytest.raises(ValidationError, match=r"\$\.payload\.u: expected str \| null, got int"):
        s.validate_payload({**ok, "u": 1})
    with pytest.raises(ValidationError, match=r"\$\.payload\.odd key"):
        s.validate_payload({**ok, "odd key": "x"})
    with pytest.raises(ValidationError, match=r"\$\.payload\.i: expected int, got float"):
        s.validate_payload({**ok, "i": 1.5})


def test_bad_schema_definitions() -> None:
    with pytest.raises(SchemaError, match="unknown type 'double'"):
        Schema(kind="k", version=1, fields={"x": "double"})
    with pytest.raises(SchemaError, match="version must be an integer >= 1"):
        Schema(kind="k", version=0, fields={})


V1 = {"kind": "str", "value": "float", "unit": "str?"}


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "str", "unit": "str?"}, "required field 'value' removed"),
        ({"kind": "str", "value": "int", "unit": "str?"}, "field 'value' changed type float -> int"),
        ({**V1, "site": "str"}, "new required field 'site'"),
        ({"kind": "str", "value": "float?", "unit": "str?"}, "required field 'value' made optional"),
        ({"kind": "str", "value": "float", "unit": "str"}, "optional field 'unit' made required"),
        ({"kind": "str", "value": "float", "unit": "int?"}, "field 'unit' changed type str -> int"),
    ],
)
def test_incompatible_change_refused(fields: dict[str, str], problem: str) -> None:
    reg = SchemaRegistry()
    reg.register(Schema(kind="r", version=1, fields=V1))
    with pytest.raises(SchemaError, match="incompatible with v1") as info:
        reg.register(Schema(kind="r", version=2, fields=fields))
    assert problem in str(info.value)
    assert reg.get("r").version == 1


def test_compatible_change_and_versions(tmp_path: Path) -> None:
    reg = SchemaRegistry()
    reg.register(Schema(kind="r", version=1, fields=V1))
    reg.register(Schema(kind="r", version=2, fields={**V1, "site": "str?"}))
    reg.register(Schema(kind="r", version=2, fields={**V1, "site": "str?"}))  # same again: no-op
    with pytest.raises(SchemaError, match="must be greater"):
        reg.register(Schema(kind="r", version=1, fields={"x": "int"}))
    assert reg.get("r").version == 2 and reg.get("r", 1).fields == V1
    with pytest.raises(ValidationError, match=r"\$\.payload\.site: expected str \| null"):
        reg.validate({"device": "d", "kind": "r", "ts": 0, "seq": 0,
                      "payload": {"kind": "t", "value": 1.0, "site": 5}})
    path = tmp_path / "schemas.json"
    reg.save(path)
    loaded = SchemaRegistry.load(path)
    assert loaded.to_dict() == reg.to_dict()
    assert loaded.kinds() == ["r"] and loaded.get("r", 1).fields == V1


@pytest.mark.parametrize("kind", [LOST_KIND, "fluvial.", "fluvial.reading"])
def test_reserved_kind_prefix_refused(tmp_path: Path, kind: str) -> None:
    reg = SchemaRegistry()
    reserved = rf"schema '{kind}': kinds starting with 'fluvial\.' are reserved for fluvial's own events"
    with pytest.raises(SchemaError, match=reserved) as info:
        reg.register(Schema(kind=kind, version=1, fields={"x": "int"}))
    assert "register it under another name" in str(info.value)
    assert kind not in reg
    reg.register(Schema(kind="fluvial_reading", version=1, fields={}))  # only the dotted prefix is reserved
    path = tmp_path / "schemas.json"
    path.write_text(json.dumps({"format": 1, "schemas": [{"kind": kind, "version": 1, "fields": {}}]}))
    with pytest.raises(SchemaError, match=f"schema '{kind}': kinds starting with"):
        SchemaRegistry.load(path)


def test_load_bad_file(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text("{nope")
    with pytest.raises(SchemaError, match="cannot load schema registry"):
        SchemaRegistry.load(p)


def test_builtins() -> None:
    reg = SchemaRegistry.with_builtins()
    assert reg.kinds() == ["line", "reading", "tweet"]
    assert reg.get("tweet").fields == {"user": "str", "text": "str"}
    assert "line" in reg and "nope" not in reg
