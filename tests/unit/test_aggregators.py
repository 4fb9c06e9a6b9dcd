"""Built-in aggregators against brute force (Fraction, statistics, Counter, sorted)."""

from __future__ import annotations

import json
import math
import operator
import pickle
import random
import statistics
from collections import Counter
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from typing import Any

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from fluvial.aggregators import (
    Aggregator,
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
    reducer,
)
from fluvial.errors import ConfigError

finite_floats = st.floats(allow_nan=False, allow_infinity=False)


def run(agg: Aggregator[Any, Any, Any], values: list[Any]) -> Any:
    return agg.result(agg.add_many(agg.zero(), values))


def exact_float(values: list[Any]) -> float:
    """Correctly rounded exact sum, ±inf when out of range."""
    total = sum(map(Fraction, values), Fraction(0))
    try:
        return float(total)
    except OverflowError:
        return math.inf if total > 0 else -math.inf


def bits(x: float) -> str:
    return x.hex()


# -- Count --------------------------------------------------------------------


def test_count_counts_anything_from_any_iterable() -> None:
    c = Count()
    assert run(c, ["a", None, 1.5]) == 3
    assert c.result(c.add_many(c.zero(), (x for x in range(10)))) == 10
    assert c.subtract(10, 4) == 6 and c.is_zero(c.subtract(3, 3))


# -- Sum ----------------------------------------------------------------------


def test_sum_is_exact_where_naive_summation_is_not() -> None:
    s = Sum()
    assert run(s, [0.1] * 10) == 1.0 and sum([0.1] * 10) != 1.0
    assert run(s, [1e100, 1.0, -1e100]) == 1.0
    assert run(s, [1e308, 1e308, -1e308]) == 1e308  # intermediate overflow is fine
    assert run(s, [1e308, 1e308]) == math.inf
    assert run(s, [5e-324, 5e-324]) == 1e-323
    big = 2**200 + 1
    assert run(s, [big, -(2**200), 0.5]) == 1.5  # int beyond 2**53 stays exact


def test_sum_of_ints_is_an_exact_int() -> None:
    s = Sum()
    xs = [random.Random(1).randrange(-(2**90), 2**90) for _ in range(1000)]
    out = run(s, xs)
    assert type(out) is int and out == sum(xs)
    assert run(s, []) == 0 and type(run(s, [])) is int
    assert run(s, [True, 2]) == 3
    assert type(run(s, [1, 2.0])) is float


@settings(deadline=None)
@given(st.lists(st.one_of(finite_floats, st.integers(), st.integers(-(2**53), 2**53)), max_size=50))
def test_sum_is_the_correctly_rounded_exact_sum(xs: list[Any]) -> None:
    s = Sum()
    out = s.result(s.add_many(s.zero(), xs))
    if all(type(x) is int for x in xs):
        assert out == sum(xs)
    else:
        assert bits(out) == bits(exact_float(xs)) or (out == 0 == exact_float(xs))
    try:
        fs = math.fsum(xs)
    except OverflowError:
        return
    if all(type(x) is float for x in xs) and xs:
        assert bits(out) == bits(fs)


def test_sum_zero_sign_and_nonfinite_follow_ieee() -> None:
    s = Sum()
    assert bits(run(s, [-0.0, -0.0])) == bits(0.0)  # an exact sum has no sign of zero
    assert run(s, [math.inf, 1.0]) == math.inf
    assert run(s, [-math.inf, 1.0]) == -math.inf
    assert math.isnan(run(s, [math.inf, -math.inf]))
    assert math.isnan(run(s, [1.0, math.nan]))
    acc = s.add_many(s.zero(), [math.inf, 2.0])
    assert s.result(s.subtract(acc, s.add(s.zero(), math.inf))) == 2.0


def test_sum_rejects_non_numbers_clearly() -> None:
    s = Sum()
    for bad in ("1", None, Decimal("1.5")):
        with pytest.raises(TypeError, match="cannot sum a value of type"):
            s.add_many(s.zero(), [1.0, bad])
        with pytest.raises(TypeError, match="cannot sum"):
            s.add(s.zero(), bad)


def test_sum_add_many_matches_fsum_on_a_million_floats() -> None:
    rng = random.Random(7)
    xs = [rng.gauss(20.0, 5.0) * 10 ** rng.randint(-8, 8) for _ in range(1_000_000)]
    s = Sum()
    assert bits(run(s, xs)) == bits(math.fsum(xs))
    # stream ≡ batch on uneven micro-batches
    acc = s.zero()
    i = 0
    while i < len(xs):
        n = rng.randint(1, 50_000)
        acc = s.merge(acc, s.add_many(s.zero(), xs[i : i + n]))
        i += n
    assert acc == s.add_many(s.zero(), xs)


