"""Spark's everyday operators on flows, built from the core ones (no runner code of their own).

Keyed flows hold ``(key, value)`` pairs: ``keys``, ``values``, ``map_values``,
``flat_map_values``, ``group_by_key``, ``cogroup``, the outer joins and
``subtract_by_key``; any flow: ``distinct``, ``sample``, ``sort_by``,
``repartition`` and ``coalesce``.  Each is a ``map``/``flat_map``/``filter``, an
aggregation or per-key state underneath, so every runner offers it with the
same results (STYLE.md rule 3: a small core, a derived library).

What needs all of its input before it can emit -- a sort, an outer join, a
subtraction (an unmatched key may still be matched later) -- is *bounded*: batch
runs offer it, stream runners refuse it before they start, saying what to use.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import xxhash

from fluvial.errors import ConfigError

if TYPE_CHECKING:
    from fluvial.flow.graph import Flow, Table

T = TypeVar("T")
U = TypeVar("U")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
W = TypeVar("W")

__all__ = ["PairOps", "sample_keeps"]


def _callable(operator_name: str, f: object) -> None:
    if not callable(f):
        raise ConfigError(f"{operator_name}(): expected a function, got {type(f).__name__} {f!r:.40}")


def _count(operator_name: str, n: object, *, least: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < least:
        raise ConfigError(f"{operator_name}(): expected an integer >= {least}, got {n!r}")
    return n


def sample_keeps(element: Any, fraction: float, seed: int) -> bool:
    """Whether ``sample(fraction, seed)`` keeps ``element``: the 64-bit xxHash of
    ``repr(element)`` (UTF-8) with ``seed`` is below ``fraction * 2**64``.  A function
    of the element alone, so every runner, and every replay of a micro-batch, keeps
    the same elements (equal elements are kept or dropped together)."""
    return bool(xxhash.xxh64_intdigest(repr(element).encode(), seed) < fraction * 18446744073709551616)


def _first_seen(key: Any, _value: Any, state: bool | None) -> tuple[bool, tuple[Any] | None]:
    return True, (key,) if state is None else None


def _tagged(side: int) -> Callable[[tuple[Any, Any]], tuple[Any, tuple[int, Any]]]:
    return lambda kv: (kv[0], (side, kv[1]))


def _split_sides(tagged: list[tuple[int, Any]]) -> tuple[list[Any], list[Any]]:
    return [v for side, v in tagged if side == 0], [v for side, v in tagged if side == 1]


class PairOps(Generic[T]):
    """The derived operators of :class:`~fluvial.flow.graph.Flow` (mixed into it)."""

    if TYPE_CHECKING:
        def _then(self, op: str, *parents: Flow[Any], **params: Any) -> Flow[Any]: ...

        def union(self, *others: Flow[T]) -> Flow[T]: ...

        def aggregate_by_key(self, agg: Any) -> Table: ...

    # -- keyed flows ---------------------------------------------------------------
    def keys(self: PairOps[tuple[K, V]]) -> Flow[K]:
        """The keys of ``(key, value)`` pairs."""
        return self._then("map", f=operator.itemgetter(0), name="keys")

    def values(self: PairOps[tuple[K, V]]) -> Flow[V]:
        """The values of ``(key, value)`` pairs."""
        return self._then("map", f=operator.itemgetter(1), name="values")

    def map_values(self: PairOps[tuple[K, V]], f: Callable[[V], U]) -> Flow[tuple[K, U]]:
        """``(k, v) -> (k, f(v))``: the key is kept.

        Example:
            >>> from fluvial.flow.graph import Pipeline
            >>> Pipeline("mv").from_queue([[("a", 1), ("b", 2)]]).map_values(lambda v: v * 10).collect()
            [('a', 10), ('b', 20)]
        """
        _callable("map_values", f)
        return self._then("map", f=lambda kv: (kv[0], f(kv[1])), name="map_values")

    def flat_map_values(self: PairOps[tuple[K, V]], f: Callable[[V], Iterable[U]]) -> Flow[tuple[K, U]]:
        """``(k, v) -> (k, u)`` for every ``u`` in ``f(v)``."""
        _callable("flat_map_values", f)
        return self._then("flat_map", f=lambda kv: [(kv[0], u) for u in f(kv[1])], name="flat_map_values")

    def group_by_key(self: PairOps[tuple[K, V]]) -> Table:
        """Every value of each key, as a list (in no particular order): rows ``(key, [values])``.

        As in Spark, prefer ``reduce_by_key`` or ``aggregate_by_key`` when the values
        are combined afterwards: they fold values as they come, where this keeps every
        value of every key (in memory, in the view, in a stream's state).
        """
        from fluvial.aggregators import Collect

        return self.aggregate_by_key(Collect())

    def cogroup(self: PairOps[tuple[K, V]], other: Flow[tuple[K, W]]) -> Flow[tuple[K, tuple[list[V], list[W]]]]:
        """Per key, the values of both flows: ``(k, ([v, ...], [w, ...]))`` (lists in no
        particular order).  In a stream run a key's row is emitted again, whole, whenever
        either side gains a value (a view keeps the latest)."""
        mine = self._then("map", f=_tagged(0), name="cogroup")
        theirs = other._then("map", f=_tagged(1), name="cogroup")
        grouped = mine.union(theirs).group_by_key()
        return grouped.map_values(_split_sides)

    def _outer(self: PairOps[tuple[K, V]], other: Flow[tuple[K, W]], name: str,
               pairs: Callable[[list[Any], list[Any]], list[Any]]) -> Flow[Any]:
        grouped = self.cogroup(other)
        return grouped._then("flat_map", f=lambda kv: [(kv[0], p) for p in pairs(*kv[1])], name=name,
                             bounded=True)

    def left_outer_join(self: PairOps[tuple[K, V]], other: Flow[tuple[K, W]]
                        ) -> Flow[tuple[K, tuple[V, W | None]]]:
        """``(k, (v, w))`` for every pair with equal keys, and ``(k, (v, None))`` for a
        ``v`` whose key ``other`` lacks.  Batch runs only: in a stream, a key unmatched
        now may be matched later (use ``join`` or ``cogroup`` there)."""
        return self._outer(other, "left_outer_join", lambda vs, ws: [(v, w) for v in vs for w in (ws or [None])])

    def right_outer_join(self: PairOps[tuple[K, V]], other: Flow[tuple[K, W]]
                         ) -> Flow[tuple[K, tuple[V | None, W]]]:
        """``(k, (v, w))`` for every pair with equal keys, and ``(k, (None, w))`` for a
        ``w`` whose key this flow lacks.  Batch runs only (see ``left_outer_join``)."""
        return self._outer(other, "right_outer_join", lambda vs, ws: [(v, w) for v in (vs or [None]) for w in ws])

    def full_outer_join(self: PairOps[tuple[K, V]], other: Flow[tuple[K, W]]
                        ) -> Flow[tuple[K, tuple[V | None, W | None]]]:
        """``(k, (v, w))`` for every pair with equal keys; an unmatched value of either
        side is paired with None.  Batch runs only (see ``left_outer_join``)."""
        return self._outer(other, "full_outer_join",
                           lambda vs, ws: [(v, w) for v in (vs or [None]) for w in (ws or [None])])

    def subtract_by_key(self: PairOps[tuple[K, V]], other: Flow[tuple[K, Any]]) -> Flow[tuple[K, V]]:
        """The pairs of this flow whose key ``other`` does not have.  Batch runs only:
        in a stream, ``other`` may gain the key later."""
        return self._outer(other, "subtract_by_key", lambda vs, ws: [] if ws else list(vs))

    # -- any flow ------------------------------------------------------------------------
    def distinct(self) -> Flow[T]:
        """Each distinct element once (the first seen, in event-time order); elements
        must be hashable.  A stream run keeps every element seen in its state."""
        firsts = self._then("map", f=lambda x: (x, None), name="distinct")._then(
            "state", f=_first_seen, mode="map")
        return firsts._then("map", f=operator.itemgetter(0), name="distinct")

    def sample(self, fraction: float, *, seed: int = 0) -> Flow[T]:
        """About ``fraction`` of the elements, chosen by a hash of ``seed`` and the
        element (see :func:`sample_keeps`): the same elements on every runner and
        in every replay.

        Example:
            >>> from fluvial.flow.graph import Pipeline
            >>> len(Pipeline("s").from_queue([range(1000)]).sample(0.5, seed=7).collect())
            520
        """
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
            raise ConfigError(f"sample(): fraction must be a number in [0, 1], got {fraction!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise ConfigError(f"sample(): seed must be an integer in [0, 2**64), got {seed!r}")
        return self._then("filter", f=lambda x: sample_keeps(x, fraction, seed), name="sample")

    def sort_by(self, key: Callable[[T], Any], *, ascending: bool = True) -> Flow[T]:
        """The elements ordered by ``key(element)`` (ties keep their input order).
        Batch runs only: a stream has no end to sort up to (use ``top(n)`` over a
        window, or ``take_ordered`` on a batch run)."""
        _callable("sort_by", key)
        return self._then("sort", f=key, ascending=bool(ascending))

    def repartition(self, n: int) -> Flow[T]:
        """Spread the elements over ``n`` partitions (a shuffle) on the Spark batch runner;
        the local runners have no partitions to change and pass the elements on."""
        return self._then("repartition", n=_count("repartition", n, least=1), shuffle=True)

    def coalesce(self, n: int) -> Flow[T]:
        """Merge partitions down to ``n`` without a shuffle on the Spark batch runner; the
        local runners pass the elements on."""
        return self._then("repartition", n=_count("coalesce", n, least=1), shuffle=False)
