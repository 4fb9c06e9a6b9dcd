"""SIGKILL with the log on NATS JetStream: an ingest process and the stream runner, at random moments.

An ingest process (this file run as a script) appends batches of readings to a ``nats://``
log, each retried until it is acknowledged, and records each acknowledgement in a file; on
a restart it first sends its last acknowledged batch again (an acknowledgement the device
"lost"), then goes on with the first unacknowledged one. Meanwhile ``fluvial run --mode
stream`` computes views over the log. The parent SIGKILLs one of the two at random moments
and restarts it; at the end ingest finishes, the runner catches up, and:

* the log holds every acknowledged ``(device, seq)`` exactly once (and nothing else);
* the views equal a brute force over exactly the acknowledged events.

The seed is printed (``FLUVIAL_E2E_SEED`` reproduces the choices; the moments depend on the
machine). Skips in one line without a NATS server (fails under ``FLUVIAL_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import fluvial
from fluvial.backends import open_log
from fluvial.events import Event
from logs import delete_streams, fresh_nats_url, nats_or_skip

pytestmark = pytest.mark.explicit_backends   # it names its backends: not in make test's spelled-out pass

FLOW = '''\
import operator
import fluvial as fl

p = fl.Pipeline("nats_fault")
readings = p.from_log("reading")
readings.map(lambda e: (e.device, 1)).reduce_by_key(operator.add).to_view("counts")
readings.map(lambda e: (e.device, e.payload["value"])).reduce_by_key(operator.add).to_view("sums")
'''
CYCLES = int(os.environ.get("FLUVIAL_KILL_CYCLES", "12"))
BATCHES, BATCH = 120, 150


def ingest(url: str, batches_file: str, acked_file: str) -> None:
    """The ingest process: append every batch until acknowledged, recording each acknowledgement."""
    from fluvial.errors import LogError

    batches = json.loads(Path(batches_file).read_text())
    acked_path = Path(acked_file)
    done = [int(x) for x in acked_path.read_text().split()] if acked_path.exists() else []
    todo = ([done[-1]] if done else []) + [i for i in range(len(batches)) if i not in set(done)]
    log = None
    with acked_path.open("a") as out:
        for i in todo:
            events = [Event(**e) for e in batches[i]]
            while True:
                try:
                    log = log or open_log(url)
                    log.append(events)
                    break
                except LogError as exc:  # not acknowledged: the outcome is unknown, send it again
                    print(f"retry batch {i}: {exc}", file=sys.stderr)
                    time.sleep(0.05)
            out.write(f"{i}\n")
            out.flush()
            time.sleep(0.05)  # a device fleet, not a bulk load: the kills land all along
    if log is not None:
        log.close()


def test_sigkill_of_ingest_and_stream_runner_on_nats(tmp_path: Path) -> None:
    nats_or_skip()
    seed = int(os.environ.get("FLUVIAL_E2E_SEED", random.randrange(2**32)))
    print(f"seed {seed} (FLUVIAL_E2E_SEED={seed} reproduces the choices)")
    rng = random.Random(seed)
    url = fresh_nats_url()
    seqs: Counter[str] = Counter()
    batches = []
    for b in range(BATCHES):
        batch = []
        for _ in range(BATCH):
            device = f"dev-{rng.randrange(12)}"
            seqs[device] += 1
            batch.append({"device": device, "kind": "reading", "ts": 1_700_000_000_000 + b * 1000 + seqs[device],
                          "seq": seqs[device], "payload": {"value": rng.randrange(100)}})
        batches.append(batch)
    (tmp_path / "batches.json").write_text(json.dumps(batches))
    (tmp_path / "flow.py").write_text(FLOW)
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    ingest_cmd = [sys.executable, __file__, url, str(tmp_path / "batches.json"), str(tmp_path / "acked")]
    run_cmd = [sys.executable, "-m", "fluvial.cli.main", "run", "--data-dir", str(data), "--log", url,
               "--mode", "stream", "--batch-interval-ms", "50", "--max-batch-records", "400",
               str(tmp_path / "flow.py")]
    logs = (tmp_path / "ingest.err").open("a"), (tmp_path / "run.err").open("a")

    def start(which: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([ingest_cmd, run_cmd][which], env=env, stdout=subprocess.DEVNULL,
                                stderr=logs[which])

    open_log(url).close()  # created before the runner starts (it reads an existing log)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs += [start(0), start(1)]
        kills = Counter[str]()
        for _ in range(CYCLES):
            time.sleep(rng.uniform(0.3, 1.5))
            which = rng.randrange(2)
            if which == 0 and procs[0].poll() is not None:
                continue  # ingest has finished
            procs[which].send_signal(signal.SIGKILL)
            procs[which].wait()
            kills[["ingest", "runner"][which]] += 1
            procs[which] = start(which)
        while procs[0].wait(timeout=120) != 0:
            procs[0] = start(0)  # a kill at the very end of a cycle: finish the batches
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait()
        print("kills", dict(kills))
        subprocess.run([*run_cmd[:-1], "--until-caught-up", run_cmd[-1]], env=env, check=True, timeout=180,
                       stdout=subprocess.DEVNULL, stderr=logs[1])
        acked = {int(x) for x in (tmp_path / "acked").read_text().split()}
        assert acked == set(range(BATCHES))
        sent = [Event(**e) for i in sorted(acked) for e in batches[i]]
        with open_log(url, readonly=True) as log:
            stored = [e for p in range(log.partitions) for e in log.read(p, 0).events]
            assert sum(log.end_offsets()) == len(stored)
        pairs = Counter((e.device, e.seq) for e in stored)
        assert pairs == Counter((e.device, e.seq) for e in sent), "lost or duplicated events"
        with fluvial.open(data, log=url) as ws:
            counts = {r.key: r.value for r in ws.store.query("counts")}
            sums = {r.key: r.value for r in ws.store.query("sums")}
        assert counts == Counter(e.device for e in sent)
        want_sums: Counter[str] = Counter()
        for e in sent:
            want_sums[e.device] += e.payload["value"]
        assert sums == want_sums
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
        delete_streams(url)


if __name__ == "__main__":
    ingest(*sys.argv[1:4])
