"""Built-in numeric and generic aggregators: count, sum, min/max, mean, stats, ...

Every aggregator here is exact where it can be: ``Sum`` and ``Mean`` keep the
*exact* sum of their inputs, so that the stream runner (many small merges) and
the batch runner (one big fold) give bit-identical results however the data is
split.  ``Min``/``Max`` break ties deterministically (``-0.0`` vs ``0.0``,
``1`` vs ``1.0``) and let NaN absorb, for the same reason.

Accumulators are plain picklable data (ints, tuples, lists, dicts).  ``add``
and ``add_many`` may mutate the accumulator passed in when it is mutable (only
``Histogram`` here); ``merge`` and ``subtract`` never mutate their arguments.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence, Sized
from functools import partial, reduce
from itertools import pairwise
from typing import Any

import msgspec

from fluvial.aggregators.base import Aggregator
from fluvial.aggregators.exact import (
    SUM_ZERO,
    SumAcc,
    mean_result,
    sum_add,
    sum_add_many,
    sum_merge,
    sum_result,
    sum_subtract,
)
from fluvial.errors import ConfigError

__all__ = [
    "Collect",
    "Count",
    "Histogram",
    "Last",
    "Max",
    "Mean",
    "Min",
    "Stats",
    "Sum",
]


# --------------------------------------------------------------------------
# shared helpers


class _Builtin(Aggregator[Any, Any, Any]):
    """Equality and ``repr`` from ``spec()`` for the built-in aggregators."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.spec() == self.spec()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "name")
        return f"{type(self).__name__}({params})"


_CANON = msgspec.msgpack.Encoder(order="sorted")


def _canonical_bytes(value: Any) -> bytes:
    try:
        return _CANON.encode(value)
    except (TypeError, OverflowError, msgspec.EncodeError):
        return repr(value).encode()


def sort_key(value: Any) -> tuple[Any, ...]:
    """A total, deterministic order over any values (for tie-breaks).

    Numbers order numerically (``-0.0`` before ``0`` before ``0.0``, NaN
    last), then strings, then bytes, then tuples/lists item by item, then
    anything else by type name and canonical MessagePack bytes.  ``None``
    comes first.
    """
    t = type(value)
    if t is str:
        return (2, value)
    if t is int or t is float or t is bool:
        if is_nan(value):
            return (1, 0, 0.0, 1)
        return (1, value, _tie_rank(value), 0)
    if value is None:
        return (0,)
    if t is bytes:
        return (3, value)
    if t is tuple or t is list:
        return (4, tuple(map(sort_key, value)))
    return (5, t.__name__, _canonical_bytes(value))


def less(a: Any, b: Any) -> bool:
    """``a < b`` in the order of :func:`sort_key`."""
    return sort_key(a) < sort_key(b)


def is_nan(v: Any) -> bool:
    """True for a float NaN (the only value not equal to itself)."""
    return bool(v != v)


def _tie_rank(v: Any) -> float:
    # Equal numbers that differ in kind: -0.0 < int < 0.0 (and 1 < 1.0).
    return math.copysign(1.0, v) if type(v) is float else 0.0


def _min2(a: Any, b: Any) -> Any:
    """Deterministic min: NaN absorbs, ties resolved by ``_tie_rank``."""
    if is_nan(a):
        return a
    if is_nan(b):
        return b
    if b < a:
        return b
    if a < b:
        return a
    return b if _tie_rank(b) < _tie_rank(a) else a


def _max2(a: Any, b: Any) -> Any:
    """Deterministic max: NaN absorbs, ties resolved by ``_tie_rank``."""
    if is_nan(a):
        return a
    if is_nan(b):
        return b
    if b > a:
        return b
    if a > b:
        return a
    return b if _tie_rank(b) > _tie_rank(a) else a


_NUMERIC_FAST = frozenset({int, float})


