"""A 3-node Cassandra ring (127.0.0.1/2/3), RF=3, QUORUM: one node SIGKILLed under load.

A ``fluvial run --mode stream`` process writes views and ``save_to`` rows into the ring
while events are appended to its log; a random node is killed with SIGKILL in the middle.
The runner must go on with the two that are left (QUORUM is 2 of 3), and the views, late
counts and ``save_to`` rows must equal a brute force over every event of the log.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fluvial
from cassandra_node import Node, cassandra_or_skip, connect_cluster, free_port, start_node
from fluvial import LogConfig
from fluvial.errors import StoreUnavailable
from fluvial.state.checkpoint import Checkpoint
from fluvial.testing import make_events, read_results
from fluvial.testing.catalog import CATALOG, build_pipeline, expected_late, expected_tables, expected_views

pytestmark = [pytest.mark.slow, pytest.mark.explicit_backends, pytest.mark.serial]

PARTITIONS = 3
NAME = "ring"
CASES = [c for c in CATALOG if c.name in ("counts_by_device", "tumbling_sum", "stats_by_device")]
FLOW = f"""from fluvial.testing.catalog import CATALOG, build_pipeline

{NAME} = build_pipeline([c for c in CATALOG if c.name in {[c.name for c in CASES]!r}], name={NAME!r})
"""
ADDRESSES = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


def start_ring(directory: Path) -> list[Node]:
    """Three nodes on one native port and one storage port, 127.0.0.1 the seed; up and seen by a client."""
    port, storage = free_port(), free_port()
    nodes = [start_node(directory / "n1", address=ADDRESSES[0], port=port, storage_port=storage)]
    try:
        for address in ADDRESSES[1:]:   # one at a time: a ring takes joining nodes one by one
            nodes.append(start_node(directory / address, address=address, port=port, storage_port=storage,
                                    seeds=ADDRESSES[0]))
        cluster = connect_cluster(ADDRESSES, port)
        try:
            cluster.connect()
            deadline = time.monotonic() + 120
            while sum(1 for h in cluster.metadata.all_hosts() if h.is_up) < 3:
                assert time.monotonic() < deadline, "the three nodes did not form a ring in 120 s"
                time.sleep(0.5)
        finally:
            cluster.shutdown()
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    return nodes


def consumed(ws: fluvial.Workspace) -> int:
    """Log records the checkpoint covers; -1 while the ring cannot answer (its Paxos rounds
    time out until gossip marks the killed node down): ask again."""
    try:
        with ws.store.transaction() as txn:
            blob = txn.get_checkpoint(f"stream:{NAME}")
    except StoreUnavailable:
        return -1
    return 0 if blob is None else sum(Checkpoint.loads(blob).offsets)


def test_a_node_of_a_three_node_ring_killed_under_load(tmp_path: Path) -> None:
    cassandra_or_skip()
    seed = random.SystemRandom().randrange(2**32)
    rnd = random.Random(seed)
    events = make_events(seed, 1_500, devices=12, kinds=["reading", "reading", "status"], step_ms=200,
                         out_of_order_ms=2_000, late_fraction=0.02, duplicate_fraction=0.05)
    nodes = start_ring(tmp_path / "ring")
    runner = None
    try:
        url = f"cassandra://{','.join(ADDRESSES)}:{nodes[0].port}/fluvial?replication_factor=3&consistency=QUORUM"
        victim = rnd.randrange(3)
        print(f"seed={seed} store={url} victim={ADDRESSES[victim]}")
        directory, flow = tmp_path / "data", tmp_path / "flow.py"
        flow.write_text(FLOW)
        ws = fluvial.open(directory, writer=True, store=url, log_config=LogConfig(partitions=PARTITIONS, fsync="never"))
        third = len(events) // 3
        ws.log.append(events[:third])
        runner = subprocess.Popen([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(directory),
                                   "--store", url, "run", str(flow), "--mode", "stream", "--batch-interval-ms", "0",
                                   "--max-batch-records", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        deadline = time.monotonic() + 120
        while consumed(ws) <= 0:
            assert runner.poll() is None and time.monotonic() < deadline, runner.stderr.read() if runner.poll() else ""
            time.sleep(0.1)
        ws.log.append(events[third:2 * third])
        time.sleep(rnd.uniform(0.0, 1.0))
        nodes[victim].kill(signal.SIGKILL)   # under load: micro-batches in flight
        ws.log.append(events[2 * third:])
        size = sum(ws.log.end_offsets())
        deadline = time.monotonic() + 240
        while consumed(ws) < size:
            assert runner.poll() is None, runner.communicate()[1]
            assert time.monotonic() < deadline, f"no catching up with a node down ({consumed(ws)} of {size})"
            time.sleep(0.2)
        runner.send_signal(signal.SIGTERM)
        _, err = runner.communicate(timeout=120)
        assert runner.returncode == 0, err
        got = read_results(build_pipeline(CASES, name=NAME), ws.store)
        ws.close()
        assert got.views == expected_views(CASES, events, partitions=PARTITIONS, stream=True)
        assert got.late == expected_late(CASES, events, partitions=PARTITIONS)
        assert got.tables == expected_tables(CASES, events, partitions=PARTITIONS, stream=True)
    finally:
        if runner is not None and runner.poll() is None:
            runner.kill()
            runner.communicate()
        for node in nodes:
            node.kill()
