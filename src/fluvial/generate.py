"""Deterministic workload data: the inputs of the quickstart, the examples and the benchmarks.

Each kind is a generator of text lines (without their newline), the same for
the same ``n`` and seed, on every machine and Python version >= 3.11
(``random.Random`` with a fixed seed, ``json.dumps``)::

    tweets    N tweets   {"ts": ms, "user": str, "text": str}, 8 words and 2 Zipf hashtags,
                         1000 tweets per simulated second from 2016-01-06T23:53:20Z
    readings  N readings {"device": str, "ts": ms, "kind": str, "value": float}, 10k devices,
                         10k readings per simulated second, ~1% out of order by up to 30 s
    fleet     N readings the same fields in arrival order: 1k devices, ~10% offline for 3-20 min
                         then flushing their backlog in order, ~3% sent 31-90 s late, a clock 2 h ahead
    words     N MiB      plain text, 12 Zipf words per line from a 50k-word vocabulary
    lines     N lines    {"device": str, "ts": ms, "text": str}, 1-14 Zipf words of the same
                         vocabulary, 10 lines per simulated second
    accel     N readings {"device": str, "ts": ms, "kind": "accel_x"|"accel_y"|"accel_z"|"battery",
                         "value": float}: 8 watches at 10 Hz per axis, one exercise per 2 s

``tweets``, ``readings`` and ``words`` with their default seeds (7, 11, 42) are
byte for byte the workloads the published benchmark figures were measured on.

Example:
    >>> from fluvial.generate import generate
    >>> next(generate("tweets", 3))[:40]
    '{"ts": 1452124400000, "user": "u87359", '
    >>> import io
    >>> out = io.BytesIO()
    >>> write("readings", 5, out)
    Written(kind='readings', records=5, bytes=401, seed=11)
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["KINDS", "MAX_MIB", "MAX_RECORDS", "Kind", "Written", "accel", "fleet", "generate", "lines",
           "readings", "tweets", "vocabulary", "words", "write", "zipf_weights"]

MAX_RECORDS = 1_000_000_000
"""The largest N of the kinds counted in records (about 100 GB of tweets)."""
MAX_MIB = 100_000
"""The largest N of ``words`` (MiB of text: about 100 GiB)."""

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_WRITE_LINES = 1_000          # lines per write() call


def vocabulary(rng: random.Random, n: int = 50_000) -> list[str]:
    """``n`` made-up words of 2-10 letters and a digit (``i % 7``), drawn from ``rng``."""
    return ["".join(rng.choice(_LETTERS) for _ in range(rng.randint(2, 10))) + str(i % 7)
            for i in range(n)]


def zipf_weights(n: int, s: float = 1.1) -> list[float]:
    """Zipf weights ``1 / r**s`` of the ranks 1..n (the first word is the most frequent)."""
    return [1.0 / (r ** s) for r in range(1, n + 1)]


def _cumulative(weights: list[float]) -> list[float]:
    # random.choices(weights=w) accumulates w on every call; passing the same sums
    # as cum_weights draws exactly the same values, once instead of per call
    return list(itertools.accumulate(weights))


def words(mib: int, seed: int = 42) -> Iterator[str]:
    """Lines of 12 space-separated Zipf words, 1000 lines at a time until at least ``mib`` MiB."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    cum = _cumulative(zipf_weights(len(vocab)))
    target, size = mib * 1024 * 1024, 0
    while size < target:
        chunk = rng.choices(vocab, cum_weights=cum, k=12 * 1000)
        block = [" ".join(chunk[i:i + 12]) for i in range(0, len(chunk), 12)]
        size += sum(len(line) + 1 for line in block)
        yield from block


