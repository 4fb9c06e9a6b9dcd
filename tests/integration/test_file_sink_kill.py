"""Stream file sinks, exactly once per micro-batch: SIGKILL the real runner, restart it, count copies.

``fluvial run FLOW --mode stream --until-caught-up`` runs a flow file that writes
every reading as a JSON line (``save_as_json_lines``) and the distinct devices
(per-key state: ``distinct``) into two directories, in micro-batches of a few
records.  The test kills that process with SIGKILL at random moments and starts
it again, six times (each after a random number of micro-batches, at a random moment
of one), then lets it finish.  Meanwhile a watcher reads every
visible part file again and again: each must be whole (every line a complete
JSON value, the file ending with a newline).  At the end the files must hold
exactly the brute force over the log: every reading once, every device once --
so a micro-batch replayed after a kill rewrote its own file and nothing else.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import fluvial
from fluvial import Event, LogConfig
from fluvial.engine.stream import Checkpoint
from fluvial.testing import brute, make_events

PARTITIONS = 3
FLOW = '''\
import fluvial as fl

pipeline = fl.Pipeline("files")
readings = pipeline.from_log("reading")
readings.map(lambda e: {{"device": e.device, "seq": e.seq, "value": e.payload["value"]}}).save_as_json_lines({rows!r})
readings.map(lambda e: e.device).distinct().save_as_json_lines({devices!r})
'''


def run_cli(directory: Path, flow: Path, max_batch_records: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-W", "error", "-m", "fluvial.cli.main", "--data-dir", str(directory), "run", str(flow),
         "--mode", "stream", "--until-caught-up", "--batch-interval-ms", "0",
         "--max-batch-records", str(max_batch_records), "--take-over"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


class Watcher(threading.Thread):
    """Reads every visible part file over and over; records any that is not whole."""

    def __init__(self, directories: list[Path]) -> None:
        super().__init__(daemon=True)
        self.directories, self.stop, self.partial, self.reads = directories, threading.Event(), [], 0

    def run(self) -> None:
        while not self.stop.is_set():
            for directory in self.directories:
                for part in sorted(directory.glob("[!.]*")):
                    try:
                        data = part.read_bytes()
                    except FileNotFoundError:   # replaced or removed between listing and reading
                        continue
                    self.reads += 1
                    if not data.endswith(b"\n") or not all(_whole(line) for line in data.splitlines()):
                        self.partial.append((part.name, data[-80:]))


def _whole(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def read_parts(directory: Path) -> tuple[list[object], list[str]]:
    values: list[object] = []
    names = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
    for name in names:
        values += [json.loads(line) for line in (directory / name).read_text().splitlines()]
    return values, names


def micro_batches(directory: Path) -> int:
    with fluvial.open(directory) as ws, ws.store.transaction() as txn:
        blob = txn.get_checkpoint("stream:files")
    return 0 if blob is None else Checkpoint.loads(blob).micro_batches


@pytest.mark.slow
def test_sigkill_the_stream_runner_writing_files(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    rnd = random.Random(seed)
    events: list[Event] = make_events(seed, 3_000, devices=40, kinds=["reading", "reading", "status"],
                                      out_of_order_ms=2_000, duplicate_fraction=0.05)
    data, rows, devices = tmp_path / "data", tmp_path / "out" / "rows", tmp_path / "out" / "devices"
    with fluvial.open(data, writer=True, log_config=LogConfig(partitions=PARTITIONS, fsync="never")) as ws:
        for i in range(0, len(events), 100):
            ws.log.append(events[i:i + 100])
    flow = tmp_path / "flow.py"
    flow.write_text(FLOW.format(rows=str(rows), devices=str(devices)))
    max_batch_records = rnd.choice([6, 9])

    watcher = Watcher([rows, devices])
    watcher.start()
    kills, seen = 0, []
    try:
        while kills < 6:
            proc = run_cli(data, flow, max_batch_records)
            target = micro_batches(data) + rnd.randint(1, 40)   # kill after a random number of micro-batches,
            while proc.poll() is None and micro_batches(data) < target:
                time.sleep(0.01)
            time.sleep(rnd.uniform(0, 0.03))                    # then at a random moment of one
            if proc.poll() is not None:
                _, err = proc.communicate()
                assert proc.returncode == 0, err
                break
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
            seen.append(micro_batches(data))
        print(f"max_batch_records={max_batch_records} kills={kills} micro-batches after each kill={seen}")
        assert kills == 6, f"the run finished after {kills} kills: give it more events"
        assert any(n > 0 for n in seen), "no kill landed after a micro-batch was committed"
        proc = run_cli(data, flow, max_batch_records)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    finally:
        watcher.stop.set()
        watcher.join()
    assert watcher.reads > 0 and watcher.partial == [], watcher.partial[:3]

    unique = [e for e in brute.unique(events) if e.kind == "reading"]
    found, names = read_parts(rows)
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    expected = [{"device": e.device, "seq": e.seq, "value": e.payload["value"]} for e in unique]
    assert Counter(map(key, found)) == Counter(map(key, expected))   # every reading exactly once
    found_devices, _ = read_parts(devices)
    assert sorted(found_devices) == sorted({e.device for e in unique})   # per-key state: each device once
    committed = micro_batches(data)
    assert names == sorted(names) and all(n.startswith("microbatch-") for n in names)
    assert max(int(n.split("-")[1].split(".")[0]) for n in names) < committed
    assert not list((tmp_path / "out").rglob(".*")), "a temporary part file was left behind"
