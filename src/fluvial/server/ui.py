"""The web UI of ``fluvial serve`` (``/ui``): live views, runner metrics and lineage.

One self-contained page (no assets from the internet) that polls the JSON
API every two seconds: the event rate, per-runner micro-batch duration, lag
and late events, the views with their versions, the rows of the selected
view, and each pipeline's lineage (``explain()``, as Spark's toDebugString).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["page"]


@cache
def page() -> str:
    """The page (``ui.html``, shipped with the package)."""
    return resources.files("fluvial.server").joinpath("ui.html").read_text(encoding="utf-8")
