"""Admission control of ingest (fluvial.server.limits) against brute-force models, on a fake clock.

Randomised tests print their seed (``FLUVIAL_TEST_SEED=<n>`` reproduces them).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import defaultdict
from typing import Any

import pytest

from fluvial.server.ingest import IngestError
from fluvial.server.limits import (
    OVERLOADED_FOR_S,
    DeadLetterQuota,
    Limits,
    Shed,
    Ticket,
    TokenBucket,
    read_body,
)
from fluvial.settings import LimitsSettings, ServerSettings, Settings


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))
    print(f"seed {value} (FLUVIAL_TEST_SEED={value} reproduces it)")
    return value


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Writer:
    """What Limits reads of the log writer."""

    def __init__(self) -> None:
        self.queued_events = 0
        self.wait = 0.0

    def queue_wait_s(self) -> float:
        return self.wait


class Grant:
    def __init__(self, role: str, device: str | None = None) -> None:
        self.role, self.device = role, device


def make(clock: Clock, writer: Writer | None = None, *, auth: str = "none", max_body: int = 1000,
         budget: int = 5000, **limits: Any) -> Limits:
    settings = Settings(server=ServerSettings(auth=auth, max_body_bytes=max_body, max_pending_bytes=budget),
                        limits=LimitsSettings(**limits))
    return Limits(settings, writer or Writer(), clock=clock)


# -- the token bucket -----------------------------------------------------------------------------------


def test_a_bucket_never_lets_in_more_than_its_burst_and_rate_allow(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(50):
        rate, burst = rng.uniform(1, 100), rng.randrange(1, 200)
        bucket, now = TokenBucket(rate=rate, burst=burst, now=0.0), 0.0
        let_in: list[tuple[float, int]] = []
        for _ in range(300):
            now += rng.expovariate(rate / 10)
            cost = rng.randrange(1, 60)
            if bucket.wait_s(now) == 0:
                bucket.charge(cost, now)
                let_in.append((now, cost))
        # brute force over every window of the requests let in: at most burst + rate * span + one request
        for i in range(len(let_in)):
            total = 0
            for j in range(i, len(let_in)):
                total += let_in[j][1]
                span = let_in[j][0] - let_in[i][0]
                assert total <= burst + rate * span + let_in[j][1] + 1e-6, (rate, burst, i, j)


def test_a_bucket_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    bucket.charge(50, 0.0)                      # 30 in debt
    wait = bucket.wait_s(0.0)
    assert wait > 3.0
    assert bucket.wait_s(wait - 0.01) > 0 and bucket.wait_s(wait) == 0


# -- the dead-letter quota ---------------------------------------------------------------------------------


def test_the_dead_letter_quota_matches_a_model(seed: int) -> None:
    rng = random.Random(seed)
    quota = DeadLetterQuota(quota=1000, window_s=10)
    windows: dict[str, list[float]] = {}
    now = 0.0
    for _ in range(3000):
        now += rng.expovariate(5)
        key, size = rng.choice("abc"), rng.randrange(1, 400)
        start, used = windows.get(key, (-1e9, 0.0))
        if now - start >= 10:
            start, used = now, 0.0
        expect = used < 1000                    # kept while less than the quota was used in the window
        windows[key] = [start, used + size if expect else used]
        assert quota.take(key, size, now) is expect


# -- the pending budget ---------------------------------------------------------------------------------


def test_the_pending_budget_matches_a_model(seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock()
    limits = make(clock, max_body=1000, budget=5000, max_queue_wait_ms=10**9)
    live: list[tuple[Ticket, list[int]]] = []   # each ticket and its model: [reserved, read]
    refused = 0
    for _ in range(5000):
        clock.now += 0.001
        op = rng.random()
        model_pending = sum(m[0] for _, m in live)
        assert limits.pending_bytes == model_pending
        if op < 0.35:
            length = rng.choice([None, rng.randrange(0, 1001)])
            fits = model_pending + max(length or 0, 1) <= 5000
            try:
                ticket = limits.admit(length, None)
            except Shed as exc:
                assert not fits and (exc.status, exc.cause) == (429, "pending_bytes") and exc.retry_after_s >= 1
                refused += 1
                continue
            assert fits
            live.append((ticket, [length or 0, 0]))
        elif op < 0.75 and live:
            ticket, model = rng.choice(live)
            n = rng.randrange(1, 300)
            extra = model[1] + n - model[0]
            expect = extra <= 0 or model_pending + extra <= 5000
            assert ticket.take(n) is expect
            model[1] += n
            if expect and extra > 0:
                model[0] += extra
        elif op < 0.8 and live:
            ticket, model = rng.choice(live)
            ticket.hold(n := rng.randrange(0, 500))  # inflated bytes: whatever the budget
            model[0] += n
        elif live:
            ticket, _ = live.pop(rng.randrange(len(live)))
            ticket.release()
            ticket.release()                         # twice is once
    for ticket, _ in live:
        ticket.release()
    assert limits.pending_bytes == 0 and refused > 0 and limits.shed["pending_bytes"] == refused


def test_one_body_always_fits_an_empty_budget() -> None:
    limits = make(Clock(), max_body=5000, budget=5000)
    limits.admit(5000, None).release()


# -- shedding by the queue, memory and rates --------------------------------------------------------------


def test_a_long_writer_queue_sheds_with_503_once_it_lasts() -> None:
    clock, writer = Clock(), Writer()
    limits = make(clock, writer, max_queue_events=100, max_queue_wait_ms=500)
    writer.queued_events = 101
    with pytest.raises(Shed) as info:
        limits.admit(10, None)
    assert (info.value.status, info.value.cause) == (503, "queue_events")
    writer.queued_events, writer.wait = 0, 0.6     # the oldest queued request waits 600 ms ...
    limits.admit(10, None).release()               # ... which may be a passing stall
    clock.now += OVERLOADED_FOR_S
    with pytest.raises(Shed) as info:              # it lasted: overload
        limits.admit(10, None)
    assert (info.value.status, info.value.cause, info.value.retry_after_s) == (503, "queue_wait", 1)
    writer.wait = 0.0
    limits.admit(10, None).release()
    assert limits.shed == {"queue_events": 1, "queue_wait": 1}


def test_requests_waiting_for_the_server_shed_new_ones_and_a_passing_stall_does_not(seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock()
    limits = make(clock, max_queue_wait_ms=500)
    # a stall: one request whose body was read waits 2 s, then is answered at once
    stalled = limits.admit(10, None)
    stalled.body_read()
    clock.now += 2.0
    limits.admit(10, None).release()               # over the limit for the first time: admitted
    stalled.release()
    clock.now += 0.3
    limits.admit(10, None).release()               # back under: nothing was shed
    assert limits.shed == {}
    # overload: requests keep waiting longer than the limit; a brute force says when 503 is due
    waiting: list[Ticket] = []
    over_since = None
    for _ in range(200):
        clock.now += rng.uniform(0.001, 0.05)
        if waiting and rng.random() < 0.3:
            waiting.pop(0).release()
        oldest = waiting[0].body_done_at if waiting else None
        over = oldest is not None and (clock.now - oldest) * 1000 > 500
        over_since = (over_since if over_since is not None else clock.now) if over else None
        due = over_since is not None and clock.now - over_since >= OVERLOADED_FOR_S
        try:
            ticket = limits.admit(10, None)
        except Shed as exc:
            assert due and exc.cause == "queue_wait", (clock.now, over_since)
            continue
        assert not due
        ticket.body_read()
        waiting.append(ticket)
    assert limits.shed["queue_wait"] > 0


def test_memory_over_its_bound_sheds_with_503() -> None:
    limits = make(Clock(), max_memory_bytes=1)
    if limits.rss_bytes() == 0:
        pytest.skip("no /proc/self/statm here")
    with pytest.raises(Shed) as info:
        limits.admit(10, None)
    assert (info.value.status, info.value.cause) == (503, "memory")
    assert "max_memory_bytes" in info.value.reason


def test_a_lagging_speed_layer_sheds_with_503() -> None:
    limits = make(Clock())
    with pytest.raises(Shed) as info:
        limits.admit(10, None, lagging="the speed layer of 'x' is 9 events behind the log (limit 5)")
    assert (info.value.status, info.value.cause) == (503, "speed_lag")


def test_device_rates_apply_per_device_and_say_when_to_come_back(seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock()
    limits = make(clock, auth="tokens", device_events_per_s=10, device_events_burst=20,
                  device_bytes_per_s=1000, device_bytes_burst=2000)
    key = limits.key_of(Grant("device", "d1"), "127.0.0.1")
    assert key == "device d1"
    assert limits.key_of(Grant("admin"), "127.0.0.1") is None   # admins are not limited
    ticket = limits.admit(100, key)
    ticket.events(50)                                          # 30 events in debt
    ticket.release()
    with pytest.raises(Shed) as info:
        limits.admit(100, key)
    assert (info.value.status, info.value.cause) == (429, "device_events")
    assert info.value.retry_after_s == 4                       # (30 + 1) / 10 s, rounded up
    limits.admit(100, limits.key_of(Grant("device", "d2"), None)).release()   # another device goes
    clock.now += 3.2
    limits.admit(100, key).release()
    # bytes: charged as read
    clock.now += 100
    big = limits.admit(1000, key)
    big.take(rng.randrange(1000, 1001))
    big.release()
    big = limits.admit(1000, key)
    big.take(1000)
    big.release()                                              # 2000 used: the burst
    with pytest.raises(Shed) as info:
        limits.admit(10, key)
    assert info.value.cause == "device_bytes"


def test_who_is_limited_with_auth_off() -> None:
    assert make(Clock()).key_of(None, "10.0.0.1") is None
    assert make(Clock(), per_address=True).key_of(None, "10.0.0.1") == "address 10.0.0.1"


def test_dead_letters_beyond_the_quota_are_counted_not_kept() -> None:
    clock = Clock()
    limits = make(clock, dead_letter_bytes=100, dead_letter_window_s=60)
    assert limits.keep_dead_letters("device d", 80) and limits.keep_dead_letters("device d", 80)
    assert not limits.keep_dead_letters("device d", 5)
    assert limits.keep_dead_letters(None, 10**9)              # nobody's quota: kept
    refusal = limits.quota_refusal("device d", "400: the body is not valid JSON")
    assert (refusal.status, refusal.cause, refusal.retry_after_s) == (429, "dead_letter_quota", 60)
    assert "NOT kept in the dead-letter log" in refusal.reason
    assert (limits.dead_letters_refused, limits.dead_letter_bytes_refused) == (1, 5)


# -- reading a body ------------------------------------------------------------------------------------


def receiver(chunks: list[bytes], *, delay: float = 0.0) -> Any:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(delay)
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


def test_read_body_counts_chunks_and_stops_at_the_budget() -> None:
    limits = make(Clock(), max_body=1000, budget=1000)
    other = limits.admit(600, None)
    ticket = limits.admit(None, None)                          # chunked: nothing reserved yet
    with pytest.raises(Shed) as info:
        asyncio.run(read_body(receiver([b"x" * 300, b"x" * 300]), ticket, max_bytes=1000, timeout_s=5))
    assert info.value.cause == "pending_bytes" and " after 300 bytes" in info.value.reason
    ticket.release()
    other.release()
    assert limits.pending_bytes == 0
    ticket = limits.admit(None, None)
    body = asyncio.run(read_body(receiver([b"a" * 400, b"b" * 500]), ticket, max_bytes=1000, timeout_s=5))
    assert body == b"a" * 400 + b"b" * 500 and limits.pending_bytes == 900
    ticket.release()


def test_read_body_refuses_too_large_slow_and_abandoned_bodies() -> None:
    limits = make(Clock(), max_body=1000, budget=5000)
    with pytest.raises(IngestError) as info:
        asyncio.run(read_body(receiver([b"x" * 600, b"x" * 600]), limits.admit(None, None), max_bytes=1000,
                              timeout_s=5))
    assert info.value.status == 413
    with pytest.raises(IngestError) as info:
        asyncio.run(read_body(receiver([b"x"] * 50, delay=0.05), limits.admit(None, None), max_bytes=1000,
                              timeout_s=0.2))
    assert info.value.status == 408 and "body_timeout_s" in info.value.reason
    with pytest.raises(IngestError) as info:
        asyncio.run(read_body(receiver([]), limits.admit(None, None), max_bytes=1000, timeout_s=5))
    assert info.value.status == 400


def test_snapshot_shows_every_limit() -> None:
    from fluvial.server.limits import prometheus_metrics

    limits = make(Clock(), max_queue_events=7)
    snap = limits.snapshot()
    assert snap["max_queue_events"] == 7 and snap["connections"]["max"] == 4096
    names = {name for name, *_ in prometheus_metrics(snap)}
    assert {"limit", "shed_total", "pending_bytes", "queue_events", "queue_wait_ms", "connections_open"} <= names
    per_limit = defaultdict(int)
    for name, _, _, samples in prometheus_metrics(snap):
        if name == "limit":
            for labels, _ in samples:
                per_limit[labels["limit"]] += 1
    assert set(per_limit) == {f.name for f in LimitsSettings.__dataclass_fields__.values()} - {"per_address"} \
        | {"max_pending_bytes"}
