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

import math
from bisect import bisect_right
from collections import Counter
from functools import partial, reduce
from itertools import chain
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar

import msgspec

from fluvial.aggregators.base import Aggregator
from fluvial.errors import ConfigError

__all__ = [
    "Count",
    "Histogram",
    "Last",
    "Max",
    "Mean",
    "Min",
    "Reduce",
    "Stats",
    "Sum",
    "reducer",
]

T = TypeVar("T")

# --------------------------------------------------------------------------
# shared helpers


class _Builtin(Aggregator[Any, Any, Any]):
    """Equality and ``repr`` from ``spec()`` for the built-in aggregators."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.spec() == self.spec()  # type: ignore[attr-defined]

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
        if value != value:
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


def _tie_rank(v: Any) -> float:
    # Equal numbers that differ in kind: -0.0 < int < 0.0 (and 1 < 1.0).
    return math.copysign(1.0, v) if type(v) is float else 0.0


def _min2(a: Any, b: Any) -> Any:
    """Deterministic min: NaN absorbs, ties resolved by ``_tie_rank``."""
    if a != a:  # NaN
        return a
    if b != b:
        return b
    if b < a:
        return b
    if a < b:
        return a
    return b if _tie_rank(b) < _tie_rank(a) else a


def _max2(a: Any, b: Any) -> Any:
    """Deterministic max: NaN absorbs, ties resolved by ``_tie_rank``."""
    if a != a:
        return a
    if b != b:
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
            has_nan = any(v != v for v in vals)
        if has_nan:
            first_nan = next(v for v in vals if v != v)
            return first_nan if acc is None else pick(acc, first_nan)
        best = builtin(vals)
        if (len(types) > 1) or (best == 0 and float in types):
            # Equal values of different kinds may exist: resolve like fold(add).
            best = reduce(pick, [v for v in vals if v == best])
    else:
        best = reduce(pick, vals)
    return best if acc is None else pick(acc, best)


# --------------------------------------------------------------------------
# exact sums
#
# A sum accumulator is the tuple (exact, n, n_float, n_pos_inf, n_neg_inf, n_nan):
# ``exact`` is the exact sum of the finite inputs times 2**1074, an int, and
# ``n`` counts all inputs (so a sum of values that cancel is not the empty
# sum).  Every finite float is an integer multiple of 2**-1074, so ``exact``
# is exact, canonical (equal sums give equal accumulators however they were
# built), never overflows, and merge/subtract are integer additions.
# ``add_many`` finds the exact sum of a batch with math.fsum at C speed: the
# exact sum S equals s1 + r1 + r2 + ... where s1 = fsum(xs), r1 = fsum(xs +
# [-s1]), ... (each fsum is computed exactly from Shewchuk's non-overlapping
# partials, then rounded), and the loop stops when the residual is exactly 0.

_SHIFT = 1074
_SCALE = 1 << _SHIFT
SumAcc = tuple[int, int, int, int, int, int]
_SUM_ZERO: SumAcc = (0, 0, 0, 0, 0, 0)
_FSUM_SAFE = float(2**53)  # ints of smaller magnitude convert to float exactly


def _scaled(x: float) -> int:
    """The finite float ``x`` times 2**1074, exactly, as an int."""
    n, d = x.as_integer_ratio()
    return n << (_SHIFT + 1 - d.bit_length())


def _sum_add(acc: SumAcc, v: Any) -> SumAcc:
    exact, n, nf, pinf, ninf, nan = acc
    t = type(v)
    if t is int:
        return (exact + (v << _SHIFT), n + 1, nf, pinf, ninf, nan)
    if t is not float:
        if isinstance(v, int):  # bool, IntEnum
            return (exact + (int(v) << _SHIFT), n + 1, nf, pinf, ninf, nan)
        if not isinstance(v, float):
            raise TypeError(
                f"cannot sum a value of type {t.__name__} ({v!r}): "
                "Sum, Mean and Stats take ints and floats; map values to numbers first"
            )
        v = float(v)
    if math.isfinite(v):
        return (exact + _scaled(v), n + 1, nf + 1, pinf, ninf, nan)
    if v != v:
        return (exact, n + 1, nf + 1, pinf, ninf, nan + 1)
    if v > 0:
        return (exact, n + 1, nf + 1, pinf + 1, ninf, nan)
    return (exact, n + 1, nf + 1, pinf, ninf + 1, nan)


def _exact_fsum(vals: list[Any]) -> int | None:
    """Exact sum of ints/floats times 2**1074, or None if fsum cannot do it.

    The caller guarantees ints are smaller than 2**53 in magnitude.
    """
    try:
        s = math.fsum(vals)
        if not math.isfinite(s):
            return None
        parts: list[float] = []
        while s:
            parts.append(s)
            if len(parts) > 40:  # cannot happen: 2098 bits / 52 per step
                return None
            s = math.fsum(chain(vals, [-p for p in parts]))
    except (OverflowError, ValueError):  # intermediate overflow, inf - inf
        return None
    return sum(map(_scaled, parts))


def _sum_add_many(acc: SumAcc, values: Iterable[Any]) -> SumAcc:
    vals = values if type(values) is list else list(values)
    if not vals:
        return acc
    types = set(map(type, vals))
    exact, n, nf, pinf, ninf, nan = acc
    if types == {int}:
        return (exact + (sum(vals) << _SHIFT), n + len(vals), nf, pinf, ninf, nan)
    if types <= _NUMERIC_FAST:
        if int not in types or (-_FSUM_SAFE < min(vals) and max(vals) < _FSUM_SAFE):
            total = _exact_fsum(vals)
            if total is not None:
                n_float = len(vals) if int not in types else list(map(type, vals)).count(float)
                return (exact + total, n + len(vals), nf + n_float, pinf, ninf, nan)
    return reduce(_sum_add, vals, acc)


def _sum_merge(a: SumAcc, b: SumAcc) -> SumAcc:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5])


def _sum_subtract(a: SumAcc, b: SumAcc) -> SumAcc:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3], a[4] - b[4], a[5] - b[5])


def _nonfinite(acc: SumAcc) -> float | None:
    _, _, _, pinf, ninf, nan = acc
    if nan or (pinf and ninf):
        return math.nan
    if pinf:
        return math.inf
    if ninf:
        return -math.inf
    return None


def _divide(num: int, den: int) -> float:
    """``num / den`` correctly rounded (CPython int true division), ±inf on overflow."""
    try:
        return num / den
    except OverflowError:
        return math.inf if (num > 0) == (den > 0) else -math.inf


def _sum_result(acc: SumAcc) -> int | float:
    special = _nonfinite(acc)
    if special is not None:
        return special
    if acc[2] == 0:  # only ints were added: an exact int
        return acc[0] >> _SHIFT
    return _divide(acc[0], _SCALE)


def _mean_result(acc: SumAcc) -> float | None:
    if acc[1] == 0:
        return None
    special = _nonfinite(acc)
    if special is not None:
        return special
    return _divide(acc[0], acc[1] << _SHIFT)


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
        try:
            return acc + len(values)  # type: ignore[arg-type]
        except TypeError:
            return acc + sum(1 for _ in values)

    def merge(self, a: int, b: int) -> int:
        return a + b

    def subtract(self, a: int, b: int) -> int:
        return a - b

    def result(self, acc: int) -> int:
        return acc


class Sum(_Builtin):
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
    has_subtract = True

    def zero(self) -> SumAcc:
        return _SUM_ZERO

    def add(self, acc: SumAcc, value: Any) -> SumAcc:
        return _sum_add(acc, value)

    def add_many(self, acc: SumAcc, values: Iterable[Any]) -> SumAcc:
        return _sum_add_many(acc, values)

    def merge(self, a: SumAcc, b: SumAcc) -> SumAcc:
        return _sum_merge(a, b)

    def subtract(self, a: SumAcc, b: SumAcc) -> SumAcc:
        return _sum_subtract(a, b)

    def result(self, acc: SumAcc) -> int | float:
        return _sum_result(acc)


class Min(_Builtin):
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

    def zero(self) -> Any:
        return None

    def add(self, acc: Any, value: Any) -> Any:
        if value is None:
            return acc
        return value if acc is None else _min2(acc, value)

    def add_many(self, acc: Any, values: Iterable[Any]) -> Any:
        return _extreme_many(acc, values, _min2, min)

    def merge(self, a: Any, b: Any) -> Any:
        if a is None:
            return b
        if b is None:
            return a
        return _min2(a, b)

    def is_zero(self, acc: Any) -> bool:
        return acc is None


class Max(_Builtin):
    """Largest value (any comparable values); ``None`` inputs are skipped.

    NaN absorbs; ties of different kinds resolve as ``0.0 > 0 > -0.0``.  The
    result is ``None`` when empty.

    Example:
        >>> m = Max()
        >>> m.result(m.add_many(m.zero(), ["b", "c", "a"]))
        'c'
    """

    name = "max"

    def zero(self) -> Any:
        return None

    def add(self, acc: Any, value: Any) -> Any:
        if value is None:
            return acc
        return value if acc is None else _max2(acc, value)

    def add_many(self, acc: Any, values: Iterable[Any]) -> Any:
        return _extreme_many(acc, values, _max2, max)

    def merge(self, a: Any, b: Any) -> Any:
        if a is None:
            return b
        if b is None:
            return a
        return _max2(a, b)

    def is_zero(self, acc: Any) -> bool:
        return acc is None


class Mean(_Builtin):
    """Arithmetic mean, the exact sum divided by the count, correctly rounded.

    The accumulator is the one of :class:`Sum` (which counts its inputs);
    the result is a float, or ``None`` when no value was added.

    Example:
        >>> m = Mean()
        >>> m.result(m.add_many(m.zero(), [1, 2, 4]))
        2.3333333333333335
    """

    name = "mean"
    has_subtract = True

    def zero(self) -> SumAcc:
        return _SUM_ZERO

    def add(self, acc: SumAcc, value: Any) -> SumAcc:
        return _sum_add(acc, value)

    def add_many(self, acc: SumAcc, values: Iterable[Any]) -> SumAcc:
        return _sum_add_many(acc, values)

    def merge(self, a: SumAcc, b: SumAcc) -> SumAcc:
        return _sum_merge(a, b)

    def subtract(self, a: SumAcc, b: SumAcc) -> SumAcc:
        return _sum_subtract(a, b)

    def result(self, acc: SumAcc) -> float | None:
        return _mean_result(acc)


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
        return (0, None, None, _SUM_ZERO)

    def add(self, acc: tuple[int, Any, Any, Any], value: Any) -> tuple[int, Any, Any, Any]:
        n, lo, hi, s = acc
        s = _sum_add(s, value)  # type-checks the value first
        if n == 0:
            return (1, value, value, s)
        return (n + 1, _min2(lo, value), _max2(hi, value), s)

    def add_many(self, acc: tuple[int, Any, Any, Any], values: Iterable[Any]) -> tuple[int, Any, Any, Any]:
        vals = values if type(values) is list else list(values)
        if not vals:
            return acc
        n, lo, hi, s = acc
        s = _sum_add_many(s, vals)  # type-checks the values first
        return (n + len(vals), _extreme_many(lo, vals, _min2, min),
                _extreme_many(hi, vals, _max2, max), s)

    def merge(self, a: tuple[int, Any, Any, Any], b: tuple[int, Any, Any, Any]) -> tuple[int, Any, Any, Any]:
        if a[0] == 0:
            return b
        if b[0] == 0:
            return a
        return (a[0] + b[0], _min2(a[1], b[1]), _max2(a[2], b[2]), _sum_merge(a[3], b[3]))

    def result(self, acc: tuple[int, Any, Any, Any]) -> dict[str, Any]:
        n, lo, hi, s = acc
        return {"count": n, "min": lo, "max": hi, "mean": _mean_result(s)}


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
        if any(not a < b for a, b in zip(bounds, bounds[1:])):
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


class _Nothing:
    """The private zero of :class:`Reduce` (pickles as the same singleton)."""

    _instance: _Nothing | None = None

    def __new__(cls) -> _Nothing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __reduce__(self) -> str:
        return "_NOTHING"

    def __repr__(self) -> str:
        return "<nothing>"


_NOTHING = _Nothing()


class Reduce(_Builtin, Generic[T]):
    """Aggregate with a user's binary function (Spark's ``reduceByKey``).

    ``f`` must be associative and commutative; ``inv``, if given, must undo
    ``f`` (``inv(f(a, b), b) == a``) and enables cheap sliding windows
    (``reduceByKeyAndWindow`` with an inverse).  The accumulator is a private
    zero or ``(n_values, value)``; the count lets ``subtract`` return to zero.

    Caveat: a function over floats is only as associative as the function is;
    ``operator.add`` over floats rounds differently depending on how data is
    split, so stream and batch answers may differ in the last bits.  Use
    :class:`Sum` for exact float sums.  :func:`reducer` maps ``min``/``max``
    to the exact built-ins.  Not rebuildable from ``spec()``: views pickle it.

    Example:
        >>> import operator
        >>> r = Reduce(operator.mul)
        >>> r.result(r.add_many(r.zero(), [2, 3, 4]))
        24
    """

    name = "reduce"

    def __init__(self, f: Callable[[T, T], T], inv: Callable[[T, T], T] | None = None) -> None:
        if not callable(f) or (inv is not None and not callable(inv)):
            raise ConfigError(f"Reduce needs callables, got f={f!r}, inv={inv!r}")
        self.f = f
        self.inv = inv
        self.has_subtract = inv is not None

    def zero(self) -> Any:
        return _NOTHING

    def add(self, acc: Any, value: T) -> Any:
        if acc is _NOTHING:
            return (1, value)
        return (acc[0] + 1, self.f(acc[1], value))

    def merge(self, a: Any, b: Any) -> Any:
        if a is _NOTHING:
            return b
        if b is _NOTHING:
            return a
        return (a[0] + b[0], self.f(a[1], b[1]))

    def subtract(self, a: Any, b: Any) -> Any:
        if self.inv is None:
            raise NotImplementedError(f"{self!r} has no inverse: pass inv=")
        if b is _NOTHING:
            return a
        n = (0 if a is _NOTHING else a[0]) - b[0]
        if n < 0:
            raise ValueError(f"{self!r}: cannot subtract {b[0]} values from {a!r}")
        if n == 0:
            return _NOTHING
        return (n, self.inv(a[1], b[1]))

    def is_zero(self, acc: Any) -> bool:
        return acc is _NOTHING

    def result(self, acc: Any) -> Any:
        return None if acc is _NOTHING else acc[1]

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "f": _fname(self.f), "inv": None if self.inv is None else _fname(self.inv)}

    def __eq__(self, other: object) -> bool:
        return type(other) is Reduce and (other.f, other.inv) == (self.f, self.inv)

    def __hash__(self) -> int:
        return hash((self.f, self.inv))

    def __repr__(self) -> str:
        inv = "" if self.inv is None else f", inv={_fname(self.inv)}"
        return f"Reduce({_fname(self.f)}{inv})"


def _fname(f: Callable[..., Any]) -> str:
    module = getattr(f, "__module__", None) or ""
    qual = getattr(f, "__qualname__", None) or repr(f)
    if module in ("builtins", "_operator"):
        module = "" if module == "builtins" else "operator"
    return f"{module}.{qual}" if module else qual


def reducer(f: Callable[[T, T], T], inv: Callable[[T, T], T] | None = None) -> Aggregator[Any, Any, Any]:
    """The aggregator for ``reduce(f)``: a built-in when one means the same.

    ``min`` and ``max`` become :class:`Min` and :class:`Max` (exact, with
    deterministic ties and rebuildable from ``spec()``); anything else is a
    :class:`Reduce`.

    Example:
        >>> reducer(max)
        Max()
        >>> import operator
        >>> reducer(operator.add, operator.sub)
        Reduce(operator.add, inv=operator.sub)
    """
    if inv is None and f is max:
        return Max()
    if inv is None and f is min:
        return Min()
    return Reduce(f, inv)