def _extreme_many(acc: Any, values: Iterable[Any], pick: Callable[[Any, Any], Any],
                  builtin: Callable[..., Any]) -> Any:
    """Fold ``values`` into ``acc`` with ``pick`` (``_min2``/``_max2``), fast for numbers."""
    vals = values if type(values) is list else list(values)
    if None in vals:
        vals = [v for v in vals if v is not None]
    if not vals:
        return acc
    types = set(map(type, vals))
    if types <= _NUMERIC_FAST:
        try:
            has_nan = float in types and any(map(math.isnan, vals))
        except OverflowError:  # an int too large for a float: no NaN among ints
            has_nan = any(map(is_nan, vals))
        if has_nan:
            first_nan = next(filter(is_nan, vals))
            return first_nan if acc is None else pick(acc, first_nan)
        best = builtin(vals)
        if (len(types) > 1) or (best == 0 and float in types):
            # Equal values of different kinds may exist: resolve like fold(add).
            best = reduce(pick, [v for v in vals if v == best])
    else:
        best = reduce(pick, vals)
    return best if acc is None else pick(acc, best)


# --------------------------------------------------------------------------
# aggregators


class Count(_Builtin):
    """Count the values, whatever they are.

    Example:
        >>> c = Count()
        >>> c.result(c.add_many(c.zero(), ["a", "b", None]))
        3
    """

    name = "count"
    has_subtract = True

    def zero(self) -> int:
        return 0

    def add(self, acc: int, value: Any) -> int:
        return acc + 1

    def add_many(self, acc: int, values: Iterable[Any]) -> int:
        if type(values) is list or isinstance(values, Sized):  # a list first: cheaper than the ABC check
            return acc + len(values)
        return acc + sum(1 for _ in values)

    def merge(self, a: int, b: int) -> int:
        return a + b

    def subtract(self, a: int, b: int) -> int:
        return a - b

    def result(self, acc: int) -> int:
        return acc


class _ExactSum(_Builtin):
    """The algebra of :class:`Sum` and :class:`Mean`: the exact sum of
    :mod:`fluvial.aggregators.exact`; each says what its result is."""

    has_subtract = True

    def zero(self) -> SumAcc:
        return SUM_ZERO

    def add(self, acc: SumAcc, value: Any) -> SumAcc:
        return sum_add(acc, value)

    def add_many(self, acc: SumAcc, values: Iterable[Any]) -> SumAcc:
        return sum_add_many(acc, values)

    def merge(self, a: SumAcc, b: SumAcc) -> SumAcc:
        return sum_merge(a, b)

    def subtract(self, a: SumAcc, b: SumAcc) -> SumAcc:
        return sum_subtract(a, b)


class Sum(_ExactSum):
    """Exact sum of ints and floats.

    Ints sum exactly to an int.  With any float among the inputs the result is
    the exact sum correctly rounded to a float (as :func:`math.fsum`), so any
    split of the data, merged in any order, gives the bit-identical answer.
    NaN and infinities propagate as in IEEE arithmetic.  ``add_many`` runs at
    C speed (a few passes of ``math.fsum``).

    Example:
        >>> s = Sum()
        >>> s.result(s.add_many(s.zero(), [0.1] * 10))
        1.0
        >>> s.result(s.add_many(s.zero(), [2, 3]))
        5
    """

    name = "sum"

    def result(self, acc: SumAcc) -> int | float:
        return sum_result(acc)


class _Extreme(_Builtin):
    """Min and Max: a pick of two values (with a total order for ties) and the
    builtin that does it for many."""

    _pick: Callable[[Any, Any], Any]
    _many: Callable[..., Any]

    def zero(self) -> Any:
        return None

    def add(self, acc: Any, value: Any) -> Any:
        if value is None:
            return acc
        return value if acc is None else type(self)._pick(acc, value)

    def add_many(self, acc: Any, values: Iterable[Any]) -> Any:
        return _extreme_many(acc, values, type(self)._pick, type(self)._many)

    def merge(self, a: Any, b: Any) -> Any:
        if a is None:
            return b
        if b is None:
            return a
        return type(self)._pick(a, b)

    def is_zero(self, acc: Any) -> bool:
        return acc is None


