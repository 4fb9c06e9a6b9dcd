"""Exact sums of ints and floats: the core of ``Sum``, ``Mean`` and ``Stats``.

A sum accumulator is the tuple (exact, n, n_float, n_pos_inf, n_neg_inf, n_nan):
``exact`` is the exact sum of the finite inputs times 2**1074, an int, and
``n`` counts all inputs (so a sum of values that cancel is not the empty
sum).  Every finite float is an integer multiple of 2**-1074, so ``exact``
is exact, canonical (equal sums give equal accumulators however they were
built), never overflows, and merge/subtract are integer additions.
``add_many`` finds the exact sum of a batch with math.fsum at C speed: the
exact sum S equals s1 + r1 + r2 + ... where s1 = fsum(xs), r1 = fsum(xs +
[-s1]), ... (each fsum is computed exactly from Shewchuk's non-overlapping
partials, then rounded), and the loop stops when the residual is exactly 0.
Results are ``exact / 2**1074`` (or ``/ (n * 2**1074)`` for a mean) by
CPython's int true division, which is correctly rounded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import reduce
from itertools import chain
from typing import Any

__all__ = [
    "SUM_ZERO",
    "SumAcc",
    "mean_result",
    "sum_add",
    "sum_add_many",
    "sum_merge",
    "sum_result",
    "sum_subtract",
]

_NUMERIC_FAST = frozenset({int, float})

_SHIFT = 1074
_SCALE = 1 << _SHIFT
SumAcc = tuple[int, int, int, int, int, int]
SUM_ZERO: SumAcc = (0, 0, 0, 0, 0, 0)
_FSUM_SAFE = float(2**53)  # ints of smaller magnitude convert to float exactly


_SMALL = 6  # below this many floats, exact scaling beats the fsum iterations


def _scaled(x: float) -> int:
    """The finite float ``x`` times 2**1074, exactly, as an int."""
    n, d = x.as_integer_ratio()
    return n << (_SHIFT + 1 - d.bit_length())


def sum_add(acc: SumAcc, v: Any) -> SumAcc:
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


def sum_add_many(acc: SumAcc, values: Iterable[Any]) -> SumAcc:
    vals = values if type(values) is list else list(values)
    if not vals:
        return acc
    types = set(map(type, vals))
    exact, n, nf, pinf, ninf, nan = acc
    if types == {int}:
        return (exact + (sum(vals) << _SHIFT), n + len(vals), nf, pinf, ninf, nan)
    if len(vals) <= _SMALL and types == {float} and all(map(math.isfinite, vals)):
        # A few floats (a sensor's readings in one window): scale each exactly;
        # cheaper than the fsum iterations below, and the same exact total.
        return (exact + sum(map(_scaled, vals)), n + len(vals), nf + len(vals), pinf, ninf, nan)
    if types <= _NUMERIC_FAST and (
        int not in types or (min(vals) > -_FSUM_SAFE and max(vals) < _FSUM_SAFE)
    ):
        total = _exact_fsum(vals)
        if total is not None:
            n_float = len(vals) if int not in types else list(map(type, vals)).count(float)
            return (exact + total, n + len(vals), nf + n_float, pinf, ninf, nan)
    return reduce(sum_add, vals, acc)


def sum_merge(a: SumAcc, b: SumAcc) -> SumAcc:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5])


def sum_subtract(a: SumAcc, b: SumAcc) -> SumAcc:
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


def sum_result(acc: SumAcc) -> int | float:
    special = _nonfinite(acc)
    if special is not None:
        return special
    if acc[2] == 0:  # only ints were added: an exact int
        return acc[0] >> _SHIFT
    return _divide(acc[0], _SCALE)


def mean_result(acc: SumAcc) -> float | None:
    if acc[1] == 0:
        return None
    if acc[3] or acc[4] or acc[5]:  # an infinity or a NaN was added
        return _nonfinite(acc)
    return _divide(acc[0], acc[1] << _SHIFT)
