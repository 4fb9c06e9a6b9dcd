"""The import contract (issue 9): the pure packages describe; they never import what executes.

``events``, ``flow``, ``windows`` and ``aggregators`` may import each other, ``fluvial.errors``,
the standard library (but not its network, process, thread or database modules) and the light
dependencies msgspec and xxhash -- nothing from ``engine``, ``serving``, ``server``, ``cli``,
``log``, ``ingest`` or any other fluvial package, and not ``fluvial`` itself (its ``__init__`` is
the curated API, which imports the runners). Two checks:

* statically, every import of every module at any depth (in functions, in ``TYPE_CHECKING``
  blocks), relative imports resolved, and ``importlib.import_module``/``__import__`` calls;
* at run time, every module of each pure package imported in a fresh interpreter, with the
  ``fluvial`` package created empty (not running its ``__init__``), so that ``sys.modules``
  afterwards holds exactly what the pure package needs (standard modules that the standard
  library imports itself are not counted as I/O there).

And ``import fluvial`` stays light, as DESIGN.md and STYLE.md promise: no PySpark (an extra),
no web server, no MQTT or NATS client.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

import fluvial

SRC = Path(fluvial.__file__).resolve().parent
PURE = ("events", "flow", "windows", "aggregators")
ALLOWED_FLUVIAL = tuple(f"fluvial.{name}" for name in (*PURE, "errors"))
ALLOWED_THIRD_PARTY = frozenset({"msgspec", "xxhash"})
# no I/O in the pure packages: these standard modules talk to the network, processes or databases
IO_STDLIB = frozenset({"asyncio", "concurrent", "ftplib", "http", "imaplib", "multiprocessing", "select",
                       "selectors", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "subprocess",
                       "threading", "urllib"})

# (importer, imported) pairs the contract tolerates until they are moved; each must still exist.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


class Import(NamedTuple):
    importer: str  # module name
    imported: str  # module name, resolved
    where: str     # path:line


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def _is_module(name: str) -> bool:
    """``name`` (``fluvial.x.y``) is a module or package of the source tree."""
    path = SRC.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _resolve(importer: str, is_package: bool, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join([*base, module] if module else base)


def _dynamic_target(call: ast.Call) -> str | None:
    """The module an ``importlib.import_module(...)``/``__import__(...)`` call names, "" if not a literal;
    None for any other call."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name not in ("import_module", "__import__"):
        return None
    arg = call.args[0] if call.args else None
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else ""


def imports_of(path: Path) -> list[Import]:
    return imports_in(path.read_text(), _module_name(path), path.name == "__init__.py",
                      str(path.relative_to(SRC.parent.parent)))


