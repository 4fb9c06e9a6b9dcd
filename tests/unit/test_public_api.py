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


def test_every_exception_class_is_in_the_documented_tree() -> None:
    """errors.py draws the tree of every exception fluvial raises: each class defined anywhere
    in the package that derives from FluvialError appears in it by name."""
    import importlib
    import inspect
    import pkgutil
    import re

    import fluvial
    from fluvial import errors

    tree = errors.__doc__ or ""
    missing = []
    skip = ("fluvial.engine.spark",)   # an optional extra (pyspark): not imported here
    for info in pkgutil.walk_packages(fluvial.__path__, "fluvial."):
        if info.name.startswith(skip):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, errors.FluvialError)
                    and value.__module__ == info.name and not re.search(rf"(─ |^    ){name}\b", tree, re.M)):
                missing.append(f"{info.name}.{name}")
    assert not missing, f"not in the tree of fluvial/errors.py: {missing}"