# -- Mean / Stats ---------------------------------------------------------------


@settings(deadline=None)
@given(st.lists(st.one_of(finite_floats, st.integers(-(2**64), 2**64)), min_size=1, max_size=40))
def test_mean_is_the_correctly_rounded_exact_mean(xs: list[Any]) -> None:
    out = run(Mean(), xs)
    expected = statistics.mean(map(Fraction, xs))
    assert (type(out) is float and bits(out) == bits(float(expected))) or out == float(expected) == 0


def test_mean_of_nothing_is_none_and_subtract_returns_there() -> None:
    m = Mean()
    assert run(m, []) is None
    a = m.add_many(m.zero(), [1, 2])
    assert m.result(a) == 1.5
    assert m.is_zero(m.subtract(a, a)) and m.result(m.subtract(a, a)) is None


@settings(deadline=None)
@given(st.lists(st.one_of(finite_floats, st.integers(-1000, 1000)), max_size=40))
def test_stats_against_builtins(xs: list[Any]) -> None:
    out = run(Stats(), xs)
    assert set(out) == {"count", "min", "max", "mean"}
    assert out["count"] == len(xs)
    if not xs:
        assert out == {"count": 0, "min": None, "max": None, "mean": None}
        return
    assert out["min"] == min(xs) and out["max"] == max(xs)
    assert out["mean"] == float(statistics.mean(map(Fraction, xs)))


def test_stats_device_view_example() -> None:
    assert run(Stats(), [20.5, 21.0, 19.5]) == {"count": 3, "min": 19.5, "max": 21.0, "mean": 20.333333333333332}


# -- Min / Max ------------------------------------------------------------------


@settings(deadline=None)
@given(st.lists(st.one_of(finite_floats, st.integers()), max_size=40))
def test_min_max_against_builtins(xs: list[Any]) -> None:
    assert run(Min(), xs) == (min(xs) if xs else None)
    assert run(Max(), xs) == (max(xs) if xs else None)


def test_min_max_are_deterministic_on_ties_nan_and_none() -> None:
    for xs in ([0.0, -0.0], [-0.0, 0.0], [0, -0.0, 0.0]):
        assert bits(run(Min(), xs)) == bits(-0.0)
        assert bits(float(run(Max(), xs))) == bits(0.0)
    assert type(run(Min(), [1.0, 1])) is int and type(run(Min(), [1, 1.0])) is int
    assert type(run(Max(), [1.0, 1])) is float and type(run(Max(), [1, 1.0])) is float
    assert math.isnan(run(Min(), [3.0, math.nan, 1.0]))
    assert math.isnan(run(Max(), [math.nan, 3.0]))
    assert run(Min(), [None, 3, None, 2]) == 2 and run(Max(), [None]) is None
    assert run(Max(), ["b", "c", "a"]) == "c"


# -- Histogram --------------------------------------------------------------------


@settings(deadline=None)
@given(
    st.lists(finite_floats, min_size=0, max_size=6, unique=True).map(sorted),
    st.lists(st.one_of(finite_floats, st.integers(-100, 100)), max_size=60),
)
def test_histogram_against_brute_force(bounds: list[float], xs: list[Any]) -> None:
    edges = [-math.inf, *bounds, math.inf]
    expected = [sum(1 for x in xs if lo <= x < hi) for lo, hi in pairwise(edges)]
    expected[0] += sum(1 for x in xs if x == -math.inf)
    h = Histogram(bounds)
    assert run(h, xs) == {"bounds": bounds, "counts": expected}


def test_histogram_buckets_are_half_open_and_validated() -> None:
    h = Histogram([0, 10])
    assert run(h, [-1, 0, 5, 10, 99]) == {"bounds": [0, 10], "counts": [1, 2, 2]}
    for bad in ([1, 1], [2, 1], [0, math.nan], [0, math.inf], ["a"]):
        with pytest.raises(ConfigError, match="Histogram bounds"):
            Histogram(bad)
    a = h.add_many(h.zero(), [1, 2, 20])
    assert h.is_zero(h.subtract(a, a))


# -- Distinct ---------------------------------------------------------------------


