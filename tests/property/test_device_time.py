"""Device time (issue 11): devices that go quiet, flush a backlog, or have a wrong clock.

Events are made as devices make them: each device has its own clock (some behind the
others by minutes, one or two hours ahead of the log's wall clock), goes offline for
spells (buffering what it measures) and flushes its backlog in its own order when it
comes back; a few events are also sent late (behind their own device by up to 90 s,
beyond the allowed lateness).  The log stores them in that arrival order.

The stream runner (cut into random micro-batches, appended in slices with restarts) must
give, for every view, exactly the brute force of :func:`fluvial.testing.brute.split_event_time`
(``views``: every event within the correction horizon, and all of the first slice, which is
history when the runner first starts; so with no event beyond it the stream view is the batch
view), count late exactly the events behind their own device,
and feed state downstream (a ``save_to`` table) exactly the events whose window was
still open; the batch runner gives the brute force over every event.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_time_world import (
    AHEAD,
    HORIZON,
    IDLE,
    LATENESS,
    PARTITIONS,
    device_events,
    expected,
    minute,
    now_start,
    pipeline,
)
from fluvial import Event
from fluvial.serving.base import Row
from fluvial.testing import brute, run_batch, run_stream


def check(events: list[Event], ahead: set[str], tmp: Path, *, max_batch_records: int, appends: int) -> None:
    stream = run_stream(pipeline(), events, tmp, max_batch_records=max_batch_records, appends=appends,
                        partitions=PARTITIONS)
    history = -(-len(events) // appends)   # the first slice: what the log held at the first start
    views, late, table = expected(events, ahead, stream=True, history=history)
    for name, rows in views.items():
        assert stream[name] == rows, f"stream view {name}"
    assert stream.late == late
    assert stream.tables == table
    batch = run_batch(pipeline(), events, tmp, partitions=PARTITIONS, slice_records=97)
    all_views, _, all_table = expected(events, ahead, stream=False)
    for name, rows in all_views.items():
        assert batch[name] == rows, f"batch view {name}"
    assert batch.tables == all_table
    split = brute.split_event_time(events, partitions=PARTITIONS, lateness_ms=LATENESS, idle_ms=IDLE,
                                   horizon_ms=HORIZON, future=lambda e: e.device in ahead, history=history)
    if len(split.views) == len(brute.unique(events)):   # nothing beyond the horizon
        assert stream["stats"] == batch["stats"] and stream["sliding_counts"] == batch["sliding_counts"]


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 160), devices=st.integers(1, 9),
       ahead=st.integers(0, 1), behind_ms=st.sampled_from([0, 45_000, 600_000]),
       offline=st.sampled_from([0.0, 0.05, 0.2]), late=st.sampled_from([0.0, 0.03, 0.15]),
       max_batch_records=st.integers(1, 40), appends=st.integers(1, 3))
def test_stream_views_are_brute_force_over_device_time(tmp_path_factory: pytest.TempPathFactory, seed: int,
                                                         n: int, devices: int, ahead: int, behind_ms: int,
                                                         offline: float, late: float, max_batch_records: int,
                                                         appends: int) -> None:
    events, ahead_set = device_events(random.Random(seed), n=n, devices=devices, ahead=min(ahead, devices),
                                      behind_ms=behind_ms, offline=offline, late=late, start_ms=now_start())
    check(events, ahead_set, tmp_path_factory.mktemp("devtime"), max_batch_records=max_batch_records,
          appends=appends)


SEED = random.SystemRandom().randrange(2**32)


@pytest.mark.parametrize("seed", [pytest.param(3, id="3"), pytest.param(SEED, id="random")])
def test_offline_backlogs_and_a_clock_ahead_seeded(tmp_path: Path, seed: int) -> None:
    """Longer runs: 40 devices, ~10% of steps start an offline spell, 3% sent late, one clock ahead."""
    print(f"seed={seed}  (rerun: device_events(random.Random({seed}), ...) in this test)")
    rnd = random.Random(seed)
    events, ahead = device_events(rnd, n=1_500, devices=40, ahead=1, behind_ms=600_000, offline=0.1, late=0.03,
                                  start_ms=now_start())
    history = -(-len(events) // 3)
    split = brute.split_event_time(events, partitions=PARTITIONS, lateness_ms=LATENESS, idle_ms=IDLE,
                                   horizon_ms=HORIZON, future=lambda e: e.device in ahead, history=history)
    per_partition = brute.split_event_time(events, partitions=PARTITIONS, lateness_ms=LATENESS, per="partition",
                                           horizon_ms=HORIZON, future=lambda e: e.device in ahead, history=history)
    beyond = len(brute.unique(events)) - len(split.views)
    print(f"events={len(events)} late(device)={len(split.late)} late(partition)={len(per_partition.late)} "
          f"closed for state={len(events) - len(split.tables)} beyond the horizon={beyond}")
    # The data must exercise what is checked: backlogs a partition watermark would call late,
    # and backlogs older than the horizon (left to the batch layer).
    assert len(per_partition.late) > 2 * len(split.late) > 0 and beyond > 0
    check(events, ahead, tmp_path, max_batch_records=rnd.choice([13, 200]), appends=3)


def test_a_clock_two_hours_ahead_among_200_devices_changes_nothing_for_the_others(tmp_path: Path) -> None:
    """examples/device_stats.py over 200 devices sending around the wall clock now, 3% of readings
    up to 90 s late; one device's clock runs two hours ahead.  The other devices' windows and
    late counts are exactly those of the same run without it; its own readings are kept (their
    windows in the view), never late, and the device table lists it with every reading
    future-stamped."""
    import runpy

    from fluvial.config import LogConfig, StreamConfig
    from fluvial.layers.devices import DeviceTracker, list_devices
    from fluvial.workspace import Workspace

    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    rnd = random.Random(seed)
    example = Path(__file__).resolve().parents[2] / "examples" / "device_stats.py"
    names = [f"dev-{i:03d}" for i in range(200)]
    ahead = names[rnd.randrange(200)]
    clock, seqs, events = now_start(), dict.fromkeys(names, 0), []
    for _ in range(4_000):
        clock += rnd.randint(0, 600)
        d = rnd.choice(names)
        seqs[d] += 1
        ts = clock + (AHEAD if d == ahead else 0) - (rnd.randint(30_001, 90_000) if rnd.random() < 0.03 else 0)
        events.append(Event(device=d, kind="reading", ts=ts, seq=seqs[d],
                            payload={"kind": rnd.choice(["temp", "humidity"]), "value": rnd.randint(0, 400) / 8}))

    def run(evs: list[Event], directory: Path) -> tuple[list[Row], int, list[dict[str, Any]]]:
        pipeline = runpy.run_path(str(example))["pipeline"]
        with Workspace(directory, writer=True, log_config=LogConfig(partitions=PARTITIONS, fsync="never")) as ws:
            for i in range(0, len(evs), 1_000):   # four slices, a run after each (the later ones live)
                ws.log.append(evs[i:i + 1_000])
                ws.stream_runner(StreamConfig(batch_interval_ms=0, max_batch_records=150)).run(
                    pipeline, until_caught_up=True)
            DeviceTracker(ws.log, ws.store).catch_up()
            return ws.store.query("device_stats"), ws.store.view("device_stats").late_events, list_devices(ws.store)

    with_it, late_with, devices = run(events, tmp_path / "with")
    others = [e for e in events if e.device != ahead]
    without, late_without, _ = run(others, tmp_path / "without")
    assert [r for r in with_it if r.key[0] != ahead] == without
    assert late_with == late_without == len(brute.split_event_time(others, partitions=PARTITIONS,
                                                                   lateness_ms=30_000).late)
    want = brute.rows(brute.group((((e.device, e.payload["kind"]), w), e.payload["value"]) for e in events
                                  for w in minute(e)), brute.stats)
    assert with_it == want
    [listed] = [d for d in devices if d["device"] == ahead]
    assert listed["future"] == listed["events"] == seqs[ahead] > 0
    assert all(d["future"] == 0 for d in devices if d["device"] != ahead)
