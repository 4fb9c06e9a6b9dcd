"""``fluvial demo --cluster``: a 3-node NATS cluster, two ingest nodes, two workers and
PostgreSQL, as a user would start it; a NATS node, a worker and an ingest node SIGKILLed
mid-run (at random moments, seed printed), restarted by the demo (``--restart``).

The demo's own closing check compares, with the simulator's record of every acknowledged
event, the log (each event once) and the view's counts; the test requires it to pass, the
devices to have failed over, and the surviving worker to have taken the dead one's
partitions (or shared them with worker 1 restarted).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from server_proc import EXAMPLES, ROOT

from logs import REQUIRE_SERVICES
from stores import postgres_or_skip

pytestmark = [pytest.mark.slow, pytest.mark.explicit_backends]


def test_demo_cluster_survives_kills(tmp_path: Path) -> None:
    if shutil.which("nats-server") is None:
        if REQUIRE_SERVICES:
            pytest.fail("nats-server is needed for fluvial demo --cluster (FLUVIAL_REQUIRE_SERVICES=1)")
        pytest.skip("nats-server is not installed")
    postgres_or_skip()
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluvial.cli.main", "--store", "postgresql://postgres@127.0.0.1:5432/test",
         "demo", "--cluster", "--restart", "--seconds", "30", "--port", "0", "--devices", "12", "--rate", "400",
         "--demo-dir", str(tmp_path / "demo"), "--examples", str(EXAMPLES)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not any("at the end the demo checks" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        text = "".join(lines)
        nats = re.findall(r"^\s+n\d\s+127\.0\.0\.1:\d+\s+pid (\d+)", text, re.M)
        procs = dict(re.findall(r"^\s+(ingest \d|worker \d)\s+pid (\d+)", text, re.M))
        assert len(nats) == 3 and len(procs) == 4, text
        time.sleep(rng.uniform(3, 8))
        victims = [int(rng.choice(nats)), int(procs["worker 1"]), int(procs["ingest 1"])]
        before_kills = len(lines)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
            time.sleep(rng.uniform(0.2, 1.5))
        print(f"killed pids {victims}")
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()
    out = "".join(lines)
    print(out[-6000:])
    assert proc.returncode == 0, out[-4000:]
    assert "nothing lost, nothing twice: yes" in out
    assert re.search(r"; [1-9]\d* failovers,", out), "the devices must have failed over from the killed node"
    # worker 1's partitions moved: worker 2 took them, or shared them with worker 1 restarted
    after = "".join(lines[before_kills:])
    assert re.search(r"\[worker [12] pid \d+\] pipeline device_stats: owns partitions", after), \
        "the partitions must be reassigned after worker 1 is killed"
    assert "(restarted worker 1" in out and "(restarted ingest 1" in out


def test_demo_cluster_that_cannot_start_says_why_and_leaves_no_process(tmp_path: Path) -> None:
    if shutil.which("nats-server") is None:
        if REQUIRE_SERVICES:
            pytest.fail("nats-server is needed for fluvial demo --cluster (FLUVIAL_REQUIRE_SERVICES=1)")
        pytest.skip("nats-server is not installed")
    postgres_or_skip()
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "device_stats.py").write_text('raise RuntimeError("a broken flow")\n')
    (examples / "hashtag_top10.py").write_text((EXAMPLES / "hashtag_top10.py").read_text())
    demo_dir = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "fluvial.cli.main", "--store", "postgresql://postgres@127.0.0.1:5432/test",
         "demo", "--cluster", "--seconds", "5", "--port", "0", "--demo-dir", str(demo_dir),
         "--examples", str(examples)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "a broken flow" in done.stdout and "exited at start" in done.stderr, done.stdout + done.stderr
    left = subprocess.run(["pgrep", "-f", str(demo_dir)], capture_output=True, text=True).stdout.split()
    assert not left, f"processes of the demo left running: {left}"
