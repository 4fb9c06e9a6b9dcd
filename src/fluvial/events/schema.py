"""Schemas for event payloads and the registry that validates events against them.

A schema is declarative: a kind, a version and a mapping from payload field
to type name. Type names are ``str``, ``int``, ``float``, ``bool``, ``any``,
``list`` and ``object``; a trailing ``?`` makes the field optional (it may be
missing or null). Fields not named in the schema are allowed and kept.
Kinds starting with ``fluvial.`` are fluvial's own and cannot be registered.

Compatibility rule for a new version of a kind (checked against the latest):
old producers and consumers must keep working, so

* a required field may not be removed, added, made optional or re-typed;
* an optional field may be added or removed, but not re-typed or made required.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from fluvial.errors import SchemaError, ValidationError
from fluvial.events.diagnose import envelope_problem, payload_problem, type_name
from fluvial.events.envelope import Event

__all__ = ["FIELD_TYPES", "RESERVED_KIND_PREFIX", "Schema", "SchemaRegistry", "to_event"]

FIELD_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "any": Any,
    "list": list,
    "object": dict,
}

_FORMAT = 1

RESERVED_KIND_PREFIX = "fluvial."
"""Kinds of fluvial's own events (the placeholders of :mod:`fluvial.events.lost`): never registered."""


@dataclass(frozen=True)
class Schema:
    """A versioned payload schema.

    Args:
        kind: The event kind this schema describes.
        version: A positive integer; each new version of a kind is larger.
        fields: Field name to type name (``"float"``, ``"str?"``, ...).

    Example:
        >>> Schema(kind="reading", version=1, fields={"value": "float", "unit": "str?"})
        Schema(kind='reading', version=1, fields={'value': 'float', 'unit': 'str?'})
    """

    kind: str
    version: int
    fields: dict[str, str]
    _type: Any = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise SchemaError(f"schema kind must be a non-empty string, got {self.kind!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise SchemaError(
                f"schema {self.kind!r}: version must be an integer >= 1, got {self.version!r}"
            )
        specs: list[tuple[Any, ...]] = []
        for i, (name, spec) in enumerate(self.fields.items()):
            base, optional = _parse_type(self.kind, name, spec)
            if optional:
                specs.append((f"f{i}", base | None, None))
            else:
                specs.append((f"f{i}", base))
        rename = {f"f{i}": name for i, name in enumerate(self.fields)}
        specs.sort(key=lambda s: len(s) == 3)  # required fields first
        struct = msgspec.defstruct(f"Payload_{self.kind}_v{self.version}", specs, rename=rename)
        object.__setattr__(self, "fields", dict(self.fields))
        object.__setattr__(self, "_type", struct)

    def required(self) -> dict[str, str]:
        """Return the required fields and their type names."""
        return {n: t for n, t in self.fields.items() if not t.endswith("?")}

    def optional(self) -> dict[str, str]:
        """Return the optional fields and their type names (without the ``?``)."""
        return {n: t[:-1] for n, t in self.fields.items() if t.endswith("?")}

    def validate_payload(self, payload: Any) -> None:
        """Check a payload against this schema.

        Raises:
            ValidationError: With a path such as ``$.payload.value``.
        """
        if not isinstance(payload, dict):
            raise ValidationError("$.payload", f"expected object, got {type_name(payload)}")
        try:
            msgspec.convert(payload, self._type)
        except msgspec.ValidationError:
            problem = payload_problem(payload, self.fields)
            path, reason = problem or ("", f"does not match schema {self.kind!r} v{self.version}")
            raise ValidationError(f"$.payload{path}", reason) from None

    def check_compatible(self, new: Schema) -> None:
        """Raise SchemaError if ``new`` cannot replace this schema."""
        problems = []
        old_req, new_req = self.required(), new.required()
        old_opt, new_opt = self.optional(), new.optional()
        for name, t in old_req.items():
            if name in new_opt:
                problems.append(f"required field {name!r} made optional")
            elif name not in new_req:
                problems.append(f"required field {name!r} removed")
            elif new_req[name] != t:
                problems.append(f"field {name!r} changed type {t} -> {new_req[name]}")
        for name in new_req:
            if name in old_opt:
                problems.append(f"optional field {name!r} made required")
            elif name not in old_req:
                problems.append(f"new required field {name!r}")
        for name, t in new_opt.items():
            if name in old_opt and old_opt[name] != t:
                problems.append(f"field {name!r} changed type {old_opt[name]} -> {t}")
        if problems:
            raise SchemaError(
                f"schema {new.kind!r} v{new.version} is incompatible with v{self.version}: "
                + "; ".join(problems)
                + ". Add only optional fields, or register a new kind."
            )


def _parse_type(kind: str, name: str, spec: Any) -> tuple[Any, bool]:
    if not isinstance(name, str) or not isinstance(spec, str):
        raise SchemaError(f"schema {kind!r}: field {name!r} must map a name to a type name")
    optional = spec.endswith("?")
    base = FIELD_TYPES.get(spec[:-1] if optional else spec)
    if base is None:
        raise SchemaError(
            f"schema {kind!r}: field {name!r} has unknown type {spec!r}; "
            f"use one of {', '.join(FIELD_TYPES)} (with a trailing '?' for optional)"
        )
    return base, optional


