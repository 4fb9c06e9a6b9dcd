"""The subcommand registry of the ``fluvial`` CLI and what every subcommand shares.

Adding a subcommand is one decorated function in a module listed in
:data:`fluvial.cli.main.COMMAND_MODULES`::

    @subcommand("hello", summary="say hello", example="fluvial hello --name Ada",
                args=[arg("--name", default="world", help="who to greet (default: %(default)s)")])
    def hello(args: argparse.Namespace) -> int:
        print(f"hello {args.name}")
        return 0

A name with a space (``"log stats"``) makes a nested subcommand (``fluvial log stats``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluvial.errors import ConfigError

__all__ = ["COMMANDS", "GROUPS", "Command", "arg", "data_dir", "existing_data_dir", "subcommand", "workspace"]

Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Arg:
    """The arguments of one ``ArgumentParser.add_argument`` call."""

    flags: tuple[str, ...]
    options: dict[str, Any]


def arg(*flags: str, **options: Any) -> Arg:
    """Describe an argument: same parameters as ``ArgumentParser.add_argument``."""
    return Arg(flags, options)


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, help texts, arguments and the function that runs it."""

    name: str
    summary: str
    description: str
    example: str
    args: tuple[Arg, ...]
    run: Run
    configure: Callable[[argparse.ArgumentParser], None] | None = None


COMMANDS: dict[str, Command] = {}
GROUPS: dict[str, str] = {
    "log": "inspect the event log and the dead-letter log",
    "schema": "list and register event schemas",
}
"""One-line help of the groups of nested subcommands (``fluvial log ...``)."""


def subcommand(name: str, *, summary: str, example: str, description: str = "",
               args: list[Arg] | None = None,
               configure: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> Callable[[Run], Run]:
    """Register the decorated function as ``fluvial NAME``; it returns the exit code."""

    def register(run: Run) -> Run:
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice")
        COMMANDS[name] = Command(name, summary, description or summary[:1].upper() + summary[1:] + ".",
                                 example, tuple(args or ()), run, configure)
        return run

    return register


def workspace(args: argparse.Namespace, path: Path | None = None, *, writer: bool = False,
              log_config: Any = None) -> Any:
    """The data directory of ``args`` (or ``path``) with the log and store of ``--log``/``--store``."""
    from fluvial.config import DEFAULT_LOG
    from fluvial.workspace import Workspace

    return Workspace(data_dir(args) if path is None else path, writer=writer, log_config=log_config or DEFAULT_LOG,
                     log_url=getattr(args, "log", None), store_url=getattr(args, "store", None))


def data_dir(args: argparse.Namespace) -> Path:
    """The data directory chosen with ``--data-dir`` / ``FLUVIAL_HOME``."""
    return Path(args.data_dir)


def existing_data_dir(args: argparse.Namespace) -> Path:
    """The data directory, which must exist (commands that only read)."""
    path = data_dir(args)
    if not path.is_dir():
        raise ConfigError(f"no data directory at {path}: ingest events first "
                          "(`fluvial ingest FILE --kind K`), or point --data-dir / FLUVIAL_HOME "
                          "at an existing one")
    return path