class Min(_Extreme):
    """Smallest value (any comparable values); ``None`` inputs are skipped.

    NaN absorbs (the result is NaN if any input is), and equal values of
    different kinds are resolved the same way in every order:
    ``-0.0 < 0 < 0.0``.  The result is ``None`` when empty.

    Example:
        >>> m = Min()
        >>> m.result(m.add_many(m.zero(), [3, 1, 2]))
        1
    """

    name = "min"
    _pick = staticmethod(_min2)
    _many = staticmethod(min)


class Max(_Extreme):
    """Largest value (any comparable values); ``None`` inputs are skipped.

    NaN absorbs; ties of different kinds resolve as ``0.0 > 0 > -0.0``.  The
    result is ``None`` when empty.

    Example:
        >>> m = Max()
        >>> m.result(m.add_many(m.zero(), ["b", "c", "a"]))
        'c'
    """

    name = "max"
    _pick = staticmethod(_max2)
    _many = staticmethod(max)


class Mean(_ExactSum):
    """Arithmetic mean, the exact sum divided by the count, correctly rounded.

    The accumulator is the one of :class:`Sum` (which counts its inputs);
    the result is a float, or ``None`` when no value was added.

    Example:
        >>> m = Mean()
        >>> m.result(m.add_many(m.zero(), [1, 2, 4]))
        2.3333333333333335
    """

    name = "mean"

    def result(self, acc: SumAcc) -> float | None:
        return mean_result(acc)


class Stats(_Builtin):
    """Count, min, max and mean of numbers in one pass (the ``device_stats`` view).

    The result is ``{"count": n, "min": ..., "max": ..., "mean": ...}``; min,
    max and mean are ``None`` when ``n == 0``.  No inverse (min and max have
    none).

    Example:
        >>> s = Stats()
        >>> s.result(s.add_many(s.zero(), [20.5, 21.0, 19.5]))
        {'count': 3, 'min': 19.5, 'max': 21.0, 'mean': 20.333333333333332}
    """

    name = "stats"

    def zero(self) -> tuple[int, Any, Any, SumAcc]:
        return (0, None, None, SUM_ZERO)

    def add(self, acc: tuple[int, Any, Any, Any], value: Any) -> tuple[int, Any, Any, Any]:
        n, lo, hi, s = acc
        s = sum_add(s, value)  # type-checks the value first
        if n == 0:
            return (1, value, value, s)
        return (n + 1, _min2(lo, value), _max2(hi, value), s)

    def add_many(self, acc: tuple[int, Any, Any, Any], values: Iterable[Any]) -> tuple[int, Any, Any, Any]:
        vals = values if type(values) is list else list(values)
        if not vals:
            return acc
        n, lo, hi, s = acc
        s = sum_add_many(s, vals)  # type-checks the values first
        return (n + len(vals), _extreme_many(lo, vals, _min2, min),
                _extreme_many(hi, vals, _max2, max), s)

    def merge(self, a: tuple[int, Any, Any, Any], b: tuple[int, Any, Any, Any]) -> tuple[int, Any, Any, Any]:
        if a[0] == 0:
            return b
        if b[0] == 0:
            return a
        return (a[0] + b[0], _min2(a[1], b[1]), _max2(a[2], b[2]), sum_merge(a[3], b[3]))

    def is_zero(self, acc: tuple[int, Any, Any, Any]) -> bool:
        return acc[0] == 0  # no value added (Stats has no subtract: count 0 means zero)

    def result(self, acc: tuple[int, Any, Any, Any]) -> dict[str, Any]:
        n, lo, hi, s = acc
        return {"count": n, "min": lo, "max": hi, "mean": mean_result(s)}


