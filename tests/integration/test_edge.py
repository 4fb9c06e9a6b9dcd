"""The edge SDK (fluvial.edge) against a real ``fluvial serve``: offline, killed, reconnected.

A device (a child process running :class:`fluvial.edge.EdgeClient`) records readings covering
24 hours of event time (time-accelerated: one every 14.4 s of event time) while the server is
down, trying to send now and then; it is SIGKILLed twice at random moments while buffering,
each time restarted on the same queue directory.  Then the server comes up, a device process
sends the backlog and is SIGKILLed at a random moment while sending, and a last one sends the
rest; then the queue as it was before that last send (as if every answer had been lost) is
sent again, and the server finds each event already there.  The events a device process was
told were stored (``record_many`` returned) are the acknowledged ones: every one of them is in
the log exactly once, the log holds nothing else than what a device process stored (each
payload a function of its seq), and the ``device_stats`` view equals the brute force over the
log.  Seed printed.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from server_proc import EXAMPLES, ServerProcess, free_port
from test_fault_ingest import brute_stats

import fluvial

DEVICE = "wrist-7"
T0 = 1_790_000_000_000
STEP_MS = 14_400          # 6,000 readings: 24 hours of event time
TOTAL = 6_000

DEVICE_SCRIPT = """
import sys, time
from fluvial.edge import EdgeClient
url, directory, total, seed, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
T0, STEP = {t0}, {step}

def payload(seq):
    return {{"kind": "xyz"[seq % 3], "value": (seq * 7919 % 1000) / 8}}

client = EdgeClient(url, "{device}", directory, batch_records=250, timeout_s=2)
print("open", client.next_seq, client.pending, flush=True)
import random
import re
import shutil
rnd = random.Random(seed)
while mode == "record" and client.next_seq < total:
    first = client.next_seq
    n = min(rnd.randint(1, 40), total - first)
    seqs = client.record_many("reading", [payload(s) for s in range(first, first + n)],
                              ts=[T0 + s * STEP for s in range(first, first + n)])
    print("stored", seqs[0], seqs[-1], flush=True)
    if rnd.random() < 0.05:
        print("offline send", client.flush(deadline_s=0.05), flush=True)   # no server: nothing leaves
if mode == "send":
    print("sending", client.pending, flush=True)
    while client.pending and not client.flush(deadline_s=0.001):   # about a batch a call
        print("progress", client.pending, flush=True)
    print("sent", client.flush(deadline_s=120), client.pending, client.stats, flush=True)