def tweets(n: int, seed: int = 7) -> Iterator[str]:
    """``n`` tweets as JSON: ``{"ts", "user", "text"}``, 8 Zipf words then 2 Zipf hashtags.

    Event time starts at 1452124400000 and advances 1 ms per tweet. The words
    come from ``random.Random(seed)``, the 2000 hashtags from ``random.Random(seed + 1)``.
    """
    rng = random.Random(seed)
    vocab = vocabulary(rng, 5_000)
    tags = ["#" + t for t in vocabulary(random.Random(seed + 1), 2_000)]
    tag_cum, word_cum = _cumulative(zipf_weights(len(tags), 1.2)), _cumulative(zipf_weights(len(vocab)))
    t0 = 1_452_124_400_000
    for i in range(0, n, 1000):
        body = rng.choices(vocab, cum_weights=word_cum, k=8 * 1000)
        hashtags = rng.choices(tags, cum_weights=tag_cum, k=2 * 1000)
        for j in range(min(1000, n - i)):
            text = " ".join(body[j * 8:(j + 1) * 8] + hashtags[j * 2:(j + 1) * 2])
            yield json.dumps({"ts": t0 + i + j, "user": f"u{rng.randrange(100_000)}", "text": text})


READING_KINDS = ("temp", "humidity", "accel_x", "accel_y", "accel_z", "battery")


def readings(n: int, seed: int = 11) -> Iterator[str]:
    """``n`` sensor readings as JSON: ``{"device", "ts", "kind", "value"}``.

    10,000 devices (``dev-00000``...), a reading kind of :data:`READING_KINDS`, a
    value ~ N(20, 5) rounded to 3 decimals. Event time starts at 1700000000000 and
    advances 1 ms per 10 readings; ~1% of readings are stamped up to 30 s earlier.
    """
    rng = random.Random(seed)
    kinds = list(READING_KINDS)
    t0 = 1_700_000_000_000
    for k in range(n):
        ts = t0 + k // 10
        if rng.random() < 0.01:
            ts -= rng.randrange(30_000)
        yield json.dumps({"device": f"dev-{rng.randrange(10_000):05d}", "ts": ts,
                          "kind": rng.choice(kinds), "value": round(rng.gauss(20, 5), 3)})


