"""``fluvial schema list|add``: the registered event kinds and their versions."""

from __future__ import annotations

import argparse
from pathlib import Path

from fluvial.cli.app import arg, data_dir, subcommand, workspace
from fluvial.cli.fmt import table
from fluvial.errors import ConfigError, SchemaError
from fluvial.events.schema import FIELD_TYPES, Schema, SchemaRegistry
from fluvial.workspace import Workspace


def _field(text: str) -> tuple[str, str]:
    name, sep, type_name = text.rpartition(":")
    if not sep or not name or not type_name:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write NAME:TYPE, e.g. value:float or unit:str?")
    return name, type_name


@subcommand(
    "schema list",
    summary="every registered kind, version and its fields",
    description="List the schemas of the data directory (the built-in kinds line, tweet and "
                "reading when none was added). A trailing ? marks an optional field.",
    example="fluvial schema list",
)
def schema_list(args: argparse.Namespace) -> int:
    path = data_dir(args)
    registry = _registry(path)
    rows = []
    for kind in registry.kinds():
        latest = registry.get(kind).version
        for version in range(1, latest + 1):
            try:
                s = registry.get(kind, version)
            except SchemaError:  # versions need not be consecutive
                continue
            rows.append([kind, f"v{s.version}",
                         ", ".join(f"{n}: {t}" for n, t in s.fields.items()) or "(any)"])
    print(table(["KIND", "VERSION", "FIELDS"], rows))
    return 0


def _registry(path: Path) -> SchemaRegistry:
    if not path.is_dir():  # do not create a data directory just to list the built-ins
        return SchemaRegistry.with_builtins()
    with Workspace(path) as ws:   # the schemas live in the data directory
        return ws.schemas


@subcommand(
    "schema add",
    summary="register a kind, or a new compatible version of one",
    description="Register a schema for KIND with the given fields. For a known kind this is a "
                "new version, which must stay compatible with the latest one: required fields "
                "may not be added, removed, re-typed or made optional; optional fields may be "
                "added or removed. An incompatible change is refused with the reason.\n\n"
                f"Types: {', '.join(FIELD_TYPES)}; a trailing ? makes a field optional.",
    example="fluvial schema add reading --field value:float --field unit:str? --version 2",
    args=[
        arg("kind", metavar="KIND", help="the event kind"),
        arg("--field", dest="fields", type=_field, action="append", default=[],
            metavar="NAME:TYPE", help="a payload field (repeat the option for more)"),
        arg("--version", type=int, metavar="N",
            help="the version number (default: the latest + 1, or 1 for a new kind)"),
    ],
)
def schema_add(args: argparse.Namespace) -> int:
    with workspace(args) as ws:
        registry = ws.schemas
        version = args.version
        if version is None:
            version = registry.get(args.kind).version + 1 if args.kind in registry else 1
        names = [n for n, _ in args.fields]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"--field {', '.join(dup)} given more than once")
        schema = Schema(kind=args.kind, version=version, fields=dict(args.fields))
        registry.register(schema)
        ws.save_schemas()
    print(f"registered {args.kind} v{version}: "
          + (", ".join(f"{n}: {t}" for n, t in schema.fields.items()) or "(no fields)"))
    return 0
