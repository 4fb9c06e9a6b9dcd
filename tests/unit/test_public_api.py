"""The public surface: curated, sorted, complete, and light to import."""

import subprocess
import sys

import fluvial


def _isort_style(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions (ruff's RUF022 order)."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def test_all_is_sorted_and_unique():
    assert fluvial.__all__ == sorted(set(fluvial.__all__), key=_isort_style)


def test_all_names_exist_and_public_members_are_listed():
    for name in fluvial.__all__:
        assert hasattr(fluvial, name), name
    public = {n for n, v in vars(fluvial).items()
              if not n.startswith("_") and not isinstance(v, type(sys)) and n != "annotations"}
    assert public == set(fluvial.__all__)


def test_import_does_not_pull_heavy_or_optional_dependencies():
    code = ("import sys, fluvial; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('pyspark', 'py4j', 'tqdm', 'paho', 'nats', 'psycopg', 'pyarrow', 'uvicorn', 'starlette')];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
