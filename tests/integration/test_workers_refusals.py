"""What workers refuse, before anything runs, and the mutual exclusion of workers and a single runner.

* Pipelines whose partitions cannot run apart (per-key state, joins, cogroup, latest-value
  views, ``save_to``, in-memory sources, tables consumed by other operators) are refused with
  a message that names the operator, says why and what to run instead.
* A pipeline with a single runner's checkpoint refuses workers; a pipeline run by workers
  refuses ``fluvial run --mode stream`` (naming the live worker); and a single runner that
  started before the workers took the pipeline finds its first commit refused.  (Batch runs
  and Kappa reprocessing of a workers' pipeline are accepted: test_workers_layers.py.)

On SQLite and PostgreSQL stores.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fluvial
from fluvial.errors import OwnedElsewhere, UnsupportedOperation
from fluvial.layers.workers import Worker
from fluvial.state.groups import mark_partitioned
from fluvial.testing import make_events
from stores import store_url_of

pytestmark = pytest.mark.explicit_backends   # it names its backends: not in make test's spelled-out pass
PARTITIONS = 3


@pytest.fixture(params=["sqlite", "postgresql"])
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[fluvial.Workspace]:
    with store_url_of(request.param, tmp_path / "data") as url:
        space = fluvial.open(tmp_path / "data", writer=True, store=url,
                             log_config=fluvial.LogConfig(partitions=PARTITIONS, fsync="never"))
        seed = random.SystemRandom().randrange(2**32)
        print(f"seed={seed} store={url}")
        space.log.append(make_events(seed, 300, devices=7))
        yield space
        space.close()


def _pairs(p: fluvial.Pipeline) -> Any:
    return p.from_log("reading").map(lambda e: (e.payload["color"], e.payload["level"]))


def _state(p: fluvial.Pipeline) -> None:
    _pairs(p).map_with_state(lambda k, v, s: ((s or 0) + v, (k, (s or 0) + v))).to_view("v")


def _join(p: fluvial.Pipeline) -> None:
    statuses = p.from_log("status").map(lambda e: (e.payload["color"], 1))
    _pairs(p).join(statuses).aggregate_by_key(fluvial.Count()).to_view("v")


def _cogroup(p: fluvial.Pipeline) -> None:
    _pairs(p).cogroup(_pairs(p)).to_view("v")


def _latest(p: fluvial.Pipeline) -> None:
    _pairs(p).to_view("v")


def _save(p: fluvial.Pipeline) -> None:
    _pairs(p).reduce_by_key(lambda a, b: a + b).save_to(None, "t", ["color", "level"])


def _queue(p: fluvial.Pipeline) -> None:
    p.from_queue([[("a", 1)]]).reduce_by_key(lambda a, b: a + b).to_view("v")


def _table_reused(p: fluvial.Pipeline) -> None:
    _pairs(p).reduce_by_key(lambda a, b: a + b).map(lambda kv: (kv[1], 1)).reduce_by_key(
        lambda a, b: a + b).to_view("v")


REFUSED = {_state: "per-key state", _join: "join", _cogroup: "other operators than to_view", _latest: "latest value",
           _save: "save_to", _queue: "in-memory source", _table_reused: "other operators than to_view"}


@pytest.mark.parametrize("build", list(REFUSED), ids=[f.__name__.strip("_") for f in REFUSED])
def test_operators_needing_a_key_in_one_place_are_refused_before_start(ws: fluvial.Workspace, build: Any) -> None:
    pipeline = fluvial.Pipeline("refused")
    build(pipeline)
    with pytest.raises(UnsupportedOperation) as info:
        Worker(log=ws.log, store=ws.store, pipelines=[pipeline])
    message = str(info.value)
    assert REFUSED[build] in message, message
    assert "workers run each log partition apart" in message or "across partitions" in message, message
    assert "fluvial run" in message, message   # what to do instead
    assert ws.store.checkpoint_token("workers:refused") is None   # nothing was marked


def _counting() -> fluvial.Pipeline:
    pipeline = fluvial.Pipeline("counted")
    _pairs(pipeline).aggregate_by_key(fluvial.Sum()).to_view("sums")
    return pipeline


def test_a_single_runners_pipeline_refuses_workers(ws: fluvial.Workspace) -> None:
    ws.stream_runner().run(_counting(), until_caught_up=True)
    with pytest.raises(OwnedElsewhere) as info:
        Worker(log=ws.log, store=ws.store, pipelines=[_counting()])
    assert "single stream runner" in str(info.value) and "stream:counted" in str(info.value)


def test_a_single_runner_started_before_the_workers_cannot_commit(ws: fluvial.Workspace) -> None:
    runner = ws.stream_runner()
    run = runner.start(_counting())   # no checkpoint yet: the workers may still take the pipeline
    try:
        mark_partitioned(ws.store, "counted")
        with pytest.raises(OwnedElsewhere, match="is run by `fluvial worker` processes"):
            run.step()
        assert ws.store.checkpoint_token("stream:counted") is None
        assert ws.store.query("sums") == []   # its micro-batch counted nothing
    finally:
        runner.release()
    with pytest.raises(OwnedElsewhere, match="fluvial worker"):
        ws.stream_runner().start(_counting())


FLOW = """import fluvial

