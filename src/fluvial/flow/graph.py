"""The Flow graph: a lazy, pure description of a computation (no I/O here).

A :class:`Pipeline` owns sources and sinks; every transformation returns a new
:class:`Flow` node whose parents are its inputs, so a pipeline is a DAG, as a
chain of RDDs is in Spark.  Runners (:mod:`fluvial.engine`) execute it.

Elements carry their event time (``ts`` in epoch ms) implicitly: log events
bring theirs, transformations keep the time of the element they came from.
Keyed operators take ``(key, value)`` pairs.  Aggregations produce *tables*:
in a batch run one row per key (and window), in a stream run the rows that
changed in each micro-batch with their current value -- so the final rows are
the same on every runner.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    NamedTuple,
    Protocol,
    TypeVar,
)

from fluvial.aggregators.base import Aggregator
from fluvial.errors import ConfigError
from fluvial.flow.actions import Actions
from fluvial.flow.pairs import PairOps
from fluvial.flow.storage import Persistence
from fluvial.windows.shapes import Sliding, Tumbling, WindowShape
from fluvial.windows.watermark import DEFAULT_FUTURE_MS, DEFAULT_HORIZON_MS, DEFAULT_IDLE_MS, EventTime

if TYPE_CHECKING:
    from fluvial.events.envelope import Event

T = TypeVar("T")
U = TypeVar("U")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
S = TypeVar("S")

_ids = itertools.count(1)

SOURCE_OPS = frozenset({"log", "text", "jsonl", "queue", "rate"})
NARROW_OPS = frozenset({"map", "flat_map", "filter", "map_partitions", "with_timestamps", "union", "lookup",
                        "repartition"})
SINK_OPS = frozenset({"view", "save", "foreach", "print", "file"})


class Windowed(NamedTuple):
    """A row of a windowed table: the key, the window ``(start_ms, end_ms)`` and the value."""

    key: Any
    window: tuple[int, int]
    value: Any


@dataclass(eq=False)
class Node:
    """One operator of the DAG.  ``params`` hold the operator's configuration."""

    op: str
    parents: tuple[Node, ...]
    params: dict[str, Any]
    label: str
    id: int = field(default_factory=lambda: next(_ids))

    def __repr__(self) -> str:
        return f"Node({self.op}#{self.id})"


_default_runner: Callable[[], Runner] | None = None


def set_default_runner(factory: Callable[[], Runner]) -> None:
    """What the actions (``collect``, ``count``, ``reduce``) run on without a ``runner``: the
    ``fluvial`` package sets the local batch runner (the flow package knows no engine)."""
    global _default_runner
    _default_runner = factory


def default_runner() -> Runner:
    if _default_runner is None:   # the package (always imported before this module) sets it
        activate = getattr(sys.modules.get("fluvial"), "_activate_defaults", None)
        if activate is not None:
            activate()
    if _default_runner is None:
        raise ConfigError("no runner for this action: pass runner=..., or set one with "
                          "fluvial.flow.graph.set_default_runner")
    return _default_runner()


def _call_site() -> str:
    """file:line of the user code that called the operator (for explain())."""
    frame: FrameType | None = sys._getframe(2)
    here = os.path.dirname(__file__)
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == here:
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


class Runner(Protocol):
    """What the actions (``collect``, ``count``, ``reduce``) need from a runner."""

    def collect(self, flow: Flow[T]) -> list[T]:
        """Run ``flow`` over all of its input and return its elements."""
        ...