def _check_not_reserved(kind: str) -> None:
    if not kind.startswith(RESERVED_KIND_PREFIX):
        return
    rest = kind[len(RESERVED_KIND_PREFIX):]
    example = f", e.g. {rest!r}" if rest else ""
    raise SchemaError(
        f"schema {kind!r}: kinds starting with {RESERVED_KIND_PREFIX!r} are reserved for fluvial's "
        f"own events (placeholders of records lost to damage on disk); register it under another name{example}"
    )


def to_event(item: Any) -> Event:
    """Check an event envelope (not its payload) and return it as an :class:`Event`.

    Raises:
        ValidationError: With the path of the first problem, e.g. ``$.ts``.
    """
    try:
        return msgspec.convert(item, Event)
    except msgspec.ValidationError:
        problem = envelope_problem(item)
        path, reason = problem or ("", "does not match the event envelope {device, kind, ts, seq, payload}")
        raise ValidationError(f"${path}", reason) from None


class SchemaRegistry:
    """The registered schemas, every version of every kind.

    Example:
        >>> reg = SchemaRegistry.with_builtins()
        >>> reg.validate({"device": "d", "kind": "line", "ts": 1, "seq": 0,
        ...               "payload": {"text": "hi"}}).kind
        'line'
    """

    def __init__(self) -> None:
        self._versions: dict[str, list[Schema]] = {}

    @classmethod
    def with_builtins(cls) -> SchemaRegistry:
        """Return a registry holding ``line``, ``tweet`` and ``reading`` (version 1)."""
        reg = cls()
        reg.register(Schema(kind="line", version=1, fields={"text": "str"}))
        reg.register(Schema(kind="tweet", version=1, fields={"user": "str", "text": "str"}))
        reg.register(Schema(kind="reading", version=1, fields={"kind": "str", "value": "float"}))
        return reg

    def register(self, schema: Schema) -> None:
        """Add a schema, or a new version of a known kind.

        Raises:
            SchemaError: The kind is reserved, the version is not newer, or the change
                is incompatible.
        """
        _check_not_reserved(schema.kind)
        versions = self._versions.get(schema.kind)
        if not versions:
            self._versions[schema.kind] = [schema]
            return
        latest = versions[-1]
        if schema.version == latest.version and schema.fields == latest.fields:
            return  # registering the same schema again is a no-op
        if schema.version <= latest.version:
            raise SchemaError(
                f"schema {schema.kind!r} v{schema.version}: version must be greater than "
                f"the latest registered (v{latest.version}); registered versions are immutable"
            )
        latest.check_compatible(schema)
        versions.append(schema)

    def get(self, kind: str, version: int | None = None) -> Schema:
        """Return the latest (or the given) version of a kind.

        Raises:
            SchemaError: No such kind or version.
        """
        versions = self._versions.get(kind)
        if not versions:
            raise SchemaError(f"no schema for kind {kind!r}; registered: {self._names()}")
        if version is None:
            return versions[-1]
        for s in versions:
            if s.version == version:
                return s
        raise SchemaError(f"kind {kind!r} has no version {version}")

    def kinds(self) -> list[str]:
        """Return the registered kinds, sorted."""
        return sorted(self._versions)

    def __contains__(self, kind: object) -> bool:
        return kind in self._versions

    def validate(self, event: dict[str, Any] | Event) -> Event:
        """Check an event's envelope and payload; return it as an :class:`Event`.

        The payload is kept exactly as given (no coercion, no dropped fields).

        Raises:
            ValidationError: With the path of the first problem found.
        """
        if isinstance(event, Event):
            event = msgspec.structs.asdict(event)
        ev = to_event(event)
        schema = self._versions.get(ev.kind)
        if schema is None:
            raise ValidationError(
                "$.kind", f"unknown kind {ev.kind!r}; registered kinds: {self._names()}"
            )
        schema[-1].validate_payload(ev.payload)
        return ev

    def _names(self) -> str:
        return ", ".join(self.kinds()) or "(none)"

    def to_dict(self) -> dict[str, Any]:
        """Return the registry as plain JSON-compatible data."""
        return {
            "format": _FORMAT,
            "schemas": [
                {"kind": s.kind, "version": s.version, "fields": s.fields}
                for kind in self.kinds()
                for s in self._versions[kind]
            ],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the registry as JSON, atomically (write then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SchemaRegistry:
        """Read a registry written by :meth:`save`.

        Raises:
            SchemaError: The file is not a valid registry.
        """
        try:
            data = json.loads(Path(path).read_text())
            if data.get("format") != _FORMAT:
                raise SchemaError(f"{path}: unsupported registry format {data.get('format')!r}")
            reg = cls()
            for item in sorted(data["schemas"], key=lambda s: (s["kind"], s["version"])):
                reg.register(Schema(kind=item["kind"], version=item["version"],
                                    fields=item["fields"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SchemaError(f"cannot load schema registry from {path}: {exc}") from None
        return reg