class Histogram(_Builtin):
    """Counts per bucket ``(-inf, b0), [b0, b1), ..., [bn, inf)``.

    The accumulator is a list of ``len(bounds) + 1`` ints, mutated in place by
    ``add``/``add_many``.  NaN compares below no bound and lands in the last
    bucket; filter it out upstream if that is not wanted.

    Args:
        bounds: Strictly increasing finite numbers (may be empty: one bucket).

    Example:
        >>> h = Histogram([0, 10])
        >>> h.result(h.add_many(h.zero(), [-1, 0, 5, 10, 99]))
        {'bounds': [0, 10], 'counts': [1, 2, 2]}
    """

    name = "histogram"
    has_subtract = True

    def __init__(self, bounds: Sequence[float]) -> None:
        bounds = list(bounds)
        for b in bounds:
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b):
                raise ConfigError(f"Histogram bounds must be finite numbers, got {b!r}")
        if any(not a < b for a, b in pairwise(bounds)):
            raise ConfigError(f"Histogram bounds must be strictly increasing, got {bounds!r}")
        self.bounds = bounds
        self._bucket = partial(bisect_right, bounds)

    def zero(self) -> list[int]:
        return [0] * (len(self.bounds) + 1)

    def add(self, acc: list[int], value: Any) -> list[int]:
        acc[bisect_right(self.bounds, value)] += 1
        return acc

    def add_many(self, acc: list[int], values: Iterable[Any]) -> list[int]:
        for i, c in Counter(map(self._bucket, values)).items():
            acc[i] += c
        return acc

    def merge(self, a: list[int], b: list[int]) -> list[int]:
        return [x + y for x, y in zip(a, b)]

    def subtract(self, a: list[int], b: list[int]) -> list[int]:
        return [x - y for x, y in zip(a, b)]

    def is_zero(self, acc: list[int]) -> bool:
        return not any(acc)

    def result(self, acc: list[int]) -> dict[str, list[Any]]:
        return {"bounds": list(self.bounds), "counts": list(acc)}

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "bounds": list(self.bounds)}


class Last(_Builtin):
    """The value with the largest order key (latest reading of a device).

    Inputs are ``(order_key, value)`` pairs; runners pass
    ``((ts_ms, partition, offset), value)`` so keys are unique.  Equal keys
    (should they occur) keep the larger value, so the result is the same in
    any order.  The result is ``None`` when empty.

    Example:
        >>> l = Last()
        >>> l.result(l.add_many(l.zero(), [((2, 0, 5), "on"), ((1, 0, 9), "off")]))
        'on'
    """

    name = "last"

    def zero(self) -> tuple[Any, Any] | None:
        return None

    @staticmethod
    def _later(a: tuple[Any, Any], b: tuple[Any, Any]) -> tuple[Any, Any]:
        if b[0] > a[0]:
            return b
        if a[0] > b[0]:
            return a
        return b if less(a[1], b[1]) else a

    def add(self, acc: tuple[Any, Any] | None, value: Any) -> tuple[Any, Any]:
        key, v = value
        if type(key) is list:  # decoded from JSON
            key = tuple(key)
        pair = (key, v)
        return pair if acc is None else self._later(acc, pair)

    def add_many(self, acc: tuple[Any, Any] | None, values: Iterable[Any]) -> tuple[Any, Any] | None:
        for value in values:
            acc = self.add(acc, value)
        return acc

    def merge(self, a: tuple[Any, Any] | None, b: tuple[Any, Any] | None) -> tuple[Any, Any] | None:
        if a is None:
            return b
        if b is None:
            return a
        return self._later(a, b)

    def is_zero(self, acc: Any) -> bool:
        return acc is None

    def result(self, acc: tuple[Any, Any] | None) -> Any:
        return None if acc is None else acc[1]


class Collect(_Builtin):
    """Every value, as a list (``group_by_key``), kept sorted in the total order of
    :func:`sort_key`: the same list however the values were split and merged.  It
    keeps every value: prefer an aggregator that folds them.

    Example:
        >>> c = Collect()
        >>> c.result(c.merge(c.add_many(c.zero(), ["b", "a"]), c.add(c.zero(), 1)))
        [1, 'a', 'b']
    """

    name = "collect"

    def zero(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], value: Any) -> list[Any]:
        return self.add_many(acc, [value])

    def add_many(self, acc: list[Any], values: Iterable[Any]) -> list[Any]:
        return sorted([*acc, *values], key=sort_key)

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return list(heapq.merge(a, b, key=sort_key))

    def is_zero(self, acc: list[Any]) -> bool:
        return not acc

    def result(self, acc: list[Any]) -> list[Any]:
        return list(acc)
