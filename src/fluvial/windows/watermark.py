"""Event time of a windowed operator: per device, per input partition, and what is late.

Devices are not a stream of tweets: they go offline and flush a backlog in their own
order later, and some have a clock that is wrong.  So a windowed operator keeps, for
each input partition (a log partition, a file, a queue), the largest event time seen
in it (the *partition high*) and, for events of devices, the largest event time seen
from each device (the *device high*).  Each element is judged against them *before*
it moves them, in log order:

* **late**: more than ``allowed_lateness_ms`` behind its device's high (behind the
  partition's high where the operator tracks partitions only, ``per="partition"``,
  or the element has no device).  Late elements are counted and go to the ``late()``
  side output; a backlog a device flushes in its own order is *not* late.
* **old**: more than ``horizon_ms`` (the correction horizon) behind its partition's
  high.  Views of the aggregation take every element that is not old, late or not
  (a late element corrects the stored row of its window); old ones are left to the
  batch layer.  A replay of the log (Kappa reprocess) has no horizon: nothing the log
  holds is old for it.
* **closed**: more than ``allowed_lateness_ms + idle_ms`` behind its partition's
  high (``allowed_lateness_ms`` where the operator tracks partitions only).  State
  downstream of the aggregation (``save_to``, per-key state, joins on its rows) takes
  only elements that are not closed, and the operator drops the state of a window
  once every partition's high has passed its end by that much: a device that is
  quiet, or behind by more than ``idle_ms``, holds no window open (Flink's
  ``withIdleness``, measured in the partition's event time rather than the wall
  clock, so that a replay closes the same windows).
* **future**: stamped more than the source's margin ahead of the time the log stored
  the event (the source marks them: their device is ``None``).  They are kept, never
  late, and move no high: a device with a clock hours ahead holds nobody back.

Each flag depends only on the order of records inside each partition, which the log
fixes, so a crash and a restart with other micro-batch boundaries flags the same
events.

Highs live in one dict: ``origin -> partition high`` and ``(origin, device) -> device
high`` (a checkpoint written before device highs existed holds only the former).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from fluvial.errors import ConfigError

__all__ = ["CLOSED", "DEFAULT_FUTURE_MS", "DEFAULT_HORIZON_MS", "DEFAULT_IDLE_MS", "LATE", "OLD", "EventTime",
           "Watermarks"]

_NEG_INF = -(2**63)
LATE, CLOSED, OLD = 1, 2, 4
DEFAULT_IDLE_MS = 60_000
DEFAULT_HORIZON_MS = 7 * 24 * 3600 * 1000
DEFAULT_FUTURE_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class EventTime:
    """How a windowed aggregation tracks event time (see the module's text).

    Attributes:
        per: ``"device"`` (highs per device, for events of the log) or ``"partition"``.
        idle_ms: How far behind its partition a device may be and still hold windows open.
        horizon_ms: How far back late elements still correct the views.
        lateness_ms: The allowed lateness (checked against the others only).
    """

    per: str = "device"
    idle_ms: int = DEFAULT_IDLE_MS
    horizon_ms: int = DEFAULT_HORIZON_MS
    lateness_ms: int = 0

    def __post_init__(self) -> None:
        if self.per not in ("device", "partition"):
            raise ConfigError(f"watermark must be 'device' or 'partition', got {self.per!r}")
        for name, value in (("allowed_lateness_ms", self.lateness_ms), ("idle_timeout_ms", self.idle_ms),
                            ("correction_horizon_ms", self.horizon_ms)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be an integer number of milliseconds >= 0, got {value!r}")
        if self.horizon_ms < self.lateness_ms:
            raise ConfigError(f"correction_horizon_ms ({self.horizon_ms}) must be at least allowed_lateness_ms "
                              f"({self.lateness_ms}): late events within the allowed lateness always count")


class Watermarks:
    """The highs of one windowed operator, and the flags of the elements it sees.

    Example:
        >>> wm = Watermarks(allowed_lateness_ms=10, idle_ms=0, horizon_ms=30)
        >>> wm.split("p0", [100, 95, 80, 120, 60], ["a", "a", "a", "b", "a"])
        [0, 0, 3, 0, 7]

    ``80`` is late for device ``a`` (its high is 100) and its window is closed; ``60``
    is also beyond the horizon (``120 - 30``).
    """

    def __init__(self, allowed_lateness_ms: int = 0, highs: dict[Hashable, int] | None = None, *,
                 per: str = "device", idle_ms: int = DEFAULT_IDLE_MS,
                 horizon_ms: int | None = DEFAULT_HORIZON_MS) -> None:
        self.allowed_lateness_ms = allowed_lateness_ms
        self.per_device = per == "device"
        self.idle_ms = idle_ms if self.per_device else 0
        self.horizon_ms = horizon_ms
        self._highs: dict[Hashable, int] = highs if highs is not None else {}   # updated in place

    def split(self, origin: Hashable, ts_ms: Sequence[int],
              devices: Sequence[Hashable | None] | None = None) -> list[int]:
        """Flags (``LATE | CLOSED | OLD`` bits, 0 = on time), in order, of the elements of
        ``origin`` with event times ``ts_ms`` and devices ``devices`` (``None`` for an
        element stamped in the future); advances the highs."""
        highs = self._highs
        high = highs.get(origin, _NEG_INF)
        lateness = self.allowed_lateness_ms
        close = lateness + self.idle_ms
        horizon = self.horizon_ms
        flags: list[int] = []
        append = flags.append
        if devices is None or not self.per_device:
            for i, ts in enumerate(ts_ms):
                if devices is not None and devices[i] is None:
                    append(0)   # stamped in the future: judged by nothing, moves nothing
                    continue
                if ts >= high - lateness:
                    append(0)
                else:
                    append(LATE | (CLOSED if ts < high - close else 0)
                           | (OLD if horizon is not None and ts < high - horizon else 0))
                if ts > high:
                    high = ts
        else:
            get = highs.get
            for ts, device in zip(ts_ms, devices):
                if device is None:
                    append(0)
                    continue
                key = (origin, device)
                own = get(key, _NEG_INF)
                flag = LATE if ts < own - lateness else 0
                if ts < high - close:
                    flag |= CLOSED
                if horizon is not None and ts < high - horizon:
                    flag |= OLD
                append(flag)
                if ts > own:
                    highs[key] = ts
                if ts > high:
                    high = ts
        if high != _NEG_INF:   # (only future-stamped elements so far: no high yet)
            highs[origin] = high
        return flags

    def low(self) -> int | None:
        """The operator's watermark: windows ending at or before it are closed in every
        partition (None before any element)."""
        parts = [h for k, h in self._highs.items() if not _is_device_key(k)]
        return min(parts) - self.allowed_lateness_ms - self.idle_ms if parts else None

    def forget_quiet(self) -> int:
        """Drops the highs of devices behind their partition's high by more than the
        horizon (their flags cannot change: an element of theirs is either newer than
        their high or old anyway); returns how many.  Keeps state bounded by the devices
        active within the horizon."""
        if self.horizon_ms is None or not self.per_device:
            return 0
        horizon = self.horizon_ms
        highs = self._highs
        stale = [k for k, h in highs.items() if _is_device_key(k) and k[0] in highs  # type: ignore[index]
                 and h < highs[k[0]] - horizon]  # type: ignore[index]
        for k in stale:
            del highs[k]
        return len(stale)

    def watermark(self, origin: Hashable) -> int | None:
        """The watermark of one partition (None before its first element)."""
        high = self._highs.get(origin)
        return None if high is None else high - self.allowed_lateness_ms - self.idle_ms


def _is_device_key(key: Hashable) -> bool:
    return type(key) is tuple and len(key) == 2 and type(key[0]) is tuple
