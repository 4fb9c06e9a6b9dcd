"""``fluvial generate``: write a deterministic workload file (tweets, readings, text...)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import BinaryIO

from fluvial.cli.app import arg, subcommand
from fluvial.cli.fmt import count_arg
from fluvial.cli.progress import progress_bar
from fluvial.errors import ConfigError
from fluvial.generate import KINDS, Kind, Written, write


def _kinds_help() -> str:
    parts = []
    for k in KINDS.values():
        shape = textwrap.fill(k.shape, 78, initial_indent="    ", subsequent_indent="    ")
        parts.append(f"  {k.name} N  (N {k.unit}, default seed {k.default_seed})\n{shape}\n"
                     f"    e.g. {k.example}")
    return "\n".join(parts)


_DESCRIPTION = f"""\
Write N records of KIND to FILE (- for stdout), one per line: the data of the
quickstart, the examples and the benchmarks. The same KIND, N and --seed give
the same bytes on every machine. FILE is replaced when it exists; it appears
only once complete (an interrupted run leaves no partial file).

Kinds:
{_kinds_help()}

tweets, readings and words with their default seeds are the benchmark
workloads. tweets uses --seed S for its words and S + 1 for its hashtags.

After writing, it prints a command that uses the file (ingest, or a
standalone example)."""


@subcommand(
    "generate",
    summary="write a deterministic workload file: tweets, readings, fleet, words, lines or accel",
    description=_DESCRIPTION,
    example="fluvial generate tweets 100000 tweets.jsonl\n"
            "fluvial generate words 50 words.txt          # 50 MiB of text\n"
            "fluvial generate readings 1000 - --seed 3 | head -2",
    args=[
        arg("kind", metavar="KIND", choices=tuple(KINDS),
            help=f"what to generate: {', '.join(KINDS)} (described below)"),
        arg("n", metavar="N", type=count_arg,
            help="how many records (lines), or MiB of text for words"),
        arg("file", metavar="FILE", help="the output file, or - for stdout"),
        arg("--seed", type=int, metavar="S",
            help="random seed (default: the kind's, listed below)"),
    ],
)
def generate(args: argparse.Namespace) -> int:
    kind = KINDS[args.kind]
    if args.n > kind.max_n:
        raise ConfigError(f"N is too large for {kind.name}: at most {kind.max_n:,} {kind.unit}, "
                          f"got {args.n:,}; write several files with different --seed instead")
    started = time.perf_counter()
    if args.file == "-":
        written = _write(kind, args, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        written = _write_file(kind, args, Path(args.file))
    seconds = time.perf_counter() - started
    where = "stdout" if args.file == "-" else args.file
    what = "lines of text" if kind.unit == "MiB" else kind.unit
    print(f"wrote {written.records:,} {what} ({written.bytes / 1e6:,.1f} MB, seed {written.seed}) "
          f"to {where} in {seconds:.1f} s",
          file=sys.stderr if args.file == "-" else sys.stdout)
    if args.file != "-":
        print("next: " + kind.next_step.format(file=_shell_word(args.file)))
    return 0


def _write(kind: Kind, args: argparse.Namespace, out: BinaryIO) -> Written:
    unit = "B" if kind.unit == "MiB" else "records"
    total = args.n * 1024 * 1024 if kind.unit == "MiB" else args.n
    with progress_bar(total, f"generate {kind.name}", unit=unit) as bar:
        return write(kind.name, args.n, out, seed=args.seed, progress=bar.update)


def _write_file(kind: Kind, args: argparse.Namespace, path: Path) -> Written:
    """Write to a temporary file next to ``path``, then rename it: all or nothing."""
    if not args.file:
        raise ConfigError("FILE is empty: give a file name, or - for stdout")
    if path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a directory; give a file name, or - for stdout")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"cannot write {path}: the file is read-only; choose another FILE")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc} ({path.parent}); give a path "
                          "in an existing directory you can write to, or - for stdout") from None
    try:
        with os.fdopen(fd, "wb") as out:
            written = _write(kind, args, out)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}; free some space or "
                          "choose another FILE") from None
    except BaseException:
        os.unlink(tmp)
        raise
    return written


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _shell_word(text: str) -> str:
    import shlex

    return shlex.quote(text)