class Pipeline:
    """A named set of flows and sinks: what a runner runs.

    Example:
        >>> p = Pipeline("demo")
        >>> words = p.from_queue([["a b", "b"]]).flat_map(str.split)
        >>> sorted(words.count_by_value().collect())
        [('a', 1), ('b', 2)]
    """

    def __init__(self, name: str) -> None:
        if not name or not all(c.isalnum() or c in "_-." for c in name):
            raise ConfigError(f"pipeline name {name!r}: use letters, digits, '_', '-' or '.'")
        self.name = name
        self.sinks: list[Node] = []

    # -- sources -----------------------------------------------------------
    def _source(self, op: str, **params: Any) -> Flow[Any]:
        return Flow(self, Node(op, (), params, _call_site()))

    def from_log(self, kind: str | None = None, *, future_margin_ms: int = DEFAULT_FUTURE_MS) -> Flow[Event]:
        """Events of one kind (or all kinds) from the log, with their event time.

        An event stamped more than ``future_margin_ms`` after the log stored it comes
        from a clock that is ahead: stream runs keep it, count it, and let it move no
        watermark (:mod:`fluvial.windows.watermark`).
        """
        if not isinstance(future_margin_ms, int) or isinstance(future_margin_ms, bool) or future_margin_ms < 0:
            raise ConfigError(f"future_margin_ms must be an integer number of milliseconds >= 0, "
                              f"got {future_margin_ms!r}")
        return self._source("log", kind=kind, future_ms=future_margin_ms)

    def text_file(self, path: str | os.PathLike[str]) -> Flow[str]:
        """Lines of a text file (without the newline); event time 0."""
        return self._source("text", path=os.fspath(path))

    def json_lines(self, path: str | os.PathLike[str], *, ts_field: str | None = None) -> Flow[Any]:
        """Objects of a JSON-lines file; event time from ``ts_field`` (ms) or 0."""
        return self._source("jsonl", path=os.fspath(path), ts_field=ts_field)

    def from_queue(self, batches: Sequence[Iterable[T]], *, one_at_a_time: bool = True,
                   start_ms: int = 0, interval_ms: int = 1000) -> Flow[T]:
        """A queue of batches (Spark's ``queueStream``): batch ``i`` has event time
        ``start_ms + i * interval_ms``; a stream run takes one batch per micro-batch."""
        frozen = [list(b) for b in batches]
        return self._source("queue", batches=frozen, one_at_a_time=one_at_a_time,
                            start_ms=start_ms, interval_ms=interval_ms)

    def rate(self, per_second: int, *, total: int, start_ms: int = 0) -> Flow[int]:
        """Integers ``0..total-1``, ``per_second`` of them per second of event time."""
        if per_second <= 0 or total < 0:
            raise ConfigError("rate(): per_second must be > 0 and total >= 0")
        return self._source("rate", per_second=per_second, total=total, start_ms=start_ms)

    # -- introspection -----------------------------------------------------
    def explain(self) -> str:
        """The lineage of every sink, like Spark's ``toDebugString``."""
        from fluvial.flow.explain import explain_nodes

        return explain_nodes(self.sinks)

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, sinks={len(self.sinks)})"


