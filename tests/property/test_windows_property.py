"""Window assignment: panes composed by ``fluvial.windows.compose`` against brute force.

Runners store one accumulator per *pane* (``shape.storage_window(ts)``) and
build windows at query time with ``compose``.  Here every event carries its
own id, the accumulator is the bag of ids, and the composed windows must be
exactly the brute-force assignment of each event to every half-open window
``[start, end)`` that contains it (:mod:`fluvial.testing.brute`, which
enumerates windows without the engine's modular arithmetic).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluvial.aggregators.base import Aggregator
from fluvial.testing import brute
from fluvial.windows import Session, Sliding, Tumbling, compose


class Bag(Aggregator[int, tuple[int, ...], tuple[int, ...]]):
    """The multiset of event ids seen, as a sorted tuple (optionally with an inverse)."""

    name = "bag"

    def __init__(self, *, invertible: bool) -> None:
        self.has_subtract = invertible

    def zero(self) -> tuple[int, ...]:
        return ()

    def add(self, acc: tuple[int, ...], value: int) -> tuple[int, ...]:
        return tuple(sorted((*acc, value)))

    def merge(self, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(a + b))

    def subtract(self, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
        left = Counter(a)
        left.subtract(b)
        assert all(n >= 0 for n in left.values()), f"subtract({a}, {b}) removes what is not there"
        return tuple(sorted(left.elements()))


def brute_windows(shape: Tumbling | Sliding, ts: int) -> list[tuple[int, int]]:
    if isinstance(shape, Tumbling):
        return brute.tumbling_windows(ts, shape.length_ms, shape.offset_ms)
    return brute.sliding_windows(ts, shape.length_ms, shape.slide_ms, shape.offset_ms)


def composed(shape: Any, parts: list[tuple[tuple[int, int], tuple[int, ...]]],
             agg: Aggregator[Any, Any, Any]) -> dict[Any, tuple[int, ...]]:
    return dict(compose(shape, parts, agg).items())


def expected_windows(shape: Tumbling | Sliding, stamps: list[int]) -> dict[tuple[int, int], tuple[int, ...]]:
    groups = brute.group((w, i) for i, ts in enumerate(stamps) for w in brute_windows(shape, ts))
    return {w: tuple(sorted(ids)) for w, ids in groups.items()}


def pane_parts(shape: Tumbling | Sliding, stamps: list[int]) -> list[tuple[tuple[int, int], tuple[int, ...]]]:
    """One part per event, in its storage pane (several parts may share a pane)."""
    return [(shape.storage_window(ts), (i,)) for i, ts in enumerate(stamps)]


# -- strategies ---------------------------------------------------------------------

tumbling = st.builds(lambda length, offset: Tumbling(length_ms=length, offset_ms=offset),
                     st.integers(1, 50), st.integers(0, 120))


@st.composite
def sliding(draw: st.DrawFn) -> Sliding:
    length = draw(st.integers(1, 60))
    divides = draw(st.booleans())
    if divides:
        slide = length // draw(st.sampled_from([d for d in range(1, length + 1) if length % d == 0]))
    else:
        slide = draw(st.integers(1, length))
    return Sliding(length_ms=length, slide_ms=slide, offset_ms=draw(st.integers(0, 150)))


stamps = st.lists(st.integers(-300, 300), max_size=40)


# -- tumbling and sliding -------------------------------------------------------------

@settings(deadline=None, max_examples=300)
@given(shape=st.one_of(tumbling, sliding()), stamps=stamps, invertible=st.booleans())
def test_panes_compose_into_the_brute_force_windows(shape: Tumbling | Sliding, stamps: list[int],
                                                     invertible: bool) -> None:
    agg = Bag(invertible=invertible)
    assert composed(shape, pane_parts(shape, stamps), agg) == expected_windows(shape, stamps)


@settings(deadline=None, max_examples=200)
@given(shape=st.one_of(tumbling, sliding()), ts=st.integers(-10_000, 10_000))
def test_storage_pane_lies_inside_every_window_of_its_events(shape: Tumbling | Sliding, ts: int) -> None:
    windows = brute_windows(shape, ts)
    assert shape.windows_of(ts) == windows
    start, end = shape.storage_window(ts)
    assert start <= ts < end
    for w_start, w_end in windows:
        assert w_start <= start and end <= w_end


@settings(deadline=None, max_examples=200)
@given(shape=st.one_of(tumbling, sliding()), stamps=stamps, invertible=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_compose_merges_parts_of_a_pane_from_several_sources(shape: Tumbling | Sliding, stamps: list[int],
                                                             invertible: bool, seed: int) -> None:
    """A batch part and a realtime part (any split of the events) compose like one part."""
    rnd = random.Random(seed)
    agg = Bag(invertible=invertible)
    sources: list[dict[tuple[int, int], tuple[int, ...]]] = [{}, {}, {}]
    for i, ts in enumerate(stamps):
        part = rnd.choice(sources)
        pane = shape.storage_window(ts)
        part[pane] = agg.add(part.get(pane, ()), i)
    parts = [item for part in sources for item in part.items()]
    rnd.shuffle(parts)
    assert composed(shape, parts, agg) == expected_windows(shape, stamps)


def test_sliding_window_membership_by_hand() -> None:
    """Sliding(length 3000, slide 1000): an event at 2500 is in three windows.

    ::

        time   0        1000      2000   2500 3000      4000      5000
               |---------|---------|------x--|---------|---------|
               [0, 3000)                  x
                         [1000, 4000)     x
                                   [2000, 5000)
                                          x
    """
    shape = Sliding(length_ms=3000, slide_ms=1000)
    agg = Bag(invertible=True)
    assert composed(shape, pane_parts(shape, [2500]), agg) == {
        (0, 3000): (0,), (1000, 4000): (0,), (2000, 5000): (0,)}


def test_sliding_slide_not_dividing_length_by_hand() -> None:
    """Sliding(length 5, slide 2): panes of gcd(5, 2) = 1 ms; windows start every 2 ms.

    ::

        time  0 1 2 3 4 5 6 7 8
              a       b
              [0 . . . 5)            a, b
                  [2 . . . 7)        b
                      [4 . . . 9)    b
         [-2 . . . 3)                a
        [-4 . . .1)                  a
    """
    shape = Sliding(length_ms=5, slide_ms=2)
    agg = Bag(invertible=False)
    assert shape.storage_window(4) == (4, 5)
    assert composed(shape, pane_parts(shape, [0, 4]), agg) == {
        (-4, 1): (0,), (-2, 3): (0,), (0, 5): (0, 1), (2, 7): (1,), (4, 9): (1,)}


def test_windows_are_half_open_by_hand() -> None:
    """An event exactly at a window's end belongs to the next window only.

    ::

        time  0          1000         2000
              [ a        )[b          )
              a = 999, b = 1000
    """
    shape = Tumbling(length_ms=1000)
    agg = Bag(invertible=True)
    assert composed(shape, pane_parts(shape, [999, 1000]), agg) == {(0, 1000): (0,), (1000, 2000): (1,)}


def test_tumbling_offset_and_negative_times_by_hand() -> None:
    """Tumbling(length 10, offset 3): windows [..., [-7, 3), [3, 13), ...).

    ::

        time  -7   -1 0   2 3          12 13
               [ a        b)[c          )
               a = -7, b = 2, c = 3
    """
    shape = Tumbling(length_ms=10, offset_ms=3)
    agg = Bag(invertible=True)
    assert composed(shape, pane_parts(shape, [-7, 2, 3]), agg) == {(-7, 3): (0, 1), (3, 13): (2,)}


# -- sessions ---------------------------------------------------------------------------

def expected_sessions(stamps: list[int], gap: int) -> dict[tuple[int, int], tuple[int, ...]]:
    return {w: tuple(sorted(ids)) for w, ids in brute.sessions([(ts, i) for i, ts in enumerate(stamps)], gap)}


@settings(deadline=None, max_examples=300)
@given(stamps=stamps, gap=st.integers(1, 40))
def test_one_event_fragments_compose_into_brute_force_sessions(stamps: list[int], gap: int) -> None:
    shape = Session(gap_ms=gap)
    parts = [(shape.storage_window(ts), (i,)) for i, ts in enumerate(stamps)]
    assert composed(shape, parts, Bag(invertible=False)) == expected_sessions(stamps, gap)


@settings(deadline=None, max_examples=300)
@given(stamps=stamps, gap=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_sessions_of_micro_batches_compose_into_sessions_of_all(stamps: list[int], gap: int,
                                                               seed: int) -> None:
    """Sessionize each micro-batch alone (any cut, any order), store the
    fragments: composing them gives the sessions of all the data."""
    rnd = random.Random(seed)
    batches: list[list[tuple[int, int]]] = [[] for _ in range(rnd.randint(1, 5))]
    for i, ts in enumerate(stamps):
        rnd.choice(batches).append((ts, i))
    parts = [(w, tuple(sorted(ids))) for batch in batches for w, ids in brute.sessions(batch, gap)]
    rnd.shuffle(parts)
    assert composed(Session(gap_ms=gap), parts, Bag(invertible=False)) == expected_sessions(stamps, gap)


def test_sessions_by_hand() -> None:
    """Session(gap 1000): a gap of exactly 1000 ms starts a new session.

    ::

        time  0    500       1500      2500      3500 3600      4600
              a    b         c         d              e
              [0 ......  1500)
                             [1500 2500)
                                       [2500   3500)
                                                      [3600  4600)

        A session is [first, last + gap); c comes exactly gap after b, so
        it is not in [0, 1500) and starts its own session, as d and e do.
    """
    stamps = [0, 500, 1500, 2500, 3600]
    expected = {(0, 1500): (0, 1), (1500, 2500): (2,), (2500, 3500): (3,), (3600, 4600): (4,)}
    assert expected_sessions(stamps, 1000) == expected
    shape = Session(gap_ms=1000)
    parts = [(shape.storage_window(ts), (i,)) for i, ts in enumerate(stamps)]
    assert composed(shape, parts, Bag(invertible=False)) == expected


def test_session_bridged_by_a_late_event_by_hand() -> None:
    """Two sessions of an early micro-batch merge when a later one fills the gap.

    ::

        batch 1   a=0          b=1500            gap 1000
                  [0, 1000)    [1500, 2500)
        batch 2          c=800
                         [800, 1800)   overlaps both
        all       [0 ..................... 2500)
    """
    parts = [((0, 1000), (0,)), ((1500, 2500), (1,)), ((800, 1800), (2,))]
    assert composed(Session(gap_ms=1000), parts, Bag(invertible=False)) == {(0, 2500): (0, 1, 2)}


@pytest.mark.parametrize("shape", [Tumbling(length_ms=7, offset_ms=2), Sliding(length_ms=9, slide_ms=6, offset_ms=1)])
def test_shape_arithmetic_matches_brute_force_over_a_range(shape: Tumbling | Sliding) -> None:
    for ts in range(-100, 100):
        assert shape.windows_of(ts) == brute_windows(shape, ts), ts