counted = fluvial.Pipeline("counted")
(counted.from_log("reading").map(lambda e: (e.payload["color"], e.payload["level"]))
    .aggregate_by_key(fluvial.Sum()).to_view("sums"))
"""


def test_fluvial_run_refuses_a_pipeline_run_by_a_live_worker_and_names_it(tmp_path: Path) -> None:
    directory, flow = tmp_path / "data", tmp_path / "flow.py"
    flow.write_text(FLOW)
    space = fluvial.open(directory, writer=True, log_config=fluvial.LogConfig(partitions=PARTITIONS))
    space.log.append(make_events(random.SystemRandom().randrange(2**32), 100, devices=5))
    cli = [sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(directory)]
    worker = subprocess.Popen([*cli, "worker", str(flow), "--batch-interval-ms", "50"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        while "owns partitions [0, 1, 2]" not in worker.stdout.readline():
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
        done = subprocess.run([*cli, "run", str(flow), "--mode", "stream", "--until-caught-up"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "is run by `fluvial worker` processes" in done.stderr, done.stderr
        assert f"held now by pid {worker.pid}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "partitions released" in out
    space.close()


@pytest.mark.parametrize(("args", "says"), [
    (["--lease-ms", "0"], "--lease-ms and --max-batch-records must be > 0"),
    (["--max-batch-records", "-5"], "--lease-ms and --max-batch-records must be > 0"),
    (["--batch-interval-ms", "-1"], "--batch-interval-ms >= 0"),
    (["--pipeline", "nope"], "--pipeline nope: not in"),
])
def test_worker_arguments_out_of_range_say_which_and_how(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           args: list[str], says: str) -> None:
    from fluvial.cli.main import main

    flow = tmp_path / "flow.py"
    flow.write_text(FLOW)
    assert main(["--data-dir", str(tmp_path / "data"), "worker", str(flow), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err, err
    assert "(it defines counted)" in err or "must be" in err   # names what the file has, or the bound


@pytest.mark.parametrize(("source", "says"), [
    ("x = 1\n", "defines no pipeline"),
    ("import fluvial\nraise RuntimeError('broken flow')\n", "broken flow"),
    ("def broken(:\n", "SyntaxError"),
])
def test_a_flow_file_without_pipelines_or_failing_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             source: str, says: str) -> None:
    from fluvial.cli.main import main

    flow = tmp_path / "flow.py"
    flow.write_text(source)
    assert main(["--data-dir", str(tmp_path / "data"), "worker", str(flow)]) == 1
    err = capsys.readouterr().err
    assert says in err and str(flow) in err and "Traceback" not in err, err
