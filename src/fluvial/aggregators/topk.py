"""Exact top-k: the most frequent values, and the top keys of a keyed aggregate."""

from __future__ import annotations

import heapq
import operator
from collections import _count_elements  # type: ignore[attr-defined]  # C helper of Counter.update
from collections.abc import Callable, Iterable
from typing import Any

from fluvial.aggregators.base import Aggregator
from fluvial.aggregators.builtin import Histogram, Stats, _Builtin, is_nan, sort_key
from fluvial.errors import ConfigError

__all__ = ["TopByValue", "TopK"]


def _check_n(cls: str, n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{cls} needs a positive int n, got {n!r}")
    return n


def _rank(kv: tuple[Any, Any]) -> tuple[Any, ...]:
    score = kv[1]
    if is_nan(score):  # NaN ranks last
        return (1, 0, sort_key(kv[0]))
    return (0, -score, sort_key(kv[0]))


def _top(items: list[tuple[Any, Any]], n: int) -> list[list[Any]]:
    """Up to ``n`` ``[key, score]`` pairs by score descending, then key ascending.

    Keys are ordered by :func:`sort_key`, a total order, so ties break the
    same way whatever the types of the keys and the order of ``items``; a NaN
    score ranks last.
    """
    try:
        best = heapq.nsmallest(n, items, key=_rank)
        return [[k, s] for k, s in best]
    except TypeError:  # non-numeric scores (e.g. Max over strings)
        pass
    items = sorted(items, key=lambda kv: sort_key(kv[0]))
    try:
        items.sort(key=lambda kv: kv[1], reverse=True)  # stable: ties keep key order
    except TypeError as e:
        raise TypeError(
            f"cannot rank keys by results that do not compare ({e}); "
            "TopByValue needs an inner aggregator with numeric (or string) results"
        ) from None
    return [[k, s] for k, s in items[:n]]


class TopK(_Builtin):
    """The ``n`` most frequent values, exactly.

    The accumulator is a dict ``value -> count`` (values must be hashable),
    updated in place by ``add``/``add_many`` (``add_many`` counts at C speed,
    like ``collections.Counter``).  The result is a list of up to ``n``
    ``[value, count]`` pairs by count descending, then value ascending.
    ``subtract`` drops values whose count reaches 0.  As in any dict, equal
    values of different types (``1``, ``1.0``, ``True``) are one entry.

    Args:
        n: How many values to report.

    Example:
        >>> t = TopK(2)
        >>> t.result(t.add_many(t.zero(), ["b", "a", "b", "c", "a", "b"]))
        [['b', 3], ['a', 2]]
    """

    name = "top_k"
    has_subtract = True

    def __init__(self, n: int) -> None:
        self.n = _check_n("TopK", n)

    def zero(self) -> dict[Any, int]:
        return {}

    def add(self, acc: dict[Any, int], value: Any) -> dict[Any, int]:
        acc[value] = acc.get(value, 0) + 1
        return acc

    def add_many(self, acc: dict[Any, int], values: Iterable[Any]) -> dict[Any, int]:
        _count_elements(acc, values)
        return acc

    def merge(self, a: dict[Any, int], b: dict[Any, int]) -> dict[Any, int]:
        if len(a) < len(b):
            a, b = b, a
        out = dict(a)
        get = out.get
        for k, c in b.items():
            s = get(k, 0) + c
            if s:
                out[k] = s
            else:
                del out[k]
        return out

    def subtract(self, a: dict[Any, int], b: dict[Any, int]) -> dict[Any, int]:
        out = dict(a)
        get = out.get
        for k, c in b.items():
            s = get(k, 0) - c
            if s:
                out[k] = s
            else:
                out.pop(k, None)
        return out

    def is_zero(self, acc: dict[Any, int]) -> bool:
        return not acc

    def result(self, acc: dict[Any, int]) -> list[list[Any]]:
        return _top(list(acc.items()), self.n)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "n": self.n}


def _additive(inner: Aggregator[Any, Any, Any]) -> str | None:
    """``"count"`` or ``"add"`` when the inner aggregator is plain addition."""
    from fluvial.aggregators.builtin import Count
    from fluvial.aggregators.reduce import Reduce

    if type(inner) is Count:
        return "count"
    if type(inner) is Reduce and inner.f is operator.add and inner.inv in (None, operator.sub):
        return "add"
    return None


def _top_numbers(acc: dict[Any, Any], n: int) -> list[list[Any]]:
    """:func:`_top` over a dict of numbers: a C-speed threshold first, then ranking."""
    if len(acc) > 4 * n:
        try:
            threshold = heapq.nlargest(n, acc.values())[-1]
            items = [(k, v) for k, v in acc.items() if v >= threshold]
            if len(items) >= n:  # fewer only with NaN scores: rank them all below
                return _top(items, n)
        except TypeError:
            pass
    return _top(list(acc.items()), n)


