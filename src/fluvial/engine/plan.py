"""Planning: from a pipeline's sinks to an ordered, checked list of operators."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from fluvial.aggregators import Last
from fluvial.aggregators.base import Aggregator
from fluvial.errors import ConfigError
from fluvial.flow.graph import NARROW_OPS, SOURCE_OPS, Node, Pipeline
from fluvial.windows.shapes import Explicit, WindowShape
from fluvial.windows.watermark import DEFAULT_FUTURE_MS, DEFAULT_HORIZON_MS, DEFAULT_IDLE_MS

# Operators that need the event time of their input elements.
_TIME_CONSUMERS = {"state", "join", "late", "final"}


@dataclass
class ViewSpec:
    """What a view sink stores: the accumulators of an aggregation, or for a
    flow of ``(key, value)`` pairs the latest value per key (a :class:`Last`
    accumulator stamped with the micro-batch that wrote it)."""

    name: str
    sink: Node
    source: Node
    aggregator: Any
    window: WindowShape | None


@dataclass
class Plan:
    name: str
    nodes: list[Node]                      # topological order, sources first
    sinks: list[Node]
    index: dict[int, int]                  # node.id -> stable position (checkpoint key)
    children: dict[int, list[Node]]
    timed: set[int]                        # nodes whose output carries event times
    views: dict[str, ViewSpec]
    boundary: list[Node]                   # first aggregates after the narrow part
    two_phase: bool                        # every path from a source meets an aggregate first
    stateful: set[int] = field(default_factory=set)   # aggregates with consumers other than views
    fingerprint: str = ""                  # of ``shape``: what a checkpoint's state must fit
    prefix: set[int] = field(default_factory=set)     # sources and the narrow operators right after them
    shape: list[str] = field(default_factory=list)    # describe() of each node, in order
    legacy_fingerprint: str = ""           # operators and edges only (older checkpoints)
    pipeline: Any = None                   # the Pipeline it was compiled from

    @property
    def bounded(self) -> list[Node]:
        """Operators that need all of their input before they emit (batch runs only)."""
        return [n for n in self.nodes if n.op == "sort" or n.params.get("bounded")]

    def fits(self, fingerprint: str) -> bool:
        """Whether state checkpointed under ``fingerprint`` fits this plan."""
        return fingerprint in (self.fingerprint, self.legacy_fingerprint)

    @property
    def sources(self) -> list[Node]:
        return [n for n in self.nodes if n.op in SOURCE_OPS]


def compile_plan(pipeline: Pipeline, sinks: list[Node] | None = None, *,
                 cut: frozenset[int] = frozenset()) -> Plan:
    """Order and check the operators that feed ``sinks`` (default: all of the pipeline's).

    ``cut``: nodes whose output is known already (persisted flows a run kept): the plan
    holds them without what feeds them, so a run gives their output to the executor
    (``Executor.run(outputs=...)``) and reads none of their sources.
    """
    sinks = list(pipeline.sinks) if sinks is None else list(sinks)
    if not sinks:
        raise ConfigError(f"pipeline {pipeline.name!r} has no sink: end a flow with to_view(), "
                          "save_to(), print() or foreach()")
    order: list[Node] = []
    seen: set[int] = set()

    def visit(node: Node) -> None:
        if node.id in seen:
            return
        seen.add(node.id)
        if node.id not in cut:
            for parent in node.parents:
                visit(parent)
        order.append(node)

    for sink in sinks:
        visit(sink)
    index = {n.id: i for i, n in enumerate(order)}
    children: dict[int, list[Node]] = {n.id: [] for n in order}
    for n in order:
        for parent in n.parents:
            if parent.id in children:
                children[parent.id].append(n)

    timed: set[int] = set()
    for n in reversed(order):
        needs = any(
            c.op in _TIME_CONSUMERS
            or (c.op == "aggregate" and c.params["window"] is not None)
            or (c.op in NARROW_OPS and c.op != "with_timestamps" and c.id in timed)
            for c in children[n.id]
        )
        if needs or n.op in ("aggregate", "cache"):  # a kept result may serve a later windowed action
            timed.add(n.id)

    views: dict[str, ViewSpec] = {}
    for sink in sinks:
        if sink.op != "view":
            continue
        name = sink.params["name"]
        if name in views:
            raise ConfigError(f"two sinks write view {name!r} (at {views[name].sink.label} and {sink.label})")
        src = sink.parents[0]
        if src.op == "aggregate":
            views[name] = ViewSpec(name, sink, src, src.params["agg"], src.params["window"])
        else:
            views[name] = ViewSpec(name, sink, src, Last(), Explicit())

    stateful = {n.id for n in order if n.op == "aggregate"
                and any(c.op != "view" for c in children[n.id])}

    # The narrow prefix: nodes reachable from sources through narrow operators only.
    narrow: set[int] = set()
    for n in order:
        if n.op in SOURCE_OPS or (n.op in NARROW_OPS and all(p.id in narrow for p in n.parents)):
            narrow.add(n.id)
    boundary = [n for n in order if n.id not in narrow and any(p.id in narrow for p in n.parents)]
    two_phase = bool(boundary) and all(
        n.op == "aggregate" and all(p.id in narrow for p in n.parents) for n in boundary)

    shape = [describe(n, index) for n in order if n.id not in cut]
    fingerprint = "2:" + hashlib.sha1("|".join(shape).encode()).hexdigest()[:16]
    legacy = hashlib.sha1("|".join(
        f"{n.op}:{[index[p.id] for p in n.parents]}" for n in order if n.id not in cut).encode()).hexdigest()[:16]
    return Plan(pipeline.name, order, sinks, index, children, timed, views, boundary, two_phase,
                stateful, fingerprint, narrow, shape, legacy, pipeline)


def describe(node: Node, index: dict[int, int]) -> str:
    """What the meaning of ``node``'s state depends on: its operator, its inputs and its
    parameters (window shape, aggregator, lateness, keys, tables...), not the code of its
    functions (a fix in a lambda keeps the state) nor what a print or foreach sink shows."""
    params = "" if node.op in _OUTPUT_ONLY else ", ".join(
        f"{key}={_param(node.params[key])}" for key in sorted(node.params)
        if not (key in _DEFAULTS and node.params[key] == _DEFAULTS[key]))
    return f"{node.op}({params}) <- {[index[p.id] for p in node.parents]}"


# Parameters added later, left out at their defaults so that plans written before keep
# their fingerprint (their state means the same).
_DEFAULTS: dict[str, Any] = {"watermark": "device", "idle_ms": DEFAULT_IDLE_MS, "horizon_ms": DEFAULT_HORIZON_MS,
                             "future_ms": DEFAULT_FUTURE_MS}

# Operators whose parameters change what is shown or kept, never the meaning of state.
_OUTPUT_ONLY = {"print", "foreach", "collect", "file", "cache"}


def _param(value: Any) -> str:
    if isinstance(value, Aggregator):
        return json.dumps(value.spec(), sort_keys=True, default=str)
    if isinstance(value, WindowShape):
        return json.dumps(value.spec(), sort_keys=True, default=str)
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_param(v) for v in value) + "]"
    if callable(value):
        return "fn"
    return type(value).__name__


def code_digest(plan: Plan) -> str:
    """What ``plan`` computes, down to the code of its functions (unlike ``Plan.fingerprint``,
    which a fix in a lambda keeps): two processes agree on it when they run the same flow
    file.  A function's source is hashed where Python can find it (a file deployed on several
    machines gives the same digest under any Python version), else its bytecode; values a
    closure captured count too.
    """
    digest = hashlib.sha256()
    for node in plan.nodes:
        digest.update(describe(node, plan.index).encode())
        for key in sorted(node.params):
            _hash_code(digest, node.params[key], 0)
    return digest.hexdigest()[:24]


def _hash_code(digest: Any, value: Any, depth: int) -> None:
    import inspect

    if depth > 3:
        return
    if isinstance(value, list | tuple):
        for item in value:
            _hash_code(digest, item, depth + 1)
        return
    code = getattr(value, "__code__", None)
    if code is None:
        if isinstance(value, Aggregator):   # reduce_by_key(fn) and the like keep their function
            for item in vars(value).values():
                if callable(item):
                    _hash_code(digest, item, depth + 1)
        elif callable(value) and not isinstance(value, type):
            digest.update(f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value))}".encode())
        return
    try:
        digest.update(inspect.getsource(value).encode())
    except (OSError, TypeError):
        digest.update(code.co_code + repr(code.co_names).encode() + repr(code.co_consts).encode())
    for cell in getattr(value, "__closure__", None) or ():
        try:
            content = cell.cell_contents
        except ValueError:   # an empty cell
            continue
        if callable(content):
            _hash_code(digest, content, depth + 1)
        elif content is None or isinstance(content, bool | int | float | str | bytes | tuple | frozenset):
            digest.update(repr(content).encode())