"""


def payload(seq: int) -> dict[str, Any]:
    return {"kind": "xyz"[seq % 3], "value": (seq * 7919 % 1000) / 8}


def device_args(url: str, queue: Path, seed: int, mode: str) -> list[str]:
    """A device process: ``record`` (TOTAL readings, trying to send now and then) or ``send``."""
    script = queue.parent / "device.py"
    script.write_text(textwrap.dedent(DEVICE_SCRIPT.format(t0=T0, step=STEP_MS, device=DEVICE)))
    return [sys.executable, str(script), url, str(queue), str(TOTAL), str(seed), mode]


def device(url: str, queue: Path, seed: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(device_args(url, queue, seed, mode), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def read_lines(proc: subprocess.Popen[str], until: int | None, acked: set[int]) -> list[str]:
    """Lines of ``proc`` (until ``until`` "stored" lines, then it is SIGKILLed; or to its end)."""
    assert proc.stdout is not None
    lines, stored = [], 0
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith("stored"):
            first, last = map(int, line.split()[1:])
            acked.update(range(first, last + 1))
            stored += 1
            if until is not None and stored >= until:
                proc.send_signal(signal.SIGKILL)
                break
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, -signal.SIGKILL), err[-3000:]
    return lines


def send(url: str, queue: Path) -> dict[str, int]:
    """A device process that sends its queue and exits: its SendStats."""
    done = subprocess.run(device_args(url, queue, 0, "send"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("sent True 0 SendStats("), done.stdout   # flushed, nothing pending
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", last)}


def log_events(data: Path) -> list[fluvial.Event]:
    with fluvial.open(data) as ws:
        log, out = ws.log, []
        for p in range(log.partitions):
            offset, end = log.start_offsets()[p], log.end_offsets()[p]
            while offset < end:
                batch = log.read(p, offset)
                out += batch.events
                offset = batch.next_offset
    return out


def test_offline_for_a_day_killed_twice_buffering_and_once_sending_loses_and_duplicates_nothing(
        tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    rnd = random.Random(seed)
    queue = tmp_path / "queue"
    down = f"http://127.0.0.1:{free_port()}"   # nothing listens there: the device is offline
    acked: set[int] = set()
    runs = []
    for kill_after in (rnd.randint(5, 60), rnd.randint(5, 60), None):   # SIGKILLed twice while buffering
        lines = read_lines(device(down, queue, rnd.randrange(2**32), "record"), kill_after, acked)
        runs.append(lines[0])
        assert not any(line.startswith("offline send True") for line in lines), lines[-5:]
    assert max(acked) == TOTAL - 1 and len(acked) >= TOTAL - 2 * 40, (runs, len(acked))
    assert sum(p.stat().st_size for p in queue.glob("*.seg")) > 0

    with ServerProcess(tmp_path, flows=[EXAMPLES / "device_stats.py"]) as srv:
        sender = device(srv.url, queue, 0, "send")
        assert sender.stdout is not None
        assert sender.stdout.readline().startswith("open")
        assert sender.stdout.readline().startswith("sending")
        for _ in range(rnd.randint(1, 10)):   # of more than 20 batches
            assert sender.stdout.readline().startswith("progress")
        time.sleep(rnd.uniform(0.0, 0.02))
        sender.send_signal(signal.SIGKILL)   # while sending
        sender.communicate(timeout=30)
        before = tmp_path / "queue-before"   # the queue as it was: a device whose answers were all lost
        shutil.copytree(queue, before)
        sent = send(srv.url, queue)
        assert sent["sent"] > 0 and sent["accepted"] + sent["duplicates"] == sent["sent"], sent
        again = send(srv.url, before)   # everything sent again: all of it already there
        assert again["accepted"] == 0 and again["duplicates"] == again["sent"] >= sent["sent"], again
        srv.wait_caught_up(timeout=60)
        rows = srv.get("/v1/views/device_stats")["rows"]
        view = {(tuple(r["key"]), tuple(r["window"])): r["value"] for r in rows}
    events = log_events(srv.data_dir)
    seqs = [e.seq for e in events]
    print(f"acknowledged {len(acked)}, in the log {len(events)}; first lines of the runs: {runs}; "
          f"the last send: {sent}; all again: {again}")
    assert len(seqs) == len(set(seqs)), "an event counted twice"
    assert acked <= set(seqs), f"lost: {sorted(acked - set(seqs))[:20]}"
    for e in events:   # nothing else than what a device process stored
        assert (e.device, e.kind, e.ts, e.payload) == (DEVICE, "reading", T0 + e.seq * STEP_MS, payload(e.seq))
    assert view == brute_stats(events)


def test_the_readme_block_sends_its_reading(tmp_path: Path) -> None:
    """The README's edge SDK block, verbatim but for the server's address."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### On the device: the edge SDK"):]
    block = section[section.index("```python\n") + 10:section.index("\n```", section.index("```python"))]
    with ServerProcess(tmp_path, flows=[EXAMPLES / "device_stats.py"]) as srv:
        done = subprocess.run([sys.executable, "-c", block.replace("http://127.0.0.1:8470", srv.url)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("True SendStats(requests=1, sent=1, accepted=1"), done.stdout
        srv.wait_caught_up()
        rows = srv.get("/v1/views/device_stats")["rows"]
    assert [(r["key"], r["value"]["count"], r["value"]["max"]) for r in rows] == [(["wrist-17", "accel_x"], 1, 0.31)]
    assert (tmp_path / "wrist-queue").is_dir()
