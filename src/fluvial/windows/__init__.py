"""Event-time windows: shapes, pane assignment and query-time composition (pure).

Windows are half-open ``[start_ms, end_ms)``.  Runners never materialise a
sliding window per event: every event goes to exactly one *pane* (the
greatest common divisor of length and slide), views store pane accumulators,
and :func:`compose` builds windows from panes with the aggregator's ``merge``
(and ``subtract`` where it exists).  Session windows are stored as fragments
(sessions of part of the data) and composed by merging fragments that
overlap, which gives exactly the sessions of all the data.
"""

from fluvial.windows.shapes import (
    Explicit,
    Session,
    Sliding,
    Tumbling,
    WindowShape,
    compose,
    shape_from_spec,
)
from fluvial.windows.watermark import Watermarks

__all__ = ["Explicit", "Session", "Sliding", "Tumbling", "Watermarks", "WindowShape", "compose", "shape_from_spec"]
