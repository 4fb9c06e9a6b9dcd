"""requirements.lock agrees with pyproject.toml, and this environment runs exactly the lock.

`make test`, `make demo` and CI install requirements.lock (hash-checked), so the suite
passes with the versions it was written against. These tests fail when someone edits the
dependencies in pyproject.toml without running `make lock`, or when the environment the
suite runs in drifted from the lock.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)"
                    r"\s*(?:;\s*(?P<marker>[^\\]+?))?\s*\\?$")


def _lock() -> list[tuple[str, Version, Marker | None, list[str]]]:
    """(name, version, marker, via) for every entry of requirements.lock."""
    entries: list[tuple[str, Version, Marker | None, list[str]]] = []
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if not line or line[0] in " #":
            stripped = line.strip()
            if entries and stripped.startswith("#") and stripped not in ("# via", "#"):
                via = stripped.removeprefix("# via").strip().lstrip("#").strip()
                if via:
                    entries[-1][3].append(via)
            continue
        m = _ENTRY.match(line)
        assert m, f"requirements.lock: not an exact pin: {line!r}"
        marker = Marker(m["marker"]) if m["marker"] else None
        entries.append((canonicalize_name(m["name"]), Version(m["version"]), marker, []))
    return entries


def _declared() -> list[Requirement]:
    """Every requirement of pyproject.toml (dependencies and every extra), self-references left out."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    build = (ROOT / "requirements-build.in").read_text().splitlines()
    reqs += [Requirement(r) for r in build if r.strip() and not r.startswith("#")]
    return [r for r in reqs if canonicalize_name(r.name) != "fluvial"]


def test_every_lock_entry_is_pinned_with_hashes() -> None:
    text = (ROOT / "requirements.lock").read_text()
    entries = _lock()
    assert len(entries) >= 20
    assert text.count("--hash=sha256:") >= len(entries)


def test_every_declared_requirement_is_locked_within_its_bounds() -> None:
    lock: dict[str, list[Version]] = {}
    for name, version, _, _ in _lock():
        lock.setdefault(name, []).append(version)
    problems = []
    for req in _declared():
        versions = lock.get(canonicalize_name(req.name))
        if not versions:
            problems.append(f"{req} is not in requirements.lock")
        for v in versions or []:
            if not req.specifier.contains(v, prereleases=True):
                problems.append(f"requirements.lock pins {req.name}=={v}, outside {req}")
    assert not problems, "; ".join(problems) + ". Run `make lock` and commit requirements.lock."


def test_every_locked_package_is_still_wanted() -> None:
    """A dependency removed from pyproject.toml leaves no orphan in the lock (uv's `# via`)."""
    entries = _lock()
    names = {name for name, *_ in entries}
    orphans = []
    for name, _, _, via in entries:
        wanted = [v for v in via if v.startswith(("fluvial", "-r ")) or canonicalize_name(v.split()[0]) in names]
        if not wanted:
            orphans.append(name)
    assert not orphans, f"requirements.lock holds packages nothing requires: {orphans}; run `make lock`"


def test_this_environment_runs_exactly_the_lock() -> None:
    """The suite runs against the locked versions (make test installs them)."""
    drift = []
    for name, version, marker, _ in _lock():
        if marker is not None and not marker.evaluate():
            continue
        if name in ("pip", "uv"):
            continue
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            drift.append(f"{name}: not installed (lock: {version})")
            continue
        if installed != version:
            drift.append(f"{name}: {installed} installed, lock: {version}")
    if drift:
        pytest.fail("this environment differs from requirements.lock: " + "; ".join(drift)
                    + ". Run `make test` (it installs the lock) or `make lock` after changing pyproject.toml.")
