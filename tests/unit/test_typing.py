"""The pure packages type-check under ``mypy --strict`` (issue 9), so ``make test`` keeps them so.

``make lint`` checks the same through the per-module flags of ``[tool.mypy]`` in pyproject.toml;
this runs the literal ``--strict`` on the four packages only: imported modules outside them
(``fluvial.errors``, the ``fluvial`` package itself) are analysed, and their errors left to lint.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = ("events", "flow", "windows", "aggregators")


def test_pure_packages_are_mypy_strict_clean(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is in the dev extra (make install installs it)")
    paths = [f"src/fluvial/{name}" for name in PURE]
    cmd = [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
           "--cache-dir", str(tmp_path / "mypy-cache"), *paths]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, (
        f"`{' '.join(cmd[1:3])} {' '.join(cmd[3:5])} {' '.join(paths)}` found problems (exit {out.returncode}); "
        f"annotate them (a type: ignore only with its code and a reason):\n{out.stdout}{out.stderr}")
    assert "Success: no issues found" in out.stdout, out.stdout


def test_the_whole_tree_type_checks(tmp_path: Path) -> None:
    """``mypy`` with the project's settings (pyproject.toml) over ``src/fluvial``: among others it
    holds that the runners, the workspace and the server use the log and store only through their
    protocols, and that each embedded backend fits its protocol (``backends._embedded_backends_fit``)."""
    pytest.importorskip("mypy", reason="mypy is in the dev extra (make install installs it)")
    cmd = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Success: no issues found" in out.stdout, (
        f"`mypy` (the settings of pyproject.toml) found problems (exit {out.returncode}):\n{out.stdout}{out.stderr}")