def fleet(n: int, seed: int = 13) -> Iterator[str]:
    """``n`` sensor readings as JSON, as a fleet of devices delivers them: ``{"device", "ts",
    "kind", "value"}`` in *arrival* order.

    1,000 devices (``dev-0000``...), each reading about every 20 s of simulated time from
    1700000000000 (50 readings per simulated second: 100,000 readings span 33 minutes).
    ~10% of the devices go offline for 3-20 minutes at some point: they keep measuring and
    flush the backlog, in their own order, when they come back (or at the end).  ~3% of
    readings are sent 31-90 s late (behind their own device); device ``dev-0000``'s clock
    runs 2 hours ahead.
    """
    rng = random.Random(seed)
    devices, step_ms = 1_000, 20
    kinds = list(READING_KINDS)
    t0 = 1_700_000_000_000
    spells = random.Random(seed + 1)   # apart, so that the readings drawn do not depend on n
    offline: dict[int, tuple[int, int]] = {}   # device -> [start, end) of its offline spell (simulated ms)
    for d in spells.sample(range(devices), devices // 10):
        start = t0 + spells.randrange(n) * step_ms
        offline[d] = (start, start + spells.randrange(180_000, 1_200_001))
    backlog: dict[int, list[str]] = {}
    held: list[tuple[int, int, str]] = []   # (deliver at, order, line): readings sent late
    for k in range(n):
        now = t0 + k * step_ms
        d = rng.randrange(devices)
        ts = now + (7_200_000 if d == 0 else 0)
        line = json.dumps({"device": f"dev-{d:04d}", "ts": ts, "kind": rng.choice(kinds),
                           "value": round(rng.gauss(20, 5), 3)})
        while held and held[0][0] <= now:
            yield heapq.heappop(held)[2]
        spell = offline.get(d)
        if spell is not None and spell[0] <= now < spell[1]:
            backlog.setdefault(d, []).append(line)
            continue
        if d in backlog:
            yield from backlog.pop(d)            # back online: the backlog first, in order
        if rng.random() < 0.03:
            heapq.heappush(held, (now + rng.randrange(31_000, 90_001), k, line))
            continue
        yield line
    for _, _, line in sorted(held):
        yield line
    for d in sorted(backlog):
        yield from backlog[d]


def lines(n: int, seed: int = 42) -> Iterator[str]:
    """``n`` lines of text as JSON: ``{"device", "ts", "text"}`` (events of kind ``line``).

    1-14 Zipf words per line from the vocabulary of :func:`words` (same seed,
    same words), 100 devices (``dev-0000``...), event time from 1452011283000
    advancing 100 ms per line.
    """
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    cum = _cumulative(zipf_weights(len(vocab)))
    t0 = 1_452_011_283_000
    for i in range(0, n, 1000):
        sizes = [rng.randint(1, 14) for _ in range(min(1000, n - i))]
        drawn = iter(rng.choices(vocab, cum_weights=cum, k=sum(sizes)))
        for j, size in enumerate(sizes):
            text = " ".join(itertools.islice(drawn, size))
            yield json.dumps({"device": f"dev-{rng.randrange(100):04d}", "ts": t0 + (i + j) * 100,
                              "text": text})


EXERCISES: dict[str, tuple[float, float, float]] = {
    "rest": (0.05, 0.05, 0.05),
    "biceps_curl": (4.0, 0.5, 1.1),
    "squat": (0.5, 0.5, 5.0),
    "shoulder_press": (0.6, 4.0, 1.3),
}
"""Per exercise, the amplitude (m/s²) of the oscillation on x, y and z around (0, 0, 9.8)."""

ACCEL_DEVICES = 8
ACCEL_HZ = 10


def accel(n: int, seed: int = 5) -> Iterator[str]:
    """``n`` accelerometer readings as JSON: ``{"device", "ts", "kind", "value"}``.

    8 watches (``watch-0``...) sample ``accel_x``, ``accel_y`` and ``accel_z`` at
    10 Hz; each does one exercise of :data:`EXERCISES` per 2 s window (a sine of
    one period per window, plus N(0, 0.05) noise), and every 5 s a ``battery``
    reading. Event time starts at 1700000000000, never decreasing in file order.
    The shape of ``examples/muvr_classifier.py``'s input.
    """
    rng = random.Random(seed)
    t0 = 1_700_000_000_000
    per_window = 2 * ACCEL_HZ
    plan: list[tuple[float, float, float]] = []
    count = 0
    for step in itertools.count():
        if step % per_window == 0:
            plan = [EXERCISES[rng.choice(list(EXERCISES))] for _ in range(ACCEL_DEVICES)]
        ts = t0 + step * 1000 // ACCEL_HZ
        phase = 2 * math.pi * (step % per_window) / per_window
        for d, amp in enumerate(plan):
            rows = [(axis, base + a * math.sin(phase + d) + rng.gauss(0, 0.05))
                    for axis, a, base in zip(("accel_x", "accel_y", "accel_z"), amp, (0.0, 0.0, 9.8))]
            if step % 50 == 0:
                rows.append(("battery", 80.0))
            for kind, value in rows:
                if count == n:
                    return
                count += 1
                yield json.dumps({"device": f"watch-{d}", "ts": ts, "kind": kind, "value": round(value, 4)})


@dataclass(frozen=True)
class Kind:
    """One kind of workload: how N is counted, its default seed, its shape.

    Attributes:
        name: The kind's name (``fluvial generate NAME``).
        unit: What N counts (``tweets``, ``MiB``...).
        default_seed: The seed when none is given.
        make: ``(n, seed) -> lines``.
        shape: One line describing each line of output.
        example: The first line of output with the default seed (checked by the tests).
        next_step: A command that uses the file (``{file}`` is its path).
    """

    name: str
    unit: str
    default_seed: int
    make: Callable[[int, int], Iterator[str]]
    shape: str
    example: str
    next_step: str

    @property
    def max_n(self) -> int:
        """The largest N accepted."""
        return MAX_MIB if self.unit == "MiB" else MAX_RECORDS


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("tweets", "tweets", 7, tweets,
         'JSON lines {"ts", "user", "text"}: 8 words and 2 Zipf hashtags, 1000 tweets per '
         "simulated second (for examples/hashtag_top10.py)",
         '{"ts": 1452124400000, "user": "u87359", "text": "hxyghx2 emubcrd0 hq5 chcrnbsd2 ldrwc6 tg0 '
         'wltpszo0 cu4 #jhncrgkn0 #hlhajkhibn0"}',
         "fluvial ingest {file} --kind tweet --device-field user --ts-field ts"),
    Kind("readings", "readings", 11, readings,
         'JSON lines {"device", "ts", "kind", "value"}: 10k devices, 10k readings per simulated '
         "second, ~1% late by up to 30 s (for examples/device_stats.py)",
         '{"device": "dev-09171", "ts": 1700000000000, "kind": "accel_y", "value": 10.62}',
         "fluvial ingest {file} --kind reading --device-field device --ts-field ts"),
    Kind("fleet", "readings", 13, fleet,
         'JSON lines {"device", "ts", "kind", "value"} in arrival order: 1k devices, ~10% offline '
         "for 3-20 min then flushing their backlog, ~3% sent 31-90 s late, one clock 2 h ahead "
         "(for examples/device_stats.py)",
         '{"device": "dev-0265", "ts": 1700000000000, "kind": "accel_x", "value": 16.997}',
         "fluvial ingest {file} --kind reading --device-field device --ts-field ts"),
    Kind("words", "MiB", 42, words,
         "plain text, 12 Zipf words per line from a 50k-word vocabulary; N is MiB of text "
         "(for python examples/word_count.py FILE)",
         "axi0 csnbacghqt2 tjkn2 axi0 qg4 qam4 axi0 dlltizbx6 wjqwinpph1 kiegykdc5 axi0 djnfoax6",
         "python examples/word_count.py {file}"),
    Kind("lines", "lines", 42, lines,
         'JSON lines {"device", "ts", "text"}: 1-14 Zipf words of the words vocabulary, '
         "10 lines per simulated second (events of kind line, for examples/word_count.py)",
         '{"device": "dev-0094", "ts": 1452011283000, "text": "zonmibip5 cpb2"}',
         "fluvial ingest {file} --kind line --device-field device --ts-field ts"),
    Kind("accel", "readings", 5, accel,
         'JSON lines {"device", "ts", "kind", "value"}: 8 watches, accel_x/y/z at 10 Hz, one '
         "exercise per 2 s, a battery reading every 5 s (for examples/muvr_classifier.py)",
         '{"device": "watch-0", "ts": 1700000000000, "kind": "accel_x", "value": -0.0698}',
         "fluvial ingest {file} --kind reading --device-field device --ts-field ts"),
)}
"""Every kind of :func:`generate`, by name."""


