"""A 3-node NATS JetStream cluster, R3 streams, the stream leader SIGKILLed under load, then restarted.

The test starts three ``nats-server`` processes on free loopback ports (own store
directories), opens a ``nats://`` log with ``replicas=3`` on them and appends batches from
a writer thread, each retried until acknowledged. Twice, the leader of partition 0's stream
is SIGKILLed under that load and restarted after a while. Afterwards every acknowledged
``(device, seq)`` is in the log exactly once: 0 lost, 0 duplicated, offsets consecutive.
The seed is printed (``FLUVIAL_E2E_SEED``). Without ``nats-server`` the test skips in one
line (fails under ``FLUVIAL_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from fluvial.backends import open_log
from fluvial.config import LogConfig
from fluvial.errors import LogError
from fluvial.events import Event
from fluvial.log.nats.local_cluster import LocalNatsCluster
from logs import REQUIRE_SERVICES

pytestmark = [pytest.mark.services, pytest.mark.explicit_backends, pytest.mark.serial]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalNatsCluster]:
    if shutil.which("nats-server") is None:
        if REQUIRE_SERVICES:
            pytest.fail("nats-server is needed for the cluster test (FLUVIAL_REQUIRE_SERVICES=1)")
        pytest.skip("nats-server is not installed (the 3-node cluster test starts its own)")
    c = LocalNatsCluster(tmp_path, name="fluvialtest")
    c.start()
    try:
        yield c
    finally:
        c.stop()


def open_when_ready(url: str, timeout: float = 60.0) -> object:
    """The log, once the cluster has elected its meta leader and can create R3 streams."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_log(url, config=LogConfig(partitions=2))
        except LogError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def wait_for_appends(acked: list[tuple[str, int]], n: int, timeout: float = 90.0) -> None:
    """Until ``n`` events are acknowledged: appends resumed after the cluster recovered."""
    deadline = time.monotonic() + timeout
    while len(acked) < n:
        assert time.monotonic() < deadline, f"appends did not resume within {timeout} s ({len(acked)} acknowledged)"
        time.sleep(0.2)


def test_sigkill_of_the_stream_leader_under_load_loses_and_duplicates_nothing(cluster: LocalNatsCluster) -> None:
    seed = int(os.environ.get("FLUVIAL_E2E_SEED", random.randrange(2**32)))
    print(f"seed {seed} (FLUVIAL_E2E_SEED={seed} reproduces the choices)")
    rng = random.Random(seed)
    url = cluster.url("r3")
    log = open_when_ready(url)
    acked: list[tuple[str, int]] = []
    retries = Counter[str]()
    stop = threading.Event()

    def write() -> None:
        seq = Counter[str]()
        while not stop.is_set():
            batch = []
            for _ in range(200):
                device = f"dev-{rng.randrange(20)}"
                seq[device] += 1
                batch.append(Event(device=device, kind="reading", ts=seq[device], seq=seq[device],
                                   payload={"v": 1}))
            while True:  # until acknowledged
                try:
                    log.append(batch)  # type: ignore[attr-defined]
                    break
                except LogError as exc:
                    retries[type(exc).__name__] += 1
                    time.sleep(0.1)
            acked.extend((e.device, e.seq) for e in batch)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(2):
            time.sleep(rng.uniform(1.0, 2.5))
            victim = cluster.leader(log.address.stream(0))  # type: ignore[attr-defined]
            before = len(acked)
            cluster.kill(victim)
            time.sleep(rng.uniform(2.0, 4.0))
            down = len(acked)
            cluster.start(victim)
            print(f"killed leader {victim} at {before} acknowledged events, restarted it at {down}")
            wait_for_appends(acked, down + 2_000)
        time.sleep(1.0)
    finally:
        stop.set()
        writer.join(120)
    assert not writer.is_alive()
    print(f"{len(acked)} acknowledged, {sum(retries.values())} retried appends")
    log.close()  # type: ignore[attr-defined]
    with open_log(url, readonly=True) as reader:
        stored = []
        for p in range(reader.partitions):
            batch = reader.read(p, reader.start_offsets()[p])
            stored += batch.events
            assert batch.next_offset == reader.end_offsets()[p]
    pairs = Counter((e.device, e.seq) for e in stored)
    assert not [k for k, n in pairs.items() if n > 1], "duplicates"
    lost, extra = set(acked) - set(pairs), set(pairs) - set(acked)
    assert not lost and not extra, f"lost {len(lost)}, unacknowledged {len(extra)}"