class Flow(PairOps[T], Actions[T], Persistence[T], Generic[T]):
    """A lazily evaluated collection of elements with event times.

    The core operators are here; the derived ones (``keys``, ``distinct``,
    ``cogroup``, the outer joins, ``sort_by``...) come from :class:`PairOps`, the
    actions beyond ``collect``/``count``/``reduce`` and the file sinks from
    :class:`Actions`, ``cache``/``persist`` from :class:`Persistence`.
    """

    def __init__(self, pipeline: Pipeline, node: Node) -> None:
        self.pipeline = pipeline
        self.node = node

    def _then(self, op: str, *parents: Flow[Any], **params: Any) -> Flow[Any]:
        for p in parents:
            if p.pipeline is not self.pipeline:
                raise ConfigError("cannot combine flows of two different pipelines")
        return Flow(self.pipeline, Node(op, (self.node, *(p.node for p in parents)), params, _call_site()))

    # -- narrow transformations ---------------------------------------------
    def map(self, f: Callable[[T], U]) -> Flow[U]:
        """Apply ``f`` to every element.

        Example:
            >>> Pipeline("m").from_queue([[1, 2]]).map(lambda x: x * 10).collect()
            [10, 20]
        """
        return self._then("map", f=f)

    def flat_map(self, f: Callable[[T], Iterable[U]]) -> Flow[U]:
        """Apply ``f`` and flatten: every element becomes zero or more elements."""
        return self._then("flat_map", f=f)

    def filter(self, predicate: Callable[[T], bool]) -> Flow[T]:
        """Keep the elements for which ``predicate`` is true."""
        return self._then("filter", f=predicate)

    def map_partitions(self, f: Callable[[Iterator[T]], Iterable[U]]) -> Flow[U]:
        """Apply ``f`` to an iterator over a whole chunk of one partition at once.

        Output elements take the event time of the latest input element of the chunk.
        """
        return self._then("map_partitions", f=f)

    def key_by(self, f: Callable[[T], K]) -> Flow[tuple[K, T]]:
        """Pair every element with a key: ``x -> (f(x), x)``."""
        return self._then("map", f=lambda x: (f(x), x), name="key_by")

    def with_timestamps(self, f: Callable[[T], int]) -> Flow[T]:
        """Set every element's event time (epoch ms) to ``f(element)``."""
        return self._then("with_timestamps", f=f)

    def union(self, *others: Flow[T]) -> Flow[T]:
        """All elements of this flow and of ``others``."""
        return self._then("union", *others)

    def lookup(self, table: Mapping[Any, Any] | Callable[[Any], Any], *, default: Any = None,
               inner: bool = True) -> Flow[tuple[Any, tuple[Any, Any]]]:
        """Join ``(key, value)`` pairs with a reference table: ``(k, (v, table[k]))``.

        Keys missing from the table are dropped (``inner=True``) or paired with ``default``.
        """
        return self._then("lookup", table=table, default=default, inner=inner)

    def join(self: Flow[tuple[K, V]], other: Flow[tuple[K, U]], *, window: WindowShape | None = None,
             allowed_lateness_ms: int = 0) -> Flow[tuple[K, tuple[V, U]]]:
        """Inner join of two keyed flows: ``(k, (v, w))`` for every pair with equal keys
        (and, with ``window``, in the same window).  Without a window the join keeps
        every element of both sides in state.
        """
        if isinstance(other, Mapping):
            return self.lookup(other)
        if not isinstance(other, Flow):
            raise ConfigError(f"join(): expected a Flow or a mapping, got {type(other).__name__}")
        return self._then("join", other, window=window, lateness_ms=allowed_lateness_ms)

    # -- keyed aggregations (tables) --------------------------------------------
    def _aggregate(self, agg: Aggregator[Any, Any, Any], *, keyed: bool, window: WindowShape | None = None,
                   lateness_ms: int = 0, name: str = "aggregate", time: EventTime | None = None) -> Table:
        t = time or EventTime()
        node = Node("aggregate", (self.node,), {"agg": agg, "keyed": keyed, "window": window,
                                                 "lateness_ms": lateness_ms, "name": name, "watermark": t.per,
                                                 "idle_ms": t.idle_ms, "horizon_ms": t.horizon_ms}, _call_site())
        return Table(self.pipeline, node)

    def reduce_by_key(self, f: Callable[[V, V], V]) -> Table:
        """Combine the values of each key with ``f`` (associative and commutative)."""
        from fluvial.aggregators import Reduce

        return self._aggregate(Reduce(f), keyed=True, name="reduce_by_key")

    def aggregate_by_key(self, agg: Aggregator[Any, Any, Any]) -> Table:
        """Aggregate the values of each key with a monoid ``agg`` (see :mod:`fluvial.aggregators`)."""
        return self._aggregate(agg, keyed=True, name="aggregate_by_key")

    def aggregate(self, agg: Aggregator[Any, Any, Any]) -> Table:
        """Aggregate all elements into one row (key ``None``)."""
        return self._aggregate(agg, keyed=False, name="aggregate")

    def count_by_value(self) -> Table:
        """Count each distinct element: rows ``(element, count)``."""
        from fluvial.aggregators import Count

        return self.map(lambda x: (x, x))._aggregate(Count(), keyed=True, name="count_by_value")

    def window(self, shape: WindowShape, *, allowed_lateness_ms: int = 0, watermark: str = "device",
               idle_timeout_ms: int = DEFAULT_IDLE_MS,
               correction_horizon_ms: int = DEFAULT_HORIZON_MS) -> WindowedFlow[T]:
        """Group elements into event-time windows; aggregate next.

        Event time in a stream run (:mod:`fluvial.windows.watermark`; batch runs see
        every event):

        * An element more than ``allowed_lateness_ms`` behind the largest event time
          seen from its device (``watermark="device"``, the default for events of the
          log) or in its input partition (``watermark="partition"``) is *late*: it is
          counted and kept on the ``late()`` side output.  A device that was offline and
          flushes its backlog in its own order is not late.
        * A view of the aggregation takes every element up to ``correction_horizon_ms``
          behind its partition's event time, late or not: a late element corrects the
          stored row of its window.  Older ones are counted late and left to the batch
          layer (a Kappa replay takes them all).
        * State downstream of the aggregation (``top()``, ``save_to``, per-key state)
          sees a window until its partition's event time has passed its end by
          ``allowed_lateness_ms + idle_timeout_ms``; so a device quiet (or behind) for
          longer than ``idle_timeout_ms`` holds no window open.
        """
        return WindowedFlow(self, shape, allowed_lateness_ms,
                            EventTime(watermark, idle_timeout_ms, correction_horizon_ms, allowed_lateness_ms))

    def reduce_by_key_and_window(self, f: Callable[[V, V], V], length_ms: int, slide_ms: int | None = None,
                                 inv: Callable[[V, V], V] | None = None, *,
                                 allowed_lateness_ms: int = 0) -> Table:
        """Spark's ``reduceByKeyAndWindow``: ``f`` over each key's values per sliding
        window; ``inv`` (the inverse of ``f``) makes sliding cheaper."""
        from fluvial.aggregators import Reduce

        shape: WindowShape = (Tumbling(length_ms=length_ms) if slide_ms is None or slide_ms == length_ms
                              else Sliding(length_ms=length_ms, slide_ms=slide_ms))
        return self._aggregate(Reduce(f, inv), keyed=True, window=shape, lateness_ms=allowed_lateness_ms,
                               name="reduce_by_key_and_window")

    # -- per-key state -------------------------------------------------------------
    def map_with_state(self: Flow[tuple[K, V]], f: Callable[[K, V, S | None], tuple[S | None, U]]) -> Flow[U]:
        """Per-key state (Spark's ``mapWithState``; "one actor per key").

        ``f(key, value, state) -> (new_state, output)`` is called for each
        ``(key, value)`` in event-time order within a micro-batch; ``new_state``
        None removes the state.  Emits ``output`` for every input.
        """
        return Flow(self.pipeline, Node("state", (self.node,), {"f": f, "mode": "map"}, _call_site()))

    def update_state_by_key(self: Flow[tuple[K, V]], f: Callable[[list[V], S | None], S | None]) -> Table:
        """Spark's ``updateStateByKey``: ``f(new_values, state) -> new_state`` once per key and
        micro-batch; the table's rows are ``(key, state)``."""
        return Table(self.pipeline, Node("state", (self.node,), {"f": f, "mode": "update"}, _call_site()))

    # -- sinks ------------------------------------------------------------------------------
    def _sink(self, op: str, **params: Any) -> None:
        self.pipeline.sinks.append(Node(op, (self.node,), params, _call_site()))

    def foreach(self, f: Callable[[T], None]) -> None:
        """Call ``f`` on every element (at least once per element in a stream run)."""
        self._sink("foreach", f=f)

    def print(self, n: int = 10) -> None:
        """Print the first ``n`` elements of every batch, under a ``Time: ... ms`` header."""
        self._sink("print", n=n)

    def save_to(self, store: Any, table: str, columns: Sequence[str], *, key_columns: int = 1) -> None:
        """Upsert rows (tuples) into ``table`` of ``store`` (the seed's ``saveToCassandra``).

        ``store`` None means the runner's serving store (written in the micro-batch's
        own commit); a store object or a store URL (``"cassandra://127.0.0.1/spark"``,
        opened by the runner) is written after each commit.  Rows are upserted on the
        first ``key_columns`` columns, so replays and restarts are idempotent.
        """
        if not columns:
            raise ConfigError("save_to(): name at least one column")
        if isinstance(table, str) and table.lower().startswith("fluvial_"):
            raise ConfigError(f"save_to(): invalid table name {table!r}: names starting with 'fluvial_' are "
                              "reserved for the store itself")
        self._sink("save", store=store, table=table, columns=list(columns), key_columns=key_columns)

    def to_view(self, name: str) -> None:
        """Serve ``(key, value)`` pairs as view ``name``, keeping the latest value per key
        (processing order).  Aggregated tables (see :class:`Table`) merge instead."""
        self._sink("view", name=name)

    # -- actions --------------------------------------------------------------------
    def collect(self, runner: Runner | None = None) -> list[T]:
        """Run the flow (default: a local batch runner) and return its elements."""
        return (runner or default_runner()).collect(self)

    def count(self, runner: Runner | None = None) -> int:
        return len(self.collect(runner))

    def reduce(self, f: Callable[[T, T], T], runner: Runner | None = None) -> T:
        items = self.collect(runner)
        if not items:
            raise ValueError("reduce() of an empty flow")
        acc = items[0]
        for item in items[1:]:
            acc = f(acc, item)
        return acc

    def explain(self) -> str:
        from fluvial.flow.explain import explain_nodes

        return explain_nodes([self.node])

    def __repr__(self) -> str:
        return f"Flow({self.node.op}#{self.node.id} of {self.pipeline.name!r})"