def imports_in(source: str, importer: str, is_package: bool, where: str) -> list[Import]:
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=where)):
        at = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [Import(importer, alias.name, at) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(importer, is_package, node.module, node.level)
            for alias in node.names:  # `from pkg import mod` imports pkg.mod; `from mod import name`, mod
                sub = f"{base}.{alias.name}"
                found.append(Import(importer, sub if _is_module(sub) else base, at))
        elif isinstance(node, ast.Call) and (target := _dynamic_target(node)) is not None:
            found.append(Import(importer, target or "<a computed name>", at))
    return found


def problem(imported: str) -> str | None:
    """Why a pure module may not import ``imported`` (None if it may)."""
    top = imported.split(".")[0]
    if top == "fluvial":
        if any(imported == ok or imported.startswith(ok + ".") for ok in ALLOWED_FLUVIAL):
            return None
        if imported == "fluvial":
            return "the fluvial package itself (its __init__ imports the runners)"
        return f"fluvial.{imported.split('.')[1]} is not pure"
    if top == "<a computed name>":
        return "a dynamic import of a computed name cannot be checked"
    if top in IO_STDLIB:
        return "I/O: network, processes, threads or databases"
    if top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY:
        return None
    return f"a dependency outside {sorted(ALLOWED_THIRD_PARTY)}"


def all_imports() -> list[Import]:
    return [imp for package in PURE for path in _modules(package) for imp in imports_of(path)]


def test_the_contract_sees_every_kind_of_import() -> None:
    found = {(imp.importer, imp.imported) for imp in all_imports()}
    assert ("fluvial.flow.graph", "fluvial.windows.shapes") in found      # at the top
    assert ("fluvial.flow.graph", "fluvial.events.envelope") in found     # under TYPE_CHECKING
    assert ("fluvial.flow.graph", "fluvial.aggregators") in found         # inside a method
    assert ("fluvial.flow.explain", "fluvial.flow.graph") in found
    assert ("fluvial.events", "fluvial.events.codec") in found            # a package's __init__
    assert _resolve("fluvial.flow.graph", False, "explain", 1) == "fluvial.flow.explain"
    assert _resolve("fluvial.flow", True, None, 2) == "fluvial"
    assert _resolve("fluvial.windows.shapes", False, "engine.batch", 2) == "fluvial.engine.batch"
    for source, imported in [("import fluvial.engine.batch", "fluvial.engine.batch"),
                             ("from ..serving import sqlite", "fluvial.serving.sqlite"),
                             ("from .. import cli", "fluvial.cli"),
                             ("from fluvial import Pipeline", "fluvial"),
                             ("importlib.import_module('fluvial.api.app')", "fluvial.api.app"),
                             ("__import__(name)", "<a computed name>"),
                             ("import socket", "socket"),
                             ("import pyarrow.compute", "pyarrow.compute")]:
        (imp,) = imports_in(f"def f(name):\n    {source}\n", "fluvial.flow.probe", False, "probe.py")
        assert imp.imported == imported, source
        assert problem(imp.imported) is not None, source


def test_pure_packages_import_nothing_impure() -> None:
    violations = [imp for imp in all_imports() if problem(imp.imported) is not None]
    unknown = [f"  {imp.where}: {imp.importer} imports {imp.imported}: {problem(imp.imported)}"
               for imp in violations if (imp.importer, imp.imported) not in KNOWN_VIOLATIONS]
    assert not unknown, (
        f"the pure packages ({', '.join(PURE)}) import only each other, fluvial.errors, the standard "
        f"library without I/O, and {', '.join(sorted(ALLOWED_THIRD_PARTY))}:\n" + "\n".join(unknown)
        + "\nmove the code that needs it out of the pure package (into engine/, serving/, ...), "
        "or have the caller pass it in")
    stale = set(KNOWN_VIOLATIONS) - {(imp.importer, imp.imported) for imp in violations}
    assert not stale, f"fixed: remove {sorted(stale)} from KNOWN_VIOLATIONS"


# The pure package's modules imported in an interpreter where `fluvial` is an empty package (its
# __init__ not run); msgspec and xxhash (and what they import) are loaded before the count starts.
_PROBE = """
import importlib, importlib.util, json, sys
import msgspec, xxhash
before = set(sys.modules)
root = importlib.util.module_from_spec(importlib.util.find_spec("fluvial"))
sys.modules["fluvial"] = root
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(set(sys.modules) - before - {"fluvial"})))
"""


@pytest.mark.parametrize("package", PURE)
def test_pure_package_loads_only_pure_modules(package: str) -> None:
    modules = [_module_name(path) for path in _modules(package)]
    out = subprocess.run([sys.executable, "-c", _PROBE, *modules], capture_output=True, text=True,
                         check=True, timeout=60)
    loaded = json.loads(out.stdout)
    assert f"fluvial.{package}" in loaded and len(loaded) >= len(modules)
    impure = [m for m in loaded if (m.split(".")[0] == "fluvial" and problem(m)) or (
        m.split(".")[0] != "fluvial" and m.split(".")[0] not in sys.stdlib_module_names)]
    assert not impure, (
        f"importing fluvial.{package} loads {impure}: the pure packages need only each other, "
        "fluvial.errors, msgspec and xxhash")


HEAVY = ("pyspark", "py4j", "pyarrow", "pandas", "numpy", "sklearn", "uvicorn", "starlette",
         "httptools", "uvloop", "paho", "nats", "psycopg", "tqdm")
NOT_ON_IMPORT = ("fluvial.server", "fluvial.cli", "fluvial.engine.spark")


def test_import_fluvial_stays_light() -> None:
    code = ("import json, sys; old = set(sys.modules); import fluvial; fluvial.Pipeline; "   # the API, loaded on use
            "print(json.dumps(sorted(set(sys.modules) - old)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True, timeout=60).stdout)
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY
             or any(m == edge or m.startswith(edge + ".") for edge in NOT_ON_IMPORT)]
    assert "fluvial.flow.graph" in loaded
    assert not heavy, (f"`import fluvial` loads {heavy}: the Spark runner, the web server and the CLI are "
                       "imported where they are used (lazily, with the extra to install named)")


@pytest.mark.parametrize("package", ["server", "engine", "serving", "log", "state", "ingest"])
def test_only_the_command_line_imports_the_command_line(package: str) -> None:
    """The server, the runners and the backends are used by the CLI, never the other way round
    (the server starts its batch children as `python -m fluvial.cli.main`, a process, not an import)."""
    found = [f"{imp.where}: {imp.importer} imports {imp.imported}"
             for path in _modules(package) for imp in imports_of(path)
             if imp.imported == "fluvial.cli" or imp.imported.startswith("fluvial.cli.")]
    assert not found, "\n".join(found)


# The rest of the tree imports one way (STYLE.md: the tree shows the architecture): the log and
# the store know nothing of what runs over them; checkpoints and state nothing of the runners; the
# runners (engine) and the Lambda/Kappa policies (layers) nothing of the server; the server
# process nothing of its HTTP application; nothing but the CLI imports the CLI.
LAYERING: dict[str, tuple[str, ...]] = {
    "log": ("serving", "state", "engine", "layers", "server", "api", "cli"),
    "serving": ("log", "engine", "layers", "server", "api", "cli"),
    "state": ("engine", "layers", "server", "api", "cli"),
    "engine": ("server", "api", "cli"),
    "layers": ("server", "api", "cli"),
    "server": ("api", "cli"),
    "api": ("cli",),
}
# Imports for annotations only (under TYPE_CHECKING), with why they are there.
TYPE_ONLY: dict[tuple[str, str], str] = {
    ("fluvial.state.checkpoint", "fluvial.engine.plan"): "check_fits and has_state read a compiled Plan",
}


def test_the_layers_import_one_way() -> None:
    wrong = []
    for package, forbidden in LAYERING.items():
        assert (SRC / package).is_dir(), package
        for path in _modules(package):
            for imp in imports_of(path):
                parts = imp.imported.split(".")
                if parts[0] == "fluvial" and len(parts) > 1 and parts[1] in forbidden \
                        and (imp.importer, imp.imported) not in TYPE_ONLY:
                    wrong.append(f"  {imp.where}: {imp.importer} imports {imp.imported}")
    assert not wrong, ("imports against the direction of the layers (LAYERING):\n" + "\n".join(wrong)
                       + "\nmove the code to the layer it belongs to, or have the caller pass it in")


def test_the_layering_check_sees_a_wrong_import() -> None:
    (imp,) = imports_in("from fluvial.server.core import Server\n", "fluvial.layers.probe", False, "probe.py")
    assert imp.imported.split(".")[1] in LAYERING["layers"]