class TopByValue(_Builtin):
    """Top ``n`` keys of a keyed aggregate, by the inner aggregator's result.

    Inputs are ``(key, value)`` pairs; the accumulator is a dict
    ``key -> inner accumulator`` (updated in place by ``add``/``add_many``).
    The result is a list of up to ``n`` ``[key, inner result]`` pairs by
    result descending, then key ascending.  Keys whose inner accumulator is
    zero are left out of the result (and dropped by ``subtract``).  This is
    ``top(n)`` over a grouped table, e.g. the 10 most used hashtags per window.

    Args:
        inner: The aggregator applied per key.
        n: How many keys to report.

    Example:
        >>> from fluvial.aggregators import Count
        >>> t = TopByValue(Count(), 2)
        >>> t.result(t.add_many(t.zero(), [("#a", 1), ("#b", 1), ("#a", 1)]))
        [['#a', 2], ['#b', 1]]
    """

    name = "top_by_value"

    def __init__(self, inner: Aggregator[Any, Any, Any], n: int) -> None:
        if not isinstance(inner, Aggregator):
            raise ConfigError(f"TopByValue needs an Aggregator as inner, got {inner!r}")
        if isinstance(inner, (Histogram, Stats)):
            raise ConfigError(
                f"TopByValue cannot rank keys by {inner!r}: its results are dicts; "
                "use an inner aggregator with numeric results (Count, Sum, Mean, Max, ...)"
            )
        self.inner = inner
        self.n = _check_n("TopByValue", n)
        self.has_subtract = inner.has_subtract
        # With Count or Reduce(operator.add) inside, the accumulator is a plain
        # dict key -> total (keys whose total is 0 are dropped), updated in C-speed
        # loops; the results are the same as through the inner aggregator.
        self._additive = _additive(inner)

    def _copy(self, acc: Any) -> Any:
        # merge returns an accumulator the caller owns (never an input's).
        return self.inner.merge(self.inner.zero(), acc)

    def zero(self) -> dict[Any, Any]:
        return {}

    def add(self, acc: dict[Any, Any], value: Any) -> dict[Any, Any]:
        key, v = value
        if self._additive:
            total = acc.get(key, 0) + (1 if self._additive == "count" else v)
            if total:
                acc[key] = total
            else:
                acc.pop(key, None)
            return acc
        inner = self.inner
        acc[key] = inner.add(acc[key] if key in acc else inner.zero(), v)
        return acc

    def add_many(self, acc: dict[Any, Any], values: Iterable[Any]) -> dict[Any, Any]:
        if self._additive == "count":
            _count_elements(acc, [k for k, _ in values])
            return acc
        if self._additive:
            get = acc.get
            for key, v in values:
                acc[key] = get(key, 0) + v
            for key in [k for k, total in acc.items() if not total]:
                del acc[key]
            return acc
        groups: dict[Any, list[Any]] = {}
        for key, v in values:
            if key in groups:
                groups[key].append(v)
            else:
                groups[key] = [v]
        inner = self.inner
        for key, vs in groups.items():
            acc[key] = inner.add_many(acc[key] if key in acc else inner.zero(), vs)
        return acc

    def _combine(self, a: dict[Any, Any], b: dict[Any, Any], sign: int) -> dict[Any, Any]:
        out = dict(a)
        get = out.get
        for k, y in b.items():
            total = get(k, 0) + sign * y
            if total:
                out[k] = total
            else:
                out.pop(k, None)
        return out

    def merge(self, a: dict[Any, Any], b: dict[Any, Any]) -> dict[Any, Any]:
        if self._additive:
            return self._combine(a, b, 1) if len(a) >= len(b) else self._combine(b, a, 1)
        merge, copy = self.inner.merge, self._copy
        out = {k: (merge(x, b[k]) if k in b else copy(x)) for k, x in a.items()}
        for k, y in b.items():
            if k not in a:
                out[k] = copy(y)
        return out

    def subtract(self, a: dict[Any, Any], b: dict[Any, Any]) -> dict[Any, Any]:
        if self._additive:
            return self._combine(a, b, -1)
        inner = self.inner
        out = {}
        for k, x in a.items():
            d = inner.subtract(x, b[k]) if k in b else self._copy(x)
            if not inner.is_zero(d):
                out[k] = d
        for k, y in b.items():
            if k not in a:
                d = inner.subtract(inner.zero(), y)
                if not inner.is_zero(d):
                    out[k] = d
        return out

    def is_zero(self, acc: dict[Any, Any]) -> bool:
        if self._additive:
            return not acc
        return all(map(self.inner.is_zero, acc.values()))

    def result(self, acc: dict[Any, Any]) -> list[list[Any]]:
        if self._additive:
            return _top_numbers(acc, self.n)
        inner = self.inner
        result: Callable[[Any], Any] = inner.result
        items = [(k, result(x)) for k, x in acc.items() if not inner.is_zero(x)]
        return _top(items, self.n)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "inner": self.inner.spec(), "n": self.n}

    def __repr__(self) -> str:
        return f"TopByValue({self.inner!r}, n={self.n})"
