"""Window shapes and how partial aggregates become windows."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard, TypeVar

from fluvial.aggregators.base import Aggregator
from fluvial.errors import ConfigError

Window = tuple[int, int]
A = TypeVar("A")  # an aggregator's accumulator


class WindowShape:
    """Base of the window shapes.  Subclasses are frozen, keyword-only configs."""

    kind: str = ""

    def storage_window(self, ts_ms: int) -> Window:
        """The unit an event is stored in (a pane, or a one-event session)."""
        raise NotImplementedError

    def windows_of(self, ts_ms: int) -> list[Window]:
        """Every window containing ``ts_ms`` (reference definition, used by tests)."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError


def _check_ms(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer number of milliseconds >= {minimum}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Tumbling(WindowShape):
    """Fixed, non-overlapping windows ``[k*length + offset, (k+1)*length + offset)``.

    Example:
        >>> Tumbling(length_ms=60_000).windows_of(90_000)
        [(60000, 120000)]
    """

    length_ms: int
    offset_ms: int = 0
    kind = "tumbling"

    def __post_init__(self) -> None:
        _check_ms("length_ms", self.length_ms)
        _check_ms("offset_ms", self.offset_ms, 0)

    def storage_window(self, ts_ms: int) -> Window:
        start = ts_ms - (ts_ms - self.offset_ms) % self.length_ms
        return (start, start + self.length_ms)

    def windows_of(self, ts_ms: int) -> list[Window]:
        return [self.storage_window(ts_ms)]

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "length_ms": self.length_ms, "offset_ms": self.offset_ms}


@dataclass(frozen=True, kw_only=True)
class Sliding(WindowShape):
    """Overlapping windows of ``length_ms`` starting every ``slide_ms``.

    Example:
        >>> Sliding(length_ms=3_000, slide_ms=1_000).windows_of(2_500)
        [(0, 3000), (1000, 4000), (2000, 5000)]
    """

    length_ms: int
    slide_ms: int
    offset_ms: int = 0
    kind = "sliding"

    def __post_init__(self) -> None:
        _check_ms("length_ms", self.length_ms)
        _check_ms("slide_ms", self.slide_ms)
        _check_ms("offset_ms", self.offset_ms, 0)
        if self.slide_ms > self.length_ms:
            raise ConfigError(
                f"slide_ms ({self.slide_ms}) is longer than length_ms ({self.length_ms}): "
                "events between windows would be lost; use a slide <= length"
            )

    @property
    def pane_ms(self) -> int:
        return math.gcd(self.length_ms, self.slide_ms)

    def storage_window(self, ts_ms: int) -> Window:
        pane = self.pane_ms
        start = ts_ms - (ts_ms - self.offset_ms) % pane
        return (start, start + pane)

    def windows_of(self, ts_ms: int) -> list[Window]:
        last = ts_ms - (ts_ms - self.offset_ms) % self.slide_ms
        starts = range(last, ts_ms - self.length_ms, -self.slide_ms)
        return sorted((s, s + self.length_ms) for s in starts)

    def window_starts_of_pane(self, pane_start: int) -> range:
        """Starts of the windows that contain the whole pane at ``pane_start``."""
        last = pane_start - (pane_start - self.offset_ms) % self.slide_ms
        first = last - ((self.length_ms - self.pane_ms - (pane_start - last)) // self.slide_ms) * self.slide_ms
        return range(first, last + 1, self.slide_ms)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "length_ms": self.length_ms, "slide_ms": self.slide_ms,
                "offset_ms": self.offset_ms}


@dataclass(frozen=True, kw_only=True)
class Session(WindowShape):
    """Per-key activity windows: an event joins a session if it is less than
    ``gap_ms`` after the session's last event.  A session is
    ``[first_ts, last_ts + gap_ms)``.

    Example:
        >>> Session(gap_ms=1_000).storage_window(5_000)
        (5000, 6000)
    """

    gap_ms: int
    kind = "session"

    def __post_init__(self) -> None:
        _check_ms("gap_ms", self.gap_ms)

    def storage_window(self, ts_ms: int) -> Window:
        return (ts_ms, ts_ms + self.gap_ms)

    def windows_of(self, ts_ms: int) -> list[Window]:
        raise ConfigError("session windows depend on the other events of the key; use compose()")

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "gap_ms": self.gap_ms}


