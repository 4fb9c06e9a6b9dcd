"""Aggregators: the monoids every runner and the serving layer share.

Built-ins: :class:`Count`, :class:`Sum`, :class:`Min`, :class:`Max`,
:class:`Mean`, :class:`Stats`, :class:`Histogram`, :class:`Collect`, :class:`Distinct`
(HyperLogLog), :class:`TopK`, :class:`TopByValue`, :class:`Last` and
:class:`Reduce` (a user's binary function, see :func:`reducer`).  All are pure:
no I/O, accumulators are plain picklable data.
"""

from __future__ import annotations

from typing import Any

from fluvial.aggregators.base import Aggregator
from fluvial.aggregators.builtin import (
    Collect,
    Count,
    Histogram,
    Last,
    Max,
    Mean,
    Min,
    Stats,
    Sum,
)
from fluvial.aggregators.hll import Distinct
from fluvial.aggregators.reduce import Reduce, reducer
from fluvial.aggregators.topk import TopByValue, TopK
from fluvial.errors import ConfigError

__all__ = [
    "Aggregator",
    "Collect",
    "Count",
    "Distinct",
    "Histogram",
    "Last",
    "Max",
    "Mean",
    "Min",
    "Reduce",
    "Stats",
    "Sum",
    "TopByValue",
    "TopK",
    "from_spec",
    "reducer",
]

_SIMPLE: dict[str, type[Aggregator[Any, Any, Any]]] = {
    "collect": Collect,
    "count": Count,
    "sum": Sum,
    "min": Min,
    "max": Max,
    "mean": Mean,
    "stats": Stats,
    "last": Last,
}


def from_spec(spec: dict[str, Any]) -> Aggregator[Any, Any, Any]:
    """Rebuild a built-in aggregator from its ``spec()``.

    Args:
        spec: A dict with ``"name"`` and the aggregator's parameters.

    Raises:
        ConfigError: Unknown name, bad parameters, or a :class:`Reduce`
            (a Python function cannot be rebuilt from a spec).

    Example:
        >>> from_spec({"name": "top_k", "n": 3})
        TopK(n=3)
        >>> from_spec(Histogram([0, 10]).spec()) == Histogram([0, 10])
        True
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ConfigError(f"an aggregator spec is a dict with a 'name', got {spec!r}")
    name = spec["name"]
    params = {k: v for k, v in spec.items() if k != "name"}
    try:
        if name in _SIMPLE:
            if params:
                raise TypeError(f"unexpected parameters {sorted(params)}")
            return _SIMPLE[name]()
        if name == "histogram":
            return Histogram(**params)
        if name == "distinct":
            return Distinct(**params)
        if name == "top_k":
            return TopK(**params)
        if name == "top_by_value":
            return TopByValue(from_spec(params.pop("inner", None)), **params)
    except TypeError as e:
        raise ConfigError(f"bad aggregator spec {spec!r}: {e}") from None
    if name == "reduce":
        raise ConfigError(
            f"cannot rebuild {spec!r} from its spec: Reduce wraps a Python function; "
            "views pickle such aggregators instead (keep the pickled aggregator, "
            "or rebuild it from the flow that defines it)"
        )
    known = sorted([*_SIMPLE, "histogram", "distinct", "top_k", "top_by_value"])
    raise ConfigError(f"unknown aggregator {name!r} in spec {spec!r}; built-ins are {known}")
