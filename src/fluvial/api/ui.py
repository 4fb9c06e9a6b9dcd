"""The web UI of ``fluvial serve`` (``/ui``): live views, runner metrics and lineage.

One self-contained page (no assets from the internet) that polls the JSON
API every two seconds: the event rate, per-runner micro-batch duration, lag
and late events, the views with their versions, the rows of the selected
view, and each pipeline's lineage (``explain()``, as Spark's toDebugString).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["HEADERS", "page"]

HEADERS = {
    "Content-Security-Policy": "frame-ancestors 'none'",  # no other site may frame it (clickjacking)
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
"""Response headers of the page. The page only reads (GET); the API refuses state-changing requests
from other origins (:mod:`fluvial.api.origin`), so an admin action added here is CSRF-safe as long
as it is a ``fetch`` POST from this page: browsers send its ``Origin``, which is the server's own."""


@cache
def page() -> str:
    """The page (``ui.html``, shipped with the package)."""
    return resources.files("fluvial.api").joinpath("ui.html").read_text(encoding="utf-8")
