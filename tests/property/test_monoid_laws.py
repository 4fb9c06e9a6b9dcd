"""The monoid laws, for every built-in aggregator (DESIGN principle 3).

Equality is bit-exact: floats compare by ``float.hex`` (so ``-0.0 != 0.0`` and
NaN equals NaN), dicts regardless of insertion order.  Exact equality of
results for Sum/Mean over floats is the point: stream and batch runners split
data differently and must agree bit for bit.
"""

from __future__ import annotations

import copy
import operator
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluvial.aggregators import (
    Aggregator,
    Collect,
    Count,
    Distinct,
    Histogram,
    Last,
    Max,
    Mean,
    Min,
    Reduce,
    Stats,
    Sum,
    TopByValue,
    TopK,
    from_spec,
)


def norm(x: Any) -> Any:
    """A bit-exact, order-insensitive (for dicts) comparable form of ``x``."""
    if isinstance(x, float):
        return ("f", x.hex())
    if isinstance(x, dict):
        return ("d", frozenset((norm(k), norm(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(norm(v) for v in x))
    if isinstance(x, (bytes, bytearray)):
        return ("b", bytes(x))
    return x


# -- value strategies ---------------------------------------------------------

numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN, infinities, subnormals, huge values
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from([0.0, -0.0, 0, 0.1, 0.2, 0.3, 1e308, -1e308, 5e-324]),
)
finite = st.one_of(st.integers(min_value=-(2**60), max_value=2**60), st.floats(allow_nan=False, allow_infinity=False))
hashables = st.one_of(st.integers(min_value=-5, max_value=5), st.sampled_from(["a", "b", "c", "d", "é"]))
keys = st.sampled_from(["#a", "#b", "#c", "#d", "#e"])
order_keys = st.tuples(st.integers(0, 5), st.integers(0, 2), st.integers(0, 3))

CASES: list[tuple[str, Aggregator[Any, Any, Any], st.SearchStrategy[Any]]] = [
    ("count", Count(), st.one_of(st.none(), hashables, st.floats())),
    ("sum-numbers", Sum(), numbers),
    ("sum-finite", Sum(), finite),
    ("sum-ints", Sum(), st.integers()),
    ("min-numbers", Min(), numbers),
    ("min-text", Min(), st.one_of(st.none(), st.text(max_size=3))),
    ("max-numbers", Max(), numbers),
    ("max-text", Max(), st.text(max_size=3)),
    ("mean", Mean(), numbers),
    ("stats", Stats(), numbers),
    ("histogram", Histogram([-10, 0, 0.5, 10]), st.one_of(st.integers(-20, 20), st.floats())),
    ("histogram-empty-bounds", Histogram([]), st.floats(allow_nan=False)),
    (
        "distinct",
        Distinct(4),
        st.one_of(hashables, st.integers(), st.text(max_size=4), st.tuples(st.integers(), st.text(max_size=2))),
    ),
    ("distinct-p12", Distinct(), st.integers()),
    ("top_k", TopK(3), hashables),
    ("top_by_value-count", TopByValue(Count(), 3), st.tuples(keys, st.integers())),
    ("top_by_value-sum", TopByValue(Sum(), 2), st.tuples(keys, numbers)),
    ("top_by_value-max", TopByValue(Max(), 2), st.tuples(keys, st.integers(-3, 3))),
    ("top_by_value-distinct", TopByValue(Distinct(4), 2), st.tuples(keys, st.integers(0, 50))),
    ("top_by_value-mean", TopByValue(Mean(), 5), st.tuples(keys, finite)),
    ("top_by_value-top_k", TopByValue(TopK(2), 3), st.tuples(keys, st.integers(-2, 2))),
    ("reduce-add", Reduce(operator.add, operator.sub), st.integers()),
    ("reduce-max", Reduce(max), st.integers()),
    ("collect", Collect(), st.one_of(hashables, st.floats(allow_nan=False), st.tuples(st.integers(0, 1), hashables))),
    ("last", Last(), st.tuples(order_keys, st.one_of(hashables, st.floats()))),
]
IDS = [c[0] for c in CASES]
SUBTRACTABLE = [c for c in CASES if c[1].has_subtract]


def fold(agg: Aggregator[Any, Any, Any], xs: list[Any]) -> Any:
    acc = agg.zero()
    for x in xs:
        acc = agg.add(acc, x)
    return acc


def same(agg: Aggregator[Any, Any, Any], a: Any, b: Any) -> None:
    """Accumulators and results are bit-identical."""
    assert norm(a) == norm(b)
    assert norm(agg.result(a)) == norm(agg.result(b))


def lists(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(values, max_size=25)


@pytest.mark.parametrize(("label", "agg", "values"), CASES, ids=IDS)
@settings(deadline=None)
@given(data=st.data())
def test_identity(label: str, agg: Aggregator[Any, Any, Any], values: Any, data: st.DataObject) -> None:
    a = fold(agg, data.draw(lists(values)))
    same(agg, agg.merge(agg.zero(), a), a)
    same(agg, agg.merge(a, agg.zero()), a)
    assert agg.is_zero(agg.zero())
    assert agg.is_zero(agg.merge(agg.zero(), agg.zero()))


@pytest.mark.parametrize(("label", "agg", "values"), CASES, ids=IDS)
@settings(deadline=None)
@given(data=st.data())
def test_associative_and_commutative(
    label: str, agg: Aggregator[Any, Any, Any], values: Any, data: st.DataObject
) -> None:
    a, b, c = (fold(agg, data.draw(lists(values))) for _ in range(3))
    same(agg, agg.merge(agg.merge(a, b), c), agg.merge(a, agg.merge(b, c)))
    same(agg, agg.merge(a, b), agg.merge(b, a))


@pytest.mark.parametrize(("label", "agg", "values"), CASES, ids=IDS)
@settings(deadline=None)
@given(data=st.data())
def test_add_many_is_fold_of_add(label: str, agg: Aggregator[Any, Any, Any], values: Any, data: st.DataObject) -> None:
    start = data.draw(lists(values))
    xs = data.draw(st.lists(values, max_size=60))
    base = fold(agg, start)
    expected = fold(agg, start + xs)
    same(agg, agg.add_many(base, xs), expected)
    same(agg, agg.add_many(fold(agg, start), iter(xs)), expected)  # any iterable


@pytest.mark.parametrize(("label", "agg", "values"), CASES, ids=IDS)
@settings(deadline=None)
@given(data=st.data())
def test_any_split_then_merge_equals_whole(
    label: str, agg: Aggregator[Any, Any, Any], values: Any, data: st.DataObject
) -> None:
    """Stream ≡ batch: fold the pieces of any split, merge in any order."""
    xs = data.draw(st.lists(values, max_size=60))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(xs)), max_size=5)))
    pieces = [xs[i:j] for i, j in zip([0, *cuts], [*cuts, len(xs)])]
    order = data.draw(st.permutations(range(len(pieces))))
    use_many = data.draw(st.booleans())
    acc = agg.zero()
    for i in order:
        part = agg.add_many(agg.zero(), pieces[i]) if use_many else fold(agg, pieces[i])
        acc = agg.merge(acc, part)
    whole = agg.add_many(agg.zero(), xs)
    assert norm(agg.result(acc)) == norm(agg.result(whole))
    same(agg, acc, fold(agg, xs))


