"""``fluvial serve --speed-layer workers``: the server ingests and answers queries; two
``fluvial worker`` processes run the speed layer; the server runs a batch run and a Kappa
reprocessing of the pipeline while they do; the views the server answers with equal the
brute force over exactly the events it acknowledged (issue 10, item 4)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from server_proc import ServerProcess

FLOW = """import fluvial

served = fluvial.Pipeline("served")
readings = served.from_log("reading")
readings.map(lambda e: (e.payload["kind"], 1)).aggregate_by_key(fluvial.Count()).to_view("per_kind")
readings.map(lambda e: (e.device, e.payload["value"])).aggregate_by_key(fluvial.Max()).to_view("max_by_device")
"""


def readings(rng: random.Random, n: int) -> list[dict[str, Any]]:
    seqs: Counter[str] = Counter()
    out = []
    for i in range(n):
        device = f"dev-{rng.randrange(12):02d}"
        seqs[device] += 1
        out.append({"device": device, "kind": "reading", "ts": 1_700_000_000_000 + i * 100, "seq": seqs[device],
                    "payload": {"kind": rng.choice(["temp", "hum", "co2"]), "value": float(rng.randint(-40, 60))}})
    return out


def test_serve_without_a_speed_layer_answers_with_the_views_the_workers_write(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    flow = tmp_path / "flow.py"
    flow.write_text(FLOW)
    events = readings(rng, 1_500)
    acknowledged: list[dict[str, Any]] = []
    with ServerProcess(tmp_path, flows=[flow], extra=["--speed-layer", "workers"]) as srv:
        outs = [tmp_path / f"w{i}.out" for i in range(2)]
        workers = []
        for out in outs:
            with open(out, "wb") as sink:
                workers.append(subprocess.Popen([sys.executable, "-m", "fluvial.cli.main", "--data-dir",
                                                 str(srv.data_dir), "worker", str(flow), "--batch-interval-ms", "50"],
                                                stdout=sink, stderr=subprocess.STDOUT))
        try:
            for out in outs:   # up (its signal handlers installed) and in the group
                deadline = time.monotonic() + 60
                while "serving served" not in out.read_text():
                    assert time.monotonic() < deadline and all(w.poll() is None for w in workers), out.read_text()
                    time.sleep(0.05)
            jobs = []
            for i in range(0, len(events), 100):
                status, _ = srv.post_events(events[i:i + 100])
                if status == 200:
                    acknowledged.extend(events[i:i + 100])
                if i in (400, 900):   # a batch run, then a Kappa reprocess, while the workers commit
                    action = "batch" if i == 400 else "reprocess"
                    body = {} if action == "reprocess" else None
                    status, job = srv.admin("POST", f"/v1/views/per_kind/{action}", body)
                    assert status in (200, 202), job
                    jobs.append(job)
            for job in jobs:
                done = srv.wait_job(job["id"])
                assert done["status"] == "done", done
            assert acknowledged, "the server acknowledged nothing"
            kinds = Counter(e["payload"]["kind"] for e in acknowledged)
            highest: dict[str, float] = {}
            for e in acknowledged:
                highest[e["device"]] = max(highest.get(e["device"], -1e9), e["payload"]["value"])
            expected = {"per_kind": dict(kinds), "max_by_device": highest}

            def served() -> dict[str, Any]:
                return {name: {r["key"]: r["value"] for r in srv.get(f"/v1/views/{name}")["rows"]}
                        for name in expected}

            deadline = time.monotonic() + 120
            while served() != expected:
                assert time.monotonic() < deadline, (served(), expected)
                assert all(w.poll() is None for w in workers), [out.read_text() for out in outs]
                time.sleep(0.2)
            assert srv.get("/v1/views/per_kind")["rows"]   # answered by the server, from the shared store
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(timeout=60)
        outputs = [out.read_text() for out in outs]
        for w, text in zip(workers, outputs):
            assert w.returncode == 0, text
            assert "partitions released" in text and "Traceback" not in text, text
        assert any("owns partitions" in text for text in outputs), outputs
        assert "speed layer of" not in srv.output()   # the server ran no stream runner of its own