@dataclass(frozen=True, kw_only=True)
class Explicit(WindowShape):
    """Windows carried by the rows themselves (or none), stored and served as they
    are: the shape of latest-value views fed with :class:`~fluvial.flow.graph.Windowed`
    rows computed upstream."""

    kind = "explicit"

    def storage_window(self, ts_ms: int) -> Window:
        raise ConfigError("explicit windows come with the rows; there is no storage window to compute")

    def windows_of(self, ts_ms: int) -> list[Window]:
        raise ConfigError("explicit windows come with the rows")

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind}


def shape_from_spec(spec: Mapping[str, Any] | None) -> WindowShape | None:
    """Rebuild a shape from :meth:`WindowShape.spec` output (``None`` for no window)."""
    if spec is None:
        return None
    fields = {k: v for k, v in spec.items() if k != "kind"}
    kinds: dict[str, Callable[..., WindowShape]] = {
        "tumbling": Tumbling, "sliding": Sliding, "session": Session, "explicit": Explicit}
    try:
        return kinds[spec["kind"]](**fields)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"not a window spec: {dict(spec)!r} ({exc})") from None


def compose(shape: WindowShape | None, parts: Iterable[tuple[Window | None, A]],
            agg: Aggregator[Any, A, Any]) -> dict[Window | None, A]:
    """Merge stored partial accumulators of ONE key into accumulators per window.

    ``parts`` holds ``(storage_window, acc)`` pairs (panes for tumbling and
    sliding shapes, session fragments for sessions; ``None`` windows when the
    view has no window).  Several parts may share a storage window (a batch
    part and a realtime part): they are merged first.  Returns only windows
    that hold at least one non-empty part.
    """
    panes: dict[Window | None, A] = {}
    for window, acc in parts:
        panes[window] = agg.merge(panes[window], acc) if window in panes else acc
    if shape is None or isinstance(shape, (Tumbling, Explicit)):
        return panes
    if not _all_windowed(panes):
        raise ValueError(f"{shape.kind} windows are composed from parts with a window, got a part without one")
    if isinstance(shape, Session):
        return _compose_sessions(panes, agg)
    assert isinstance(shape, Sliding)
    return _compose_sliding(shape, panes, agg)


def _all_windowed(panes: dict[Window | None, A]) -> TypeGuard[dict[Window, A]]:
    return None not in panes


def _compose_sessions(fragments: dict[Window, A], agg: Aggregator[Any, A, Any]) -> dict[Window | None, A]:
    out: dict[Window | None, A] = {}
    current: tuple[int, int, A] | None = None
    for (start, end), acc in sorted(fragments.items(), key=lambda item: item[0]):
        if current is not None and start < current[1]:
            current = (current[0], max(current[1], end), agg.merge(current[2], acc))
            continue
        if current is not None:
            out[(current[0], current[1])] = current[2]
        current = (start, end, acc)
    if current is not None:
        out[(current[0], current[1])] = current[2]
    return out


def _compose_sliding(shape: Sliding, panes: dict[Window, A],
                     agg: Aggregator[Any, A, Any]) -> dict[Window | None, A]:
    if not panes:
        return {}
    pane_ms, slide, length = shape.pane_ms, shape.slide_ms, shape.length_ms
    starts: set[int] = set()
    for pane_start, _ in panes:
        starts.update(shape.window_starts_of_pane(pane_start))
    out: dict[Window | None, A] = {}
    prev: int | None = None
    acc = agg.zero()
    for start in sorted(starts):
        if agg.has_subtract and prev is not None and start - prev == slide:
            # Incremental: add the panes entering, subtract the panes leaving.
            for p in range(prev + length, start + length, pane_ms):
                if (p, p + pane_ms) in panes:
                    acc = agg.merge(acc, panes[(p, p + pane_ms)])
            for p in range(prev, start, pane_ms):
                if (p, p + pane_ms) in panes:
                    acc = agg.subtract(acc, panes[(p, p + pane_ms)])
        else:
            acc = agg.zero()
            for p in range(start, start + length, pane_ms):
                if (p, p + pane_ms) in panes:
                    acc = agg.merge(acc, panes[(p, p + pane_ms)])
        prev = start
        out[(start, start + length)] = acc
    return out
