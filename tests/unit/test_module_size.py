"""No module over 600 lines (issue 9, STYLE.md: one concept per module, split by family
before a module grows).

Every module under ``src/fluvial`` has at most :data:`LIMIT` lines, except those of
:data:`OVER`, which may not grow.  A module of ``OVER`` that is split (at most
``LIMIT`` lines) or gone must leave the list, so that it only ever gets shorter.
"""

from __future__ import annotations

from pathlib import Path

import fluvial

SRC = Path(fluvial.__file__).resolve().parent
LIMIT = 600

# Modules over LIMIT today, with their line count then: each may shrink, none may grow.
# Split one along its seams (serving/sqlite/ shows how) and remove it from here.
OVER: dict[str, int] = {}


def line_counts(root: Path = SRC) -> dict[str, int]:
    """The number of lines of every module under ``root`` (as ``wc -l`` counts them), by path."""
    return {path.relative_to(root).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
            for path in sorted(root.rglob("*.py"))}


def test_no_module_is_over_the_limit() -> None:
    over = {name: n for name, n in line_counts().items() if n > LIMIT and name not in OVER}
    assert not over, (
        f"modules over {LIMIT} lines: {over}. Split each by concept (STYLE.md: one concept per "
        "module) before it grows; the allow-list OVER is for the modules that were over already")


def test_the_modules_over_the_limit_do_not_grow() -> None:
    counts = line_counts()
    grown = {name: f"{counts[name]} lines, listed with {n}" for name, n in OVER.items()
             if name in counts and counts[name] > n}
    assert not grown, (
        f"modules of the allow-list grew: {grown}. Move what was added (or more) to a module "
        "of its own instead")


def test_the_allow_list_holds_only_modules_still_over_the_limit() -> None:
    counts = line_counts()
    stale = {name: counts.get(name, "gone") for name in OVER if counts.get(name, 0) <= LIMIT}
    assert not stale, (
        f"modules of the allow-list OVER are now within {LIMIT} lines or gone: {stale}. "
        "Remove them from OVER in tests/unit/test_module_size.py")


def test_every_module_is_counted_in_subpackages_too(tmp_path: Path) -> None:
    (tmp_path / "serving" / "sqlite").mkdir(parents=True)
    (tmp_path / "top.py").write_text('"""Doc."""\n\nX = 1\n', encoding="utf-8")
    (tmp_path / "serving" / "sqlite" / "store.py").write_text("x = 1\n" * 601, encoding="utf-8")
    assert line_counts(tmp_path) == {"serving/sqlite/store.py": 601, "top.py": 3}