@pytest.mark.parametrize("precision", [10, 12, 14])
def test_distinct_error_on_100k_values_is_within_three_standard_errors(precision: int) -> None:
    n = 100_000
    d = Distinct(precision)
    est = run(d, [f"device-{i}" for i in range(n)] * 2)  # duplicates do not count
    sigma = 1.04 / math.sqrt(2**precision)
    assert abs(est - n) / n < 3 * sigma, (est, 3 * sigma)


def test_distinct_small_counts_are_near_exact_and_merge_is_exact() -> None:
    d = Distinct()
    for n in (0, 1, 2, 10, 100, 1000):
        assert abs(run(d, list(range(n))) - n) <= max(2, n * 4 // 100)  # ~3 sigma of linear counting
    a = d.add_many(d.zero(), range(6000))
    b = d.add_many(d.zero(), range(3000, 9000))
    assert d.merge(a, b) == d.add_many(d.zero(), range(9000))


def test_distinct_hash_is_stable_and_canonical() -> None:
    d = Distinct(4)
    # the register comes from xxh64 of the MessagePack bytes, never hash()
    h = xxhash.xxh64_intdigest(b"\xa1a")
    regs = d.add(d.zero(), "a")
    assert regs[h >> 60] == 61 - (h & (2**60 - 1)).bit_length()
    assert d.add(d.zero(), {"a": 1, "b": 2}) == d.add(d.zero(), {"b": 2, "a": 1})
    assert d.add(d.zero(), (1, "x")) == d.add(d.zero(), [1, "x"])
    assert run(d, [2**70, 2**70, -(2**70)]) == 2  # ints beyond 64 bits hash too
    with pytest.raises(TypeError, match="Distinct cannot hash"):
        d.add(d.zero(), object())
    with pytest.raises(ConfigError, match="precision"):
        Distinct(3)


# -- TopK / TopByValue --------------------------------------------------------------


def brute_top(counts: dict[Any, Any], n: int) -> list[list[Any]]:
    return [[k, c] for k, c in sorted(counts.items(), key=lambda kc: (-kc[1], kc[0]))[:n]]


@settings(deadline=None)
@given(st.lists(st.integers(0, 30), max_size=200), st.integers(1, 12))
def test_top_k_against_counter(xs: list[int], n: int) -> None:
    assert run(TopK(n), xs) == brute_top(Counter(xs), n)


def test_top_k_orders_ties_by_value_and_subtract_drops_zeros() -> None:
    t = TopK(2)
    assert run(t, ["b", "a", "b", "c", "a", "b"]) == [["b", 3], ["a", 2]]
    assert run(t, ["z", "y", "x"]) == [["x", 1], ["y", 1]]
    a = t.add_many(t.zero(), "aab")
    b = t.add_many(t.zero(), "b")
    assert t.subtract(a, b) == {"a": 2}
    assert run(TopK(5), [2, "a", 1, "b"]) == [[1, 1], [2, 1], ["a", 1], ["b", 1]]  # numbers, then text


@settings(deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefg"), st.integers(-5, 5)), max_size=100), st.integers(1, 8))
def test_top_by_value_against_group_by(pairs: list[tuple[str, int]], n: int) -> None:
    sums: dict[str, int] = {}
    for k, v in pairs:
        sums[k] = sums.get(k, 0) + v
    assert run(TopByValue(Sum(), n), pairs) == brute_top(sums, n)  # keys summing to 0 included
    counts = Counter(k for k, _ in pairs)
    assert run(TopByValue(Count(), n), pairs) == brute_top(counts, n)
    maxes = {k: max(v for kk, v in pairs if kk == k) for k in counts}
    assert run(TopByValue(Max(), n), pairs) == brute_top(maxes, n)


def test_top_by_value_hashtags_and_validation() -> None:
    t = TopByValue(Count(), 2)
    assert run(t, [("#a", 1), ("#b", 1), ("#a", 1), ("#c", 1)]) == [["#a", 2], ["#b", 1]]
    assert TopByValue(Reduce(operator.add, operator.sub), 3).has_subtract
    assert not TopByValue(Max(), 3).has_subtract
    for bad in (lambda: TopByValue(Stats(), 3), lambda: TopByValue(Count(), 0), lambda: TopK(-1)):
        with pytest.raises(ConfigError):
            bad()


# -- Reduce / Last ----------------------------------------------------------------


def test_reduce_with_and_without_inverse() -> None:
    r = Reduce(operator.mul)
    assert run(r, [2, 3, 4]) == 24 and run(r, []) is None and not r.has_subtract
    with pytest.raises(NotImplementedError):
        r.subtract(r.zero(), r.zero())
    s = Reduce(operator.add, operator.sub)
    a = s.add_many(s.zero(), [10**30, 1])
    b = s.add_many(s.zero(), [5])
    assert s.result(s.merge(a, b)) == 10**30 + 6  # ints stay exact
    assert s.result(s.subtract(s.merge(a, b), b)) == 10**30 + 1
    assert s.is_zero(s.subtract(a, a))  # back to the private zero, not 0
    assert pickle.loads(pickle.dumps(s.zero())) is s.zero()


def test_reducer_maps_min_and_max_to_builtins() -> None:
    assert reducer(max) == Max() and reducer(min) == Min()
    assert isinstance(reducer(operator.add), Reduce)
    assert repr(reducer(operator.add, operator.sub)) == "Reduce(operator.add, inv=operator.sub)"


def test_last_keeps_the_largest_order_key() -> None:
    last = Last()
    pairs = [((5, 0, 1), "b"), ((9, 1, 0), "c"), ((1, 0, 0), "a")]
    assert run(last, pairs) == "c" and run(last, []) is None
    assert run(last, [([9, 1, 0], "x"), ((9, 0, 0), "y")]) == "x"  # JSON lists are keys too
    assert run(last, [((1,), "b"), ((1,), "a")]) == run(last, [((1,), "a"), ((1,), "b")]) == "b"


# -- spec, repr, JSON --------------------------------------------------------------

ALL = [
    Count(), Sum(), Min(), Max(), Mean(), Stats(), Histogram([0, 1.5]), Distinct(8), TopK(3),
    TopByValue(Count(), 2), TopByValue(TopByValue(Sum(), 1), 2), Last(),
]


@pytest.mark.parametrize("agg", ALL, ids=repr)
def test_spec_is_json_and_rebuilds_an_equal_aggregator(agg: Aggregator[Any, Any, Any]) -> None:
    spec = json.loads(json.dumps(agg.spec()))
    assert spec["name"] == agg.name
    rebuilt = from_spec(spec)
    assert rebuilt == agg and hash(rebuilt) == hash(agg) and repr(rebuilt) == repr(agg)
    assert "object at" not in repr(agg)


@pytest.mark.parametrize("agg", ALL, ids=repr)
def test_results_are_json_friendly(agg: Aggregator[Any, Any, Any]) -> None:
    values: list[Any] = [1, 2.5, 2.5, 7]
    if isinstance(agg, TopByValue):
        values = [("k", ("a", 1)), ("j", ("b", 2))] if isinstance(agg.inner, TopByValue) else [("k", 1), ("j", 2)]
    if isinstance(agg, Last):
        values = [((1, 0, 0), {"v": 1})]
    json.dumps(run(agg, values), allow_nan=False)
    json.dumps(agg.result(agg.zero()), allow_nan=False)


def test_from_spec_errors_say_what_to_do() -> None:
    with pytest.raises(ConfigError, match="pickle"):
        from_spec(Reduce(operator.add).spec())
    with pytest.raises(ConfigError, match="unknown aggregator 'median'"):
        from_spec({"name": "median"})
    with pytest.raises(ConfigError, match="bad aggregator spec"):
        from_spec({"name": "top_k", "k": 3})
    with pytest.raises(ConfigError, match="bad aggregator spec"):
        from_spec({"name": "count", "n": 3})
    with pytest.raises(ConfigError):
        from_spec({"n": 3})  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.sampled_from(["a", "b", 3, (1, 2)]),
                          st.sampled_from([1, 1, 1, 2, 1.0, True, -1])), max_size=40))
@settings(deadline=None, max_examples=200)
def test_reduce_combine_pairs_equals_the_fold_or_declines(pairs):
    """The counting fast path gives the accumulators of add_many, or None."""
    import operator

    from fluvial.aggregators import Reduce

    r = Reduce(operator.add)
    fast = r.combine_pairs(pairs)
    groups: dict = {}
    for k, v in pairs:
        groups.setdefault(k, []).append(v)
    slow = {k: r.add_many(r.zero(), vs) for k, vs in groups.items()}
    if fast is None:
        assert not pairs or any(type(v) is not int or v != 1 for _, v in pairs)
    else:
        assert fast == slow
        assert all(type(acc[1]) is int for acc in fast.values())
