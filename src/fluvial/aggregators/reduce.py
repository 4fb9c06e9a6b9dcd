"""Aggregating with a user's binary function (Spark's ``reduceByKey``)."""

from __future__ import annotations

import functools
import operator
from collections import _count_elements  # type: ignore[attr-defined]  # C helper of Counter.update
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from fluvial.aggregators.base import Aggregator
from fluvial.aggregators.builtin import Max, Min, _Builtin
from fluvial.errors import ConfigError

__all__ = ["Reduce", "reducer"]

T = TypeVar("T")


class _Nothing:
    """The private zero of :class:`Reduce` (pickles as the same singleton)."""

    def __reduce__(self) -> str:
        return "_NOTHING"

    def __repr__(self) -> str:
        return "<nothing>"


_NOTHING = _Nothing()
_first = operator.itemgetter(0)
_second = operator.itemgetter(1)


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

    def add_many(self, acc: Any, values: Iterable[T]) -> Any:
        """One fold over ``values``, calling ``f`` in the same order as repeated ``add``
        (``functools.reduce``: for a builtin such as ``operator.add`` the loop runs in C)."""
        items = values if isinstance(values, list) else list(values)
        if not items:
            return acc
        if acc is _NOTHING:
            return (len(items), functools.reduce(self.f, items))
        return (acc[0] + len(items), functools.reduce(self.f, items, acc[1]))

    def combine_pairs(self, pairs: list[Any]) -> dict[Any, Any] | None:
        """Accumulators per key of ``(key, value)`` pairs, for the counting idiom
        ``map(lambda x: (x, 1)).reduce_by_key(operator.add)``: when ``f`` is
        ``operator.add`` and every value is the int 1, the sum per key is the
        number of pairs, counted in C.  None when that does not apply (the
        caller groups and folds as usual).  The same accumulators as add_many.
        """
        if self.f is not operator.add or not pairs:
            return None
        try:
            values = list(map(_second, pairs))
        except (TypeError, IndexError):
            return None
        if values.count(1) != len(values) or set(map(type, values)) != {int} \
                or set(map(len, pairs)) != {2}:
            return None
        counts: dict[Any, int] = {}
        _count_elements(counts, map(_first, pairs))
        return {k: (n, n) for k, n in counts.items()}

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
