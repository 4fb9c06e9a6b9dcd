"""The aggregation algebra every runner and the serving layer share.

An :class:`Aggregator` is a commutative monoid over accumulators plus the two
functions that get values in and results out (Beam's ``CombineFn``):

* ``zero()`` -- the identity accumulator;
* ``add(acc, value)`` / ``add_many(acc, values)`` -- fold raw values in;
* ``merge(a, b)`` -- associative and commutative, ``merge(zero(), a) == a``;
* ``result(acc)`` -- the value a user sees (must be JSON-friendly);
* ``subtract(a, b)`` -- optional inverse (``has_subtract``): ``subtract(merge(a, b), b) == a``.

Accumulators are plain picklable data.  ``merge`` and ``subtract`` must not
mutate their arguments (runners may keep references to both).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

I = TypeVar("I")  # input value
A = TypeVar("A")  # accumulator
O = TypeVar("O")  # output (result)


class Aggregator(Generic[I, A, O]):
    """Base class of all aggregators; subclasses override the algebra.

    ``name`` identifies the aggregator in view metadata; ``spec()`` returns a
    JSON-friendly description from which :func:`fluvial.aggregators.from_spec`
    can rebuild an equivalent aggregator (built-ins only; user aggregators are
    rebuilt by the flow that owns the view).
    """

    name: str = "aggregator"
    has_subtract: bool = False

    def zero(self) -> A:
        raise NotImplementedError

    def add(self, acc: A, value: I) -> A:
        raise NotImplementedError

    def add_many(self, acc: A, values: Iterable[I]) -> A:
        for value in values:
            acc = self.add(acc, value)
        return acc

    def merge(self, a: A, b: A) -> A:
        raise NotImplementedError

    def subtract(self, a: A, b: A) -> A:
        raise NotImplementedError(f"{self.name} has no inverse")

    def result(self, acc: A) -> O:
        return acc  # type: ignore[return-value]  # the default result is the accumulator itself (O is A)

    def is_zero(self, acc: A) -> bool:
        """True if ``acc`` equals ``zero()`` (lets stores drop empty rows)."""
        return bool(acc == self.zero())

    def spec(self) -> dict[str, Any]:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
