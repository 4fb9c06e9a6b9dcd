"""What the simulated fleet sends: :class:`Workload`, a pure, seeded description of the
devices' events (what they measure, when they go offline, what users tweet), and
:class:`Timeline`, one pass over it. No I/O, and no clock but ``start_ms``.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from fluvial.errors import ConfigError
from fluvial.events.envelope import Event

__all__ = ["KINDS", "SENSORS", "Timeline", "Workload", "check_int"]

KINDS = ("reading", "tweet")
"""The event kinds the workload can produce (builtin schemas)."""


class _Sensor(NamedTuple):
    low: float        # a device's baseline is drawn in [low, high)
    high: float
    noise: float      # standard deviation of one measurement around the level
    drift: float      # standard deviation of the level's random walk, per reading
    trend: float      # deterministic change of the level, per reading (a battery drains)
    floor: float
    ceiling: float


SENSORS: dict[str, _Sensor] = {
    "temperature": _Sensor(15.0, 28.0, 0.3, 0.02, 0.0, -40.0, 85.0),
    "humidity": _Sensor(30.0, 70.0, 1.5, 0.05, 0.0, 0.0, 100.0),
    "pressure": _Sensor(995.0, 1030.0, 0.4, 0.03, 0.0, 870.0, 1085.0),
    "battery": _Sensor(60.0, 100.0, 0.05, 0.0, -0.002, 0.0, 100.0),
    "co2": _Sensor(400.0, 900.0, 15.0, 0.5, 0.0, 350.0, 5000.0),
}
"""Sensor name -> how its readings behave. A device has 2 to 4 of them."""

_WORDS = ("the", "sensor", "data", "is", "live", "today", "stream", "look", "at", "this", "new",
          "pipeline", "late", "events", "again", "window", "spike", "in", "my", "dashboard", "why",
          "so", "fast", "edge", "gateway", "reboot", "batch", "layer", "merge", "nice")
_TAGS = ("#iot", "#edge", "#streaming", "#bigdata", "#lambda", "#kappa", "#sensors", "#mqtt",
         "#kafka", "#spark", "#flink", "#python", "#ml", "#cloud", "#devops", "#5g", "#smartcity",
         "#energy", "#weather", "#analytics", *(f"#tag{i}" for i in range(80)))
_TAG_CUM_WEIGHTS = tuple(itertools.accumulate(1.0 / (rank + 1) ** 1.1 for rank in range(len(_TAGS))))


@dataclass(frozen=True, kw_only=True)
class Workload:
    """What the simulated fleet does: a pure, seeded description of its events.

    Args:
        devices: How many sensor devices (``dev-0000``, ``dev-0001``, ...).
        rate: Events per second measured by the whole fleet, split evenly between ``kinds``.
        kinds: ``"reading"`` (device readings) and/or ``"tweet"`` (users' tweets).
        seed: Everything random derives from ``random.Random(seed)``.
        start_ms: Epoch ms of offset 0, the first ``ts`` (default: now, at construction).
            The same seed and start give exactly the same events.
        offline_fraction: Share of devices offline at any time, in ``[0, 1)``.
        offline_spell_s: ``(shortest, longest)`` offline spell in seconds of simulated time.
        buffer_size: Readings an offline device keeps; when full it drops the oldest
            (and counts them: :attr:`SimulatorReport.buffer_dropped`).
        users: How many tweeting users (``user-000``, ...).
        first_seq: Where every device's and user's ``seq`` counter starts. The server
            stores a ``(device, seq)`` once, so a second run against the same server
            needs seqs beyond those of the first to be stored.

    Example:
        >>> w = Workload(devices=10, rate=100, kinds=("tweet",), seed=7, start_ms=0)
        >>> e = w.events(1)[0]
        >>> (e.kind, e.device == e.payload["user"], "#" in e.payload["text"])
        ('tweet', True, True)
    """

    devices: int
    rate: float
    kinds: tuple[str, ...] = ("reading",)
    seed: int = 0
    start_ms: int | None = None
    offline_fraction: float = 0.02
    offline_spell_s: tuple[float, float] = (30.0, 120.0)
    buffer_size: int = 10_000
    users: int = 1000
    first_seq: int = 0

    def __post_init__(self) -> None:
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        object.__setattr__(self, "kinds", kinds)
        if self.start_ms is None:
            object.__setattr__(self, "start_ms", int(time.time() * 1000))
        check_int("devices", self.devices, 1)
        if isinstance(self.rate, bool) or not isinstance(self.rate, int | float) \
                or not 0 < self.rate < math.inf:
            raise ConfigError(f"rate must be a number of events per second > 0, got {self.rate!r}")
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ConfigError(f"unknown event kind(s) {', '.join(map(repr, unknown)) or '(none given)'}: "
                              f"the simulator produces {', '.join(KINDS)}")
        if len(set(kinds)) != len(kinds):
            raise ConfigError(f"kinds are repeated in {', '.join(kinds)}: name each once")
        if not 0 <= self.offline_fraction < 1:
            raise ConfigError(f"offline_fraction must be in [0, 1), got {self.offline_fraction!r}")
        low, high = self.offline_spell_s
        if not 0 < low <= high:
            raise ConfigError(f"offline_spell_s must be (shortest, longest) with 0 < shortest <= longest, "
                              f"got {self.offline_spell_s!r}")
        check_int("buffer_size", self.buffer_size, 1)
        check_int("users", self.users, 1)
        check_int("first_seq", self.first_seq, 0)

    def timeline(self) -> Iterator[tuple[float, Event]]:
        """Yield ``(sent_at_ms, event)`` forever, in the order the fleet sends them.

        ``sent_at_ms`` is the offset from the start at which the event leaves its
        device; it never decreases. A backlog is sent when its device comes back.
        """
        return iter(Timeline(self))

    def events(self, n: int) -> list[Event]:
        """The first ``n`` events the fleet sends."""
        return [ev for _, ev in itertools.islice(self.timeline(), n)]

    def generate(self, seconds: float) -> list[Event]:
        """The events the fleet sends during its first ``seconds`` (of simulated time)."""
        end_ms = seconds * 1000
        return [ev for _, ev in itertools.takewhile(lambda p: p[0] < end_ms, self.timeline())]


def check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    """Raise ConfigError unless ``value`` is an integer >= ``low`` (and <= ``high``, if given)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise ConfigError(f"{name} must be an integer {bounds}, got {value!r}")


class _Device:
    __slots__ = ("backlog", "change_ms", "id", "levels", "online", "reads", "sensors", "seq")

    def __init__(self, id: str, sensors: list[str], levels: list[float], online: bool,
                 change_ms: float, buffer_size: int, first_seq: int) -> None:
        self.id = id
        self.sensors = sensors
        self.levels = levels
        self.online = online
        self.change_ms = change_ms          # when it next goes offline (or comes back)
        self.backlog: deque[tuple[int, str, float]] = deque(maxlen=buffer_size)
        self.reads = 0
        self.seq = first_seq


class Timeline:
    """One pass over a workload (iterate it for ``(sent_at_ms, event)``); its counters say what
    offline devices lost or still hold."""

    def __init__(self, w: Workload) -> None:
        self.w = w
        self.rng = rng = random.Random(w.seed)
        self.buffer_dropped = 0
        low, high = w.offline_spell_s
        f = w.offline_fraction
        self._mean_online_ms = (low + high) / 2 * 1000 * (1 - f) / f if f > 0 else math.inf
        self.devices: list[_Device] = []
        if "reading" in w.kinds:
            names = list(SENSORS)
            for i in range(w.devices):
                sensors = rng.sample(names, rng.randint(2, 4))
                levels = [rng.uniform(SENSORS[s].low, SENSORS[s].high) for s in sensors]
                offline = f > 0 and rng.random() < f  # start in the steady state
                change = (rng.uniform(low, high) * 1000 * rng.random() if offline
                          else rng.expovariate(1 / self._mean_online_ms) if f > 0 else math.inf)
                self.devices.append(_Device(f"dev-{i:04d}", sensors, levels, not offline, change,
                                            w.buffer_size, w.first_seq))
        self._user_seq = [w.first_seq] * w.users

    def buffered(self) -> int:
        """Readings held by devices that are offline now."""
        return sum(len(d.backlog) for d in self.devices)

    def __iter__(self) -> Iterator[tuple[float, Event]]:
        step_ms = 1000 * len(self.w.kinds) / self.w.rate
        reading_k = 0 if "reading" in self.w.kinds else None
        tweet_k = 0 if "tweet" in self.w.kinds else None
        while True:
            reading_ms = math.inf if reading_k is None else reading_k * step_ms
            tweet_ms = math.inf if tweet_k is None else tweet_k * step_ms
            if reading_k is not None and reading_ms <= tweet_ms:
                yield from self._reading(reading_k, reading_ms)
                reading_k += 1
            else:
                assert tweet_k is not None
                yield tweet_ms, self._tweet(tweet_ms)
                tweet_k += 1

    def _reading(self, k: int, at_ms: float) -> Iterator[tuple[float, Event]]:
        rng, start_ms = self.rng, self.w.start_ms
        assert start_ms is not None
        d = self.devices[k % len(self.devices)]
        back = False
        while at_ms >= d.change_ms:
            if d.online:
                d.online = False
                d.change_ms += rng.uniform(*self.w.offline_spell_s) * 1000
            else:
                d.online, back = True, True
                d.change_ms += rng.expovariate(1 / self._mean_online_ms)
        i = d.reads % len(d.sensors)
        d.reads += 1
        sensor, spec = d.sensors[i], SENSORS[d.sensors[i]]
        level = min(max(d.levels[i] + spec.trend + rng.gauss(0, spec.drift), spec.floor), spec.ceiling)
        d.levels[i] = level
        value = round(min(max(level + rng.gauss(0, spec.noise), spec.floor), spec.ceiling), 2)
        ts = start_ms + int(at_ms)
        if not d.online:
            if len(d.backlog) == d.backlog.maxlen:
                self.buffer_dropped += 1  # the deque drops the oldest
            d.backlog.append((ts, sensor, value))
            return
        if back:
            while d.backlog:
                old_ts, old_sensor, old_value = d.backlog.popleft()
                yield at_ms, self._event(d, old_ts, old_sensor, old_value)
        yield at_ms, self._event(d, ts, sensor, value)

    @staticmethod
    def _event(d: _Device, ts: int, sensor: str, value: float) -> Event:
        # seq is numbered when the reading leaves the device: no gaps, even after drops
        seq, d.seq = d.seq, d.seq + 1
        return Event(device=d.id, kind="reading", ts=ts, seq=seq, payload={"kind": sensor, "value": value})

    def _tweet(self, at_ms: float) -> Event:
        rng, start_ms = self.rng, self.w.start_ms
        assert start_ms is not None
        u = rng.randrange(self.w.users)
        user = f"user-{u:03d}"
        words = rng.choices(_WORDS, k=rng.randint(3, 9))
        for tag in rng.choices(_TAGS, cum_weights=_TAG_CUM_WEIGHTS, k=rng.randint(1, 3)):
            words.insert(rng.randint(0, len(words)), tag)
        seq, self._user_seq[u] = self._user_seq[u], self._user_seq[u] + 1
        return Event(device=user, kind="tweet", ts=start_ms + int(at_ms), seq=seq,
                     payload={"user": user, "text": " ".join(words)})
