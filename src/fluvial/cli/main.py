"""``fluvial``: the command line. The only place that reads argv and the environment.

Each subcommand is a function registered with :func:`fluvial.cli.app.subcommand`
in one of :data:`COMMAND_MODULES`; this module builds the parser from the
registry and turns errors into one line and an exit code:

* 0: done (an ingest that rejected some lines is done: they are in the dead-letter log);
* 1: a failure (any :class:`fluvial.FluvialError`, an unreadable file...);
* 2: a usage error (unknown subcommand, missing or malformed option);
* 130: interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from fluvial.cli.app import COMMANDS, GROUPS
from fluvial.config import DEFAULT_DATA_DIR
from fluvial.errors import FluvialError

__all__ = ["COMMAND_MODULES", "ENV_HOME", "build_parser", "main"]

COMMAND_MODULES = ("fluvial.cli.generate", "fluvial.cli.ingest", "fluvial.cli.run", "fluvial.cli.views",
                   "fluvial.cli.log", "fluvial.cli.schema", "fluvial.cli.demo",
                   "fluvial.cli.export", "fluvial.cli.serve", "fluvial.cli.token",
                   "fluvial.cli.simulate", "fluvial.cli.shell", "fluvial.cli.worker",
                   "fluvial.cli.devices")
"""Modules whose ``@subcommand`` functions make up the CLI."""

ENV_HOME = "FLUVIAL_HOME"
ENV_LOG = "FLUVIAL_LOG"
ENV_STORE = "FLUVIAL_STORE"

_DESCRIPTION = """\
fluvial keeps every event unchanged in an immutable log, computes views from it
in batch and in real time, and serves the merged views.

typical session:
  fluvial ingest tweets.jsonl --kind tweet --ts-field ts --device-field user
  fluvial run flows/hashtags.py --mode batch
  fluvial query hashtags --format table
"""


def _common(env_home: str | None) -> argparse.ArgumentParser:
    """Global options, accepted before or after the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", metavar="DIR", default=argparse.SUPPRESS,
        help=f"data directory: log, dead letters, schemas, views (default: ./{DEFAULT_DATA_DIR}"
             f"{', now ' + env_home if env_home else ''}) [env: {ENV_HOME}]")
    common.add_argument(
        "--log", metavar="URL", default=argparse.SUPPRESS,
        help="the event log (default: file://DATA_DIR/log; see `fluvial.backends`; {data_dir} in it "
             f"stands for the data directory) [env: {ENV_LOG}]")
    common.add_argument(
        "--store", metavar="URL", default=argparse.SUPPRESS,
        help=f"the view store: sqlite:///PATH, postgresql://[USER@]HOST:PORT/DB?schema=NAME or "
             f"cassandra://HOST[,HOST...][:PORT]/KEYSPACE[?replication_factor=N&consistency=LEVEL] (default: "
             f"sqlite://DATA_DIR/views.db; {{data_dir}} too) [env: {ENV_STORE}]")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="say more (per micro-batch lines, tracebacks)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks of errors")
    return common


def build_parser(env: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; ``env`` (default ``os.environ``) supplies FLUVIAL_HOME."""
    from fluvial import __version__

    for module in COMMAND_MODULES:
        importlib.import_module(module)
    env_home = (os.environ if env is None else env).get(ENV_HOME) or None
    common = _common(env_home)  # for subcommands; the top level gets its own copy, since
    # set_defaults() below changes the default of the (shared) actions of a parent parser
    parser = argparse.ArgumentParser(
        prog="fluvial", description=_DESCRIPTION, parents=[_common(env_home)],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fluvial {__version__}")
    environ = os.environ if env is None else env
    parser.set_defaults(data_dir=env_home or DEFAULT_DATA_DIR, verbose=False, debug=False,
                        log=environ.get(ENV_LOG) or None, store=environ.get(ENV_STORE) or None)
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    for cmd in COMMANDS.values():
        where, leaf = top, cmd.name
        if " " in cmd.name:
            group, leaf = cmd.name.split(" ", 1)
            if group not in groups:
                gp = top.add_parser(group, help=GROUPS.get(group, ""), parents=[common],
                                    description=GROUPS.get(group, ""))
                groups[group] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND",
                                                  required=True)
            where = groups[group]
        p = where.add_parser(
            leaf, help=cmd.summary, description=cmd.description, parents=[common],
            epilog="example:\n  " + cmd.example.replace("\n", "\n  "),
            formatter_class=argparse.RawDescriptionHelpFormatter)
        for a in cmd.args:
            p.add_argument(*a.flags, **a.options)
        if cmd.configure is not None:
            cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors, 0 on --help
    try:
        return int(args._run(args))
    except FluvialError as exc:
        return _fail(args, str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fluvial log tail | head`: the reader left, stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(args, f"{exc.strerror or exc}{where}")


def _fail(args: argparse.Namespace, message: str) -> int:
    if args.debug or args.verbose:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
