"""What a stream run refuses before its first micro-batch: operators that need all of their
input, and tables it could not keep exact."""

from __future__ import annotations

from fluvial.engine.plan import Plan
from fluvial.errors import UnsupportedOperation
from fluvial.flow.graph import NARROW_OPS
from fluvial.windows.shapes import Session

__all__ = ["check_streamable"]


def check_streamable(plan: Plan) -> None:
    """Refuse, before the first micro-batch, what a stream run cannot do exactly.

    A session-windowed table feeding ``save_to``: a session that grows or merges
    with another in a later micro-batch gets a new window, and the rows already
    upserted under the old window cannot be retracted through the user's
    functions, so the table would keep superseded sessions.  ``to_view``
    merges session fragments exactly; use it (or a batch run) instead.
    """
    for node in plan.bounded:
        what = node.params.get("name", "sort_by")
        raise UnsupportedOperation(f"{what} at {node.label} needs all of its input before it emits, and a "
                                   f"stream run never has all of it: {_UNBOUNDED.get(what, _UNBOUNDED['sort_by'])}")
    for sink in plan.sinks:
        if sink.op != "save":
            continue
        node = sink.parents[0]
        while node.op in NARROW_OPS and len(node.parents) == 1:
            node = node.parents[0]
        if node.op == "aggregate" and isinstance(node.params["window"], Session):
            raise UnsupportedOperation(
                f"save_to at {sink.label}: a stream run cannot save a session-windowed table "
                f"(sessions of {node.label} grow and merge across micro-batches, and rows saved "
                "under an old session window cannot be retracted). Serve it with to_view(), "
                "which merges sessions exactly, or save it from a batch run")


_OUTER = ("an unmatched key may be matched by a later micro-batch, and the row with None emitted now "
          "could not be taken back. In a stream use join() (inner) or cogroup() (whose rows update in "
          "place); run the outer join in a batch run (--mode batch)")
_UNBOUNDED = {
    "sort_by": "there is no end to sort up to. Sort in a batch run (--mode batch, or take_ordered), "
               "or keep the n largest per window in a stream with window(...) ... top(n)",
    "left_outer_join": _OUTER, "right_outer_join": _OUTER, "full_outer_join": _OUTER,
    "subtract_by_key": "the other flow may gain the key in a later micro-batch, and a pair emitted now "
                       "could not be taken back. In a stream use cogroup() (whose rows update in place); "
                       "run subtract_by_key in a batch run (--mode batch)",
}
