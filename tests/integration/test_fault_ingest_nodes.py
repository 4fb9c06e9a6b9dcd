"""Two ingest nodes on one NATS log, one SIGKILLed under load: the client fails over, nothing
acknowledged is lost, nothing is stored twice, the views stay exact.

Two ``fluvial serve`` processes share a log on NATS JetStream and a view store on PostgreSQL
(a fresh schema); one of them runs the speed layer, the other waits as its standby.  The
simulator (``fluvial.simulate.Simulator``, what ``fluvial simulate --url A,B`` runs) spreads
its batches over both and records every event it got an acknowledgement for.  At a random
moment the node holding the speed layer is SIGKILLed -- batches in flight on it fail, or were
appended without their answer -- and restarted after a random pause.  Then:

* the log holds exactly the acknowledged events, each once (a batch resent to the other node
  after its answer was lost is stored once: the ``(device, seq)`` de-duplication holds across
  nodes, and acknowledged events resent to either node afterwards are duplicates);
* the other node took the speed layer over, and ``device_stats`` equals the brute force over
  the acknowledged events.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from server_proc import EXAMPLES, ServerProcess
from test_serve_e2e import brute_stats, eventually

from fluvial.backends import open_log
from fluvial.serving.postgres import PostgresStore
from fluvial.simulate import Simulator
from logs import delete_streams, fresh_nats_url, nats_or_skip
from stores import fresh_schema_url

pytestmark = [pytest.mark.slow, pytest.mark.explicit_backends]

CONFIG = """
[stream]
lease_ms = 2000
"""


def log_events(url: str) -> list[Any]:
    log = open_log(url, readonly=True)
    try:
        out = []
        for p, end in enumerate(log.end_offsets()):
            offset = 0
            while offset < end:
                batch = log.read(p, offset, max_records=10_000)
                out += batch.events
                offset = batch.next_offset
        return out
    finally:
        log.close()


def speed_layer_node(store_url: str, nodes: list[ServerProcess]) -> ServerProcess:
    """The node whose speed layer holds ``device_stats`` now."""
    deadline = time.monotonic() + 60
    while True:
        with PostgresStore(store_url) as store:
            holder = store.holder("stream:device_stats")
        pid = None if holder is None or holder.owner is None else holder.owner.pid
        found = [n for n in nodes if n.proc is not None and n.proc.poll() is None and n.proc.pid == pid]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no live node holds the speed layer: {holder}"
        time.sleep(0.05)


def as_dict(e: Any) -> dict[str, Any]:
    return {"device": e.device, "kind": e.kind, "ts": e.ts, "seq": e.seq, "payload": e.payload}


def test_an_ingest_node_killed_under_load(tmp_path: Path) -> None:
    nats_or_skip()
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    log_url = fresh_nats_url()
    nodes: list[ServerProcess] = []
    try:
        with fresh_schema_url() as store_url:
            env = {"FLUVIAL_LOG": log_url, "FLUVIAL_STORE": store_url}
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                nodes.append(ServerProcess(tmp_path / name, flows=[EXAMPLES / "device_stats.py"],
                                           batch_interval_ms=50, config=CONFIG, env=env).start())
            sim = Simulator(",".join(n.url for n in nodes), devices=12, rate=1_200, batch=60, seed=seed,
                            offline_fraction=0.0, record=True, connections=2, timeout_s=5.0)
            reports: list[Any] = []
            runner = threading.Thread(target=lambda: reports.append(sim.run(8.0)))
            runner.start()
            kills = []
            for _ in range(2):   # each time the node holding the speed layer (it may move)
                time.sleep(rng.uniform(1.0, 2.5))
                victim = speed_layer_node(store_url, nodes)
                victim.kill()
                pause = rng.uniform(0.3, 2.0)
                time.sleep(pause)
                victim.start()
                kills.append((victim.url, round(pause, 1)))
            runner.join(timeout=120)
            (report,) = reports
            print(f"killed (node, seconds down): {kills}; sent {report.sent}, "
                  f"accepted {report.accepted}, duplicates {report.duplicates}, retries {report.retries}, "
                  f"failovers {report.failovers}, by url {report.by_url}")
            assert report.dropped == report.unsent == report.rejected == 0, report
            assert report.failovers >= 1, "the kill must have sent batches to the other node"

            acked = set(report.acked)
            stored = log_events(log_url)
            ids = [(e.device, e.seq) for e in stored]
            assert len(ids) == len(set(ids)), "an event stored twice"
            assert set(ids) == acked, (f"lost: {len(acked - set(ids))}, stored unacknowledged: "
                                       f"{len(set(ids) - acked)}")
            resend = [as_dict(e) for e in rng.sample(stored, 50)]   # as a client whose answers were lost
            for node in nodes:
                status, body = node.post_events(resend)
                assert status == 200 and (body["accepted"], body["duplicates"]) == (0, 50), body
            want = brute_stats(as_dict(e) for e in stored)
            for node in nodes:
                eventually(node, "device_stats", want, f"device_stats served by {node.url}", timeout=120)
    finally:
        for node in nodes:
            node.stop()
        delete_streams(log_url)