def generate(kind: str, n: int, seed: int | None = None) -> Iterator[str]:
    """The lines (without newline) of ``n`` records of ``kind`` (``n`` MiB for ``words``).

    Raises:
        ValueError: For an unknown kind, or ``n`` not in 1..the kind's maximum.
    """
    spec = _kind(kind)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= spec.max_n:
        raise ValueError(f"{kind}: N counts {spec.unit}: a whole number from 1 to {spec.max_n:,}, got {n!r}")
    return spec.make(n, spec.default_seed if seed is None else seed)


def _kind(kind: str) -> Kind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}: choose among {', '.join(KINDS)}") from None


@dataclass(frozen=True)
class Written:
    """What :func:`write` wrote: kind, records (lines), bytes and the seed used."""

    kind: str
    records: int
    bytes: int
    seed: int


def write(kind: str, n: int, out: BinaryIO, *, seed: int | None = None,
          progress: Callable[[int], None] | None = None) -> Written:
    """Write the lines of :func:`generate` to ``out``, each ending with a newline.

    Args:
        kind: A name of :data:`KINDS`.
        n: Records to write (MiB for ``words``).
        out: A binary file; it is written to, not closed.
        seed: The random seed (default: the kind's).
        progress: Called with the records written since the last call (bytes for ``words``).
    """
    spec = _kind(kind)
    seed = spec.default_seed if seed is None else seed
    records = size = 0
    block: list[str] = []
    for line in generate(kind, n, seed):
        block.append(line)
        if len(block) == _WRITE_LINES:
            records, size = _flush(block, out, progress, spec, records, size)
    if block:
        records, size = _flush(block, out, progress, spec, records, size)
    return Written(kind, records, size, seed)


def _flush(block: list[str], out: BinaryIO, progress: Callable[[int], None] | None, spec: Kind,
           records: int, size: int) -> tuple[int, int]:
    data = ("\n".join(block) + "\n").encode()
    out.write(data)
    if progress is not None:
        progress(len(data) if spec.unit == "MiB" else len(block))
    records, size = records + len(block), size + len(data)
    block.clear()
    return records, size
