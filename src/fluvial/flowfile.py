"""Flow files: a Python file that defines ``fluvial.Pipeline`` objects at module level.

Loaded by ``fluvial run`` and ``fluvial explain``, by ``fluvial serve`` for its flows and for
reprocessing with new code, and by ``fluvial demo``.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import traceback
from pathlib import Path

from fluvial.errors import ConfigError
from fluvial.flow.graph import Pipeline

__all__ = ["FlowFileError", "load_pipelines"]


class FlowFileError(ConfigError):
    """The flow file could not be imported; carries the traceback for --debug."""

    def __init__(self, message: str, tb: str) -> None:
        super().__init__(message)
        self.tb = tb


def load_pipelines(path: str) -> list[Pipeline]:
    """Import a flow file (not as ``__main__``) and return its module-level pipelines.

    The file's directory goes first on ``sys.path`` so it can import its neighbours;
    functions and classes it defines are pickled by value, so the views they
    write can be read by other processes.

    Raises:
        ConfigError: The file is missing, fails on import, or defines no pipeline.
    """
    file = Path(path).resolve()
    if not file.is_file():
        raise ConfigError(f"no flow file at {path}")
    name = "fluvial_flow_" + re.sub(r"\W", "_", file.stem)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path} cannot be imported as Python (name it *.py)")
    module = importlib.util.module_from_spec(spec)
    folder = str(file.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    except (ImportError, ValueError):
        pass
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise FlowFileError(_import_error(file, exc), traceback.format_exc()) from None
    found: list[Pipeline] = []
    for value in vars(module).values():
        if isinstance(value, Pipeline) and all(value is not p for p in found):
            found.append(value)
    if not found:
        raise ConfigError(
            f"{path} defines no pipeline: create one at module level and give it a sink, e.g.\n"
            "    import fluvial\n"
            "    p = fluvial.Pipeline(\"wordcount\")\n"
            "    p.from_log(\"line\").flat_map(lambda e: e.payload[\"text\"].split())"
            ".count_by_value().to_view(\"words\")")
    names = [p.name for p in found]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ConfigError(f"{path}: several pipelines are named {', '.join(clash)}; "
                          "give each a different name (it names its checkpoint)")
    return found


def _import_error(file: Path, exc: BaseException) -> str:
    what = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        return f"{exc.filename}, line {exc.lineno}: {type(exc).__name__}: {exc.msg}"
    line = None
    tb = exc.__traceback__
    while tb is not None:  # the innermost frame that is in the flow file
        if Path(tb.tb_frame.f_code.co_filename).resolve() == file:
            line = tb.tb_lineno
        tb = tb.tb_next
    where = f"{file}, line {line}" if line else str(file)
    return f"{where}: {what} (while importing the flow file; --debug shows the traceback)"