@pytest.mark.parametrize(("label", "agg", "values"), SUBTRACTABLE, ids=[c[0] for c in SUBTRACTABLE])
@settings(deadline=None)
@given(data=st.data())
def test_subtract_undoes_merge(label: str, agg: Aggregator[Any, Any, Any], values: Any, data: st.DataObject) -> None:
    a = fold(agg, data.draw(lists(values)))
    b = fold(agg, data.draw(lists(values)))
    ab = agg.merge(a, b)
    assert norm(agg.result(agg.subtract(ab, b))) == norm(agg.result(a))
    assert agg.is_zero(agg.subtract(a, a))
    assert norm(agg.result(agg.subtract(a, agg.zero()))) == norm(agg.result(a))
    # a sliding window: add the new pane, subtract the oldest
    c = fold(agg, data.draw(lists(values)))
    slid = agg.subtract(agg.merge(agg.merge(a, b), c), a)
    assert norm(agg.result(slid)) == norm(agg.result(agg.merge(b, c)))


@pytest.mark.parametrize(("label", "agg", "values"), CASES, ids=IDS)
@settings(deadline=None)
@given(data=st.data())
def test_merge_and_subtract_do_not_mutate_or_alias(
    label: str, agg: Aggregator[Any, Any, Any], values: Any, data: st.DataObject
) -> None:
    a = fold(agg, data.draw(lists(values)))
    b = fold(agg, data.draw(lists(values)))
    more = data.draw(st.lists(values, min_size=1, max_size=5))
    a0, b0 = copy.deepcopy(a), copy.deepcopy(b)
    outs = [agg.merge(a, b), agg.merge(agg.zero(), a), agg.merge(b, agg.zero())]
    if agg.has_subtract:
        outs += [agg.subtract(agg.merge(a, b), b), agg.subtract(a, agg.zero())]
    assert norm(a) == norm(a0) and norm(b) == norm(b0)
    # the caller owns what merge/subtract return: adding into it leaves a and b alone
    for out in outs:
        agg.add_many(out, more)
    assert norm(a) == norm(a0) and norm(b) == norm(b0)


@pytest.mark.parametrize(("label", "agg", "values"), CASES, ids=IDS)
@settings(deadline=None, max_examples=30)
@given(data=st.data())
def test_accumulators_pickle_and_aggregators_rebuild(
    label: str, agg: Aggregator[Any, Any, Any], values: Any, data: st.DataObject
) -> None:
    a = fold(agg, data.draw(lists(values)))
    back = pickle.loads(pickle.dumps(a))
    same(agg, back, a)
    assert agg.is_zero(pickle.loads(pickle.dumps(agg.zero())))
    if not isinstance(agg, Reduce):
        rebuilt = from_spec(agg.spec())
        assert rebuilt == agg and repr(rebuilt) == repr(agg)
        same(agg, rebuilt.merge(rebuilt.zero(), a), a)
