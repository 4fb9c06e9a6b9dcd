"""``fluvial shell`` in a terminal: driven over a pseudo-terminal as a user would type.

A data directory gets generated events (seed printed) and two views; the shell
starts under a pty, shows the kinds and views, evaluates typed lines -- arithmetic,
``views()``, a flow over the log, ``show(view)`` -- and leaves with status 0 on Ctrl-D.
Results are compared with plain Python over the same events.
"""

from __future__ import annotations

import ast
import operator
import os
import pty
import random
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fluvial as fl
from fluvial.config import LogConfig
from fluvial.testing import brute, make_events


class Terminal:
    """A child process on a pseudo-terminal: type lines, wait for output."""

    def __init__(self, args: list[str], **env: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                     env={**os.environ, "TERM": "dumb", "PYTHONWARNINGS": "error", **env})
        os.close(slave)
        self.output = ""

    def expect(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Read until ``pattern`` (a regex) appears in what was printed since the last match."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.output)
            if found:
                self.output = self.output[found.end():]
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not printed within {timeout} s; got:\n{self.output}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:   # the child closed the terminal
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    raise AssertionError(f"the shell exited ({self.proc.returncode}) before {pattern!r}:\n"
                                         f"{self.output}")
                self.output += chunk.decode(errors="replace").replace("\r\n", "\n")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, list[fl.Event]]:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    events = make_events(seed, 400, devices=9, kinds=["reading", "status"], duplicate_fraction=0.1)
    directory = tmp_path / "data"
    with fl.open(directory, writer=True, log_config=LogConfig(partitions=3, fsync="never")) as ws:
        ws.log.append(events)
        p = fl.Pipeline("setup")
        readings = p.from_log("reading")
        readings.map(lambda e: (e.device, 1)).reduce_by_key(operator.add).to_view("counts")
        readings.map(lambda e: (e.payload["color"], e.payload["level"])).aggregate_by_key(fl.Max()).to_view("levels")
        ws.batch_runner(progress=False).run(p)
    return directory, events


def test_shell_in_a_terminal(data: tuple[Path, list[fl.Event]]) -> None:
    directory, events = data
    readings = [e for e in brute.unique(events) if e.kind == "reading"]
    term = Terminal([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(directory), "shell"])
    try:
        banner = term.expect(r"kinds: (.*)\nviews: (.*)\n")
        assert "reading" in banner.group(1).split(", ")
        assert banner.group(2) == "counts, levels"
        term.expect(r">>> ")

        term.type("print('six times seven is', 6 * 7)\n")
        term.expect(r"six times seven is 42\n")
        term.expect(r">>> ")

        term.type("views()\n")
        term.expect(r"\['counts', 'levels'\]\n")
        term.expect(r">>> ")

        term.type("print('devices', sorted(log('reading').map(lambda e: e.device).distinct().collect()))\n")
        found = term.expect(r"devices (\[.*\])\n")
        assert found.group(1) == repr(sorted({e.device for e in readings}))
        term.expect(r">>> ")

        term.type("show('counts', 100)\n")
        counts = {d: sum(1 for e in readings if e.device == d) for d in {e.device for e in readings}}
        for device in sorted(counts):
            term.expect(re.escape(f"Row(key='{device}', window=None, value={counts[device]})"))
        term.expect(r">>> ")

        term.type("\x04")   # Ctrl-D
        assert term.proc.wait(timeout=30) == 0
    finally:
        term.close()


FAKE_IPYTHON = """\
def start_ipython(argv, user_ns):
    print("stand-in IPython", argv, sorted(user_ns))
"""


def test_shell_prefers_ipython_when_installed(data: tuple[Path, list[fl.Event]], tmp_path: Path) -> None:
    """With an ``IPython`` importable (a stand-in here: IPython is not a dependency) the shell
    hands it the namespace; ``--plain`` keeps the standard REPL."""
    directory, _ = data
    (tmp_path / "fake" / "IPython").mkdir(parents=True)
    (tmp_path / "fake" / "IPython" / "__init__.py").write_text(FAKE_IPYTHON)
    args = [sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(directory), "shell"]
    term = Terminal(args, PYTHONPATH=str(tmp_path / "fake"))
    try:
        found = term.expect(r"stand-in IPython \['--no-banner'\] (\[.*\])\n")
        assert {"fl", "ws", "pipeline", "log", "run", "show", "views", "kinds"} <= set(ast.literal_eval(found.group(1)))
        assert term.proc.wait(timeout=30) == 0
    finally:
        term.close()
    term = Terminal([*args, "--plain"], PYTHONPATH=str(tmp_path / "fake"))
    try:
        term.expect(r">>> ")
        term.type("\x04")
        assert term.proc.wait(timeout=30) == 0
        assert "stand-in" not in term.output
    finally:
        term.close()