class Table(Flow[Any]):
    """The result of an aggregation: rows ``(key, value)``, or :class:`Windowed`
    rows when windowed.  ``to_view`` stores it so queries merge batch and realtime."""

    def top(self, n: int) -> Table:
        """Per window (or overall), the ``n`` keys with the largest values, by value
        descending then key ascending: one row ``(None, [[key, value], ...])``."""
        from fluvial.aggregators import TopByValue

        if self.node.op != "aggregate" or not self.node.params["keyed"]:
            raise ConfigError("top(n) follows a keyed aggregation (reduce_by_key, aggregate_by_key, ...)")
        p = self.node.params
        inner = p["agg"]
        parent: Flow[Any] = Flow(self.pipeline, self.node.parents[0]).map(lambda kv: (None, kv))
        return parent._aggregate(TopByValue(inner, n), keyed=True, window=p["window"],
                                 lateness_ms=p["lateness_ms"], name=f"top({n})",
                                 time=EventTime(p["watermark"], p["idle_ms"], p["horizon_ms"]))

    def late(self) -> Flow[Any]:
        """The side output of late elements of a windowed aggregation (stream runs)."""
        if self.node.op != "aggregate" or self.node.params["window"] is None:
            raise ConfigError("late() is the side output of a windowed aggregation")
        return Flow(self.pipeline, Node("late", (self.node,), {}, _call_site()))

    def final(self) -> Flow[Any]:
        """Each window's row once, when the window is closed (``emit="final"``), instead of
        every change of it: in a stream run, once every partition's event time has passed the
        window's end by the allowed lateness plus the idle timeout
        (:mod:`fluvial.windows.watermark`), with what it holds then; a batch run has every
        window closed at its end.  A view of the table keeps updating in place."""
        if self.node.op != "aggregate" or self.node.params["window"] is None:
            raise ConfigError("final() gives the closed windows of a windowed aggregation: window(...) first")
        return Flow(self.pipeline, Node("final", (self.node,), {}, _call_site()))

    def _emitted(self, emit: str) -> Flow[Any]:
        if emit == "update":
            return self
        if emit == "final":
            return self.final()
        raise ConfigError(f"emit must be 'update' (every change of a row) or 'final' (each window once, "
                          f"when closed), got {emit!r}")

    def foreach(self, f: Callable[[Any], None], *, emit: str = "update") -> None:
        """Call ``f`` on every row that changed (``emit="final"``: on each closed window's row once)."""
        Flow.foreach(self._emitted(emit), f)

    def print(self, n: int = 10, *, emit: str = "update") -> None:
        """Print the first ``n`` changed rows of every batch (``emit="final"``: closed windows only)."""
        Flow.print(self._emitted(emit), n)

    def save_to(self, store: Any, table: str, columns: Sequence[str], *, key_columns: int = 1,
                emit: str = "update") -> None:
        """Upsert the rows that changed (``emit="final"``: each closed window's row once) into
        ``table`` of ``store`` (see :meth:`Flow.save_to`)."""
        Flow.save_to(self._emitted(emit), store, table, columns, key_columns=key_columns)


class WindowedFlow(Generic[T]):
    """Elements grouped into windows; choose the aggregation next."""

    def __init__(self, flow: Flow[T], shape: WindowShape, lateness_ms: int, time: EventTime) -> None:
        self._flow, self.shape, self.lateness_ms, self.time = flow, shape, lateness_ms, time

    def _agg(self, agg: Aggregator[Any, Any, Any], keyed: bool, name: str) -> Table:
        return self._flow._aggregate(agg, keyed=keyed, window=self.shape, lateness_ms=self.lateness_ms, name=name,
                                     time=self.time)

    def aggregate(self, agg: Aggregator[Any, Any, Any]) -> Table:
        """One row per window (key ``None``) aggregating every element."""
        return self._agg(agg, False, "window.aggregate")

    def aggregate_by_key(self, agg: Aggregator[Any, Any, Any]) -> Table:
        """One row per key and window from ``(key, value)`` pairs."""
        return self._agg(agg, True, "window.aggregate_by_key")

    def reduce_by_key(self, f: Callable[[V, V], V], inv: Callable[[V, V], V] | None = None) -> Table:
        from fluvial.aggregators import Reduce

        return self._agg(Reduce(f, inv), True, "window.reduce_by_key")

    def count(self) -> Table:
        from fluvial.aggregators import Count

        return self._agg(Count(), False, "window.count")

    def count_by_value(self) -> Table:
        from fluvial.aggregators import Count

        return WindowedFlow(self._flow.map(lambda x: (x, x)), self.shape, self.lateness_ms, self.time)._agg(
            Count(), True, "window.count_by_value")
