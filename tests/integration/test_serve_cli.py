"""`fluvial batch`, `reprocess` and `rollback` from the command line: offline, and through a running server."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter

import pytest
from server_proc import ServerProcess

SEED = random.randrange(2**32)
WORDS = ["Spark", "spark", "Kafka", "kafka", "IoT", "iot", "edge", "Edge", "a", "an", "of"]

OLD_FLOW = '''
import fluvial as fl
wc = fl.Pipeline("wc")
(wc.from_log("line").flat_map(lambda e: e.payload["text"].split())
   .map(lambda w: (w, 1)).reduce_by_key(lambda a, b: a + b).to_view("words"))
'''
NEW_FLOW = '''
import fluvial as fl
wc = fl.Pipeline("wc")
(wc.from_log("line").flat_map(lambda e: [w.lower() for w in e.payload["text"].split() if len(w) > 2])
   .map(lambda w: (w, 1)).reduce_by_key(lambda a, b: a + b).to_view("words"))
'''


def old_code(lines):
    return Counter(w for line in lines for w in line.split())


def new_code(lines):
    return Counter(w.lower() for line in lines for w in line.split() if len(w) > 2)


def fluvial(*args, cwd=None, check=True):
    out = subprocess.run([sys.executable, "-m", "fluvial.cli.main", *map(str, args)], capture_output=True,
                         text=True, timeout=120, cwd=cwd)
    if check:
        assert out.returncode == 0, out.stderr + out.stdout
    return out


def view(data, name="words"):
    rows = json.loads(fluvial("--data-dir", data, "query", name, "--format", "json").stdout)
    return rows["version"], {r["key"]: r["value"] for r in rows["rows"]}


@pytest.fixture
def lines():
    print(f"seed={SEED}")
    rng = random.Random(SEED)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 8))) for _ in range(600)]


def write(tmp_path, lines, name="lines.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_offline_batch_reprocess_dry_run_switch_and_rollback(tmp_path, lines):
    data = tmp_path / "data"
    (tmp_path / "wc.py").write_text(OLD_FLOW)
    (tmp_path / "wc2.py").write_text(NEW_FLOW)
    fluvial("--data-dir", data, "ingest", write(tmp_path, lines), "--kind", "line")
    out = fluvial("--data-dir", data, "batch", "--flow", tmp_path / "wc.py")
    assert "words@v1" in out.stdout
    assert view(data) == (1, dict(old_code(lines)))

    dry = fluvial("--data-dir", data, "reprocess", "words", "--from", "earliest", "--flow", tmp_path / "wc2.py",
                  "--dry-run").stdout
    old, new = old_code(lines), new_code(lines)
    added = len(new.keys() - old.keys())
    removed = len(old.keys() - new.keys())
    changed = sum(1 for k in old.keys() & new.keys() if old[k] != new[k])
    assert f"+{added} added, -{removed} removed, ~{changed} changed" in dry
    assert "dry run: nothing switched" in dry
    assert view(data) == (1, dict(old))

    done = fluvial("--data-dir", data, "reprocess", "words", "--from", "earliest", "--flow", tmp_path / "wc2.py",
                   "--keep-old").stdout
    assert "switched; old versions kept" in done
    version, rows = view(data)
    assert version >= 2 and rows == dict(new)

    more = [line.upper() for line in lines[:50]]
    fluvial("--data-dir", data, "ingest", write(tmp_path, more, "more.txt"), "--kind", "line")
    fluvial("--data-dir", data, "run", tmp_path / "wc2.py", "--mode", "stream", "--until-caught-up")
    assert view(data)[1] == dict(new_code(lines + more))     # the speed layer goes on with the new code

    back = fluvial("--data-dir", data, "rollback", "words", "--flow", tmp_path / "wc.py").stdout
    assert "rolled back: words@v1" in back
    fluvial("--data-dir", data, "run", tmp_path / "wc.py", "--mode", "stream", "--until-caught-up")
    assert view(data) == (1, dict(old_code(lines + more)))   # v1 plus a replay from its cut-off


def test_bad_from_and_unknown_view_are_clear_errors(tmp_path, lines):
    data = tmp_path / "data"
    (tmp_path / "wc.py").write_text(OLD_FLOW)
    fluvial("--data-dir", data, "ingest", write(tmp_path, lines), "--kind", "line")
    out = fluvial("--data-dir", data, "reprocess", "words", "--from", "yesterday-ish", "--flow",
                  tmp_path / "wc.py", check=False)
    assert out.returncode == 1 and "--from 'yesterday-ish'" in out.stderr
    out = fluvial("--data-dir", data, "reprocess", "nope", "--flow", tmp_path / "wc.py", check=False)
    assert out.returncode == 1 and "no flow of this server writes view 'nope'" in out.stderr
    out = fluvial("--data-dir", data, "batch", check=False)
    assert out.returncode == 1 and "no flows: give --flow FILE" in out.stderr
    out = fluvial("--data-dir", data, "rollback", "words", "--flow", tmp_path / "wc.py", check=False)
    assert out.returncode == 1 and "no view named 'words'" in out.stderr   # nothing ran yet
    fluvial("--data-dir", data, "batch", "--flow", tmp_path / "wc.py")
    out = fluvial("--data-dir", data, "rollback", "words", "--flow", tmp_path / "wc.py", check=False)
    assert out.returncode == 1 and "no previous version" in out.stderr


def test_the_cli_asks_the_running_server(tmp_path, lines):
    (tmp_path / "wc.py").write_text(OLD_FLOW)
    (tmp_path / "wc2.py").write_text(NEW_FLOW)
    events = [{"device": f"d{i % 7}", "kind": "line", "ts": 1_000 * i, "seq": i, "payload": {"text": t}}
              for i, t in enumerate(lines)]
    with ServerProcess(tmp_path, flows=[tmp_path / "wc.py"]) as srv:
        assert srv.post_events(events)[0] == 200
        srv.wait_caught_up()
        out = fluvial("--data-dir", srv.data_dir, "batch", "words").stdout
        assert "words@v1" in out and f"{len(lines)} records" in out
        assert view(srv.data_dir) == (1, dict(old_code(lines)))
        out = fluvial("--data-dir", srv.data_dir, "reprocess", "words", "--flow", tmp_path / "wc2.py",
                      "--grace", "0").stdout
        assert "switched" in out
        assert view(srv.data_dir)[1] == dict(new_code(lines))
        out = fluvial("--data-dir", srv.data_dir, "rollback", "words", check=False)
        # the grace period was 0: the old version is gone, so there is nothing to roll back to
        assert out.returncode == 1 and "no previous version" in out.stderr
    assert not (srv.data_dir / "server.json").exists()   # a clean stop removes it


def test_ui_pipelines_openapi_and_docs(tmp_path):
    from server_proc import EXAMPLES

    with ServerProcess(tmp_path, flows=[EXAMPLES / "device_stats.py"], kappa=[EXAMPLES / "word_count.py"]) as srv:
        status, page = srv.request("GET", "/ui")
        assert status == 200 and b"/v1/metrics" in page and b"/v1/pipelines" in page
        pipelines = {p["name"]: p for p in srv.get("/v1/pipelines")["pipelines"]}
        assert pipelines["device_stats"]["architecture"] == "lambda"
        assert pipelines["device_stats"]["views"] == ["device_stats"]
        assert "LogSource" in pipelines["device_stats"]["lineage"]
        assert {p["architecture"] for p in pipelines.values()} == {"lambda", "kappa"}
        kappa = next(p for p in pipelines.values() if p["architecture"] == "kappa")
        status, body = srv.admin("POST", f"/v1/views/{kappa['views'][0]}/batch")
        assert status == 400 and "kappa flow" in body["error"]   # no batch layer for kappa flows
        doc = srv.get("/openapi.json")
        assert doc["openapi"].startswith("3.") and "/v1/events" in doc["paths"] and "/v1/views/{name}" in doc["paths"]
        status, docs = srv.request("GET", "/docs")
        assert status == 200 and b"/v1/views/{name}/reprocess" in docs
        srv.wait_caught_up()   # every runner's lag has been measured
        status, text = srv.request("GET", "/metrics")
        assert status == 200 and b"fluvial_speed_lag_events{pipeline=\"device_stats\"} 0" in text


def test_the_batch_layer_of_serve_on_spark(tmp_path, lines, spark_ready):
    """`[batch] engine = "spark"`: the server's batch layer runs on PySpark, same views."""
    (tmp_path / "wc.py").write_text(OLD_FLOW)
    events = [{"device": f"d{i % 5}", "kind": "line", "ts": 1_000 * i, "seq": i, "payload": {"text": t}}
              for i, t in enumerate(lines)]
    config = '[batch]\nengine = "spark"\nspark_master = "local[2]"\nworkers = 1\n'
    with ServerProcess(tmp_path, flows=[tmp_path / "wc.py"], config=config) as srv:
        half = len(events) // 2
        assert srv.post_events(events[:half])[0] == 200
        srv.wait_caught_up()
        status, job = srv.admin("POST", "/v1/views/words/batch")
        assert status == 202
        assert srv.post_events(events[half:])[0] == 200      # the speed layer goes on meanwhile
        job = srv.wait_job(job["id"], timeout=240)
        assert job["status"] == "done", job
        assert job["result"]["views"] == {"words": 1} and job["result"]["engine"] == "spark"
        srv.wait_caught_up()
        got = {r["key"]: r["value"] for r in srv.get("/v1/views/words")["rows"]}
        assert got == dict(old_code(lines))
        assert srv.get("/v1/views/words")["version"] == 1


def test_a_failing_flow_shows_in_healthz_and_the_server_stays_up(tmp_path):
    import time

    (tmp_path / "fragile.py").write_text('''
import fluvial as fl
def parse(e):
    if e.payload["text"] == "boom":
        raise ValueError("cannot parse boom")
    return (e.payload["text"], 1)
p = fl.Pipeline("fragile")
p.from_log("line").map(parse).reduce_by_key(lambda a, b: a + b).to_view("fragile")
''')
    with ServerProcess(tmp_path, flows=[tmp_path / "fragile.py"]) as srv:
        ok = [{"device": "d", "kind": "line", "ts": i, "seq": i, "payload": {"text": "fine"}} for i in range(3)]
        assert srv.post_events(ok)[0] == 200
        srv.wait_caught_up()
        assert srv.request("GET", "/healthz")[0] == 200
        assert srv.post_events([{"device": "d", "kind": "line", "ts": 9, "seq": 9,
                                 "payload": {"text": "boom"}}])[0] == 200
        deadline = time.monotonic() + 10
        status, body = srv.request("GET", "/healthz")
        while status == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
            status, body = srv.request("GET", "/healthz")
        assert status == 503 and b"ValueError: cannot parse boom" in body
        # the committed view is intact and still served; the failing micro-batch was not committed
        assert {r["key"]: r["value"] for r in srv.get("/v1/views/fragile")["rows"]} == {"fine": 3}
        info = srv.get("/v1/views")["views"][0]
        assert info["speed_layer"]["errors"] >= 1 and "cannot parse boom" in info["speed_layer"]["last_error"]


def test_offline_rollback_finds_the_flows_the_views_were_built_with(tmp_path, lines):
    """No --flow and no fluvial.toml: the data directory remembers which flow files wrote its views."""
    data = tmp_path / "data"
    (tmp_path / "wc.py").write_text(OLD_FLOW)
    (tmp_path / "wc2.py").write_text(NEW_FLOW)
    out = fluvial("--data-dir", data, "rollback", "words", check=False)
    assert out.returncode == 1 and "no flows: give --flow FILE" in out.stderr   # nothing ran here yet
    fluvial("--data-dir", data, "ingest", write(tmp_path, lines), "--kind", "line")
    fluvial("--data-dir", data, "batch", "--flow", tmp_path / "wc.py")
    fluvial("--data-dir", data, "reprocess", "words", "--from", "earliest", "--flow", tmp_path / "wc2.py",
            "--keep-old")
    assert view(data)[1] == dict(new_code(lines))

    back = fluvial("--data-dir", data, "rollback", "words").stdout
    assert "rolled back: words@v1" in back
    assert view(data) == (1, dict(old_code(lines)))
    more = [line.upper() for line in lines[:40]]
    fluvial("--data-dir", data, "ingest", write(tmp_path, more, "more.txt"), "--kind", "line")
    out = fluvial("--data-dir", data, "batch").stdout          # no --flow: the remembered flows, old code again
    assert "words@v" in out
    assert view(data)[1] == dict(old_code(lines + more))


OTHER_FLOW = '''
import fluvial as fl
lc = fl.Pipeline("lc")
lc.from_log("line").map(lambda e: (e.device, 1)).reduce_by_key(lambda a, b: a + b).to_view("lines_per_device")
'''


def test_a_server_with_a_config_file_runs_its_batch_layer_with_it_and_remembers_every_flow(tmp_path, lines):
    """[log] partitions = 2: the batch child opens the log as the server does. The server's batch runs
    (one flow each) do not make the data directory forget its other flows."""
    (tmp_path / "wc.py").write_text(OLD_FLOW)
    (tmp_path / "lc.py").write_text(OTHER_FLOW)
    events = [{"device": f"d{i % 7}", "kind": "line", "ts": 1_000 * i, "seq": i, "payload": {"text": t}}
              for i, t in enumerate(lines)]
    config = (f"[log]\npartitions = 2\n[[flows]]\nfile = \"{tmp_path / 'wc.py'}\"\n"
              f"[[flows]]\nfile = \"{tmp_path / 'lc.py'}\"\n")
    with ServerProcess(tmp_path, config=config) as srv:
        assert srv.post_events(events)[0] == 200
        srv.wait_caught_up()
        for name in ("words", "words"):
            status, job = srv.admin("POST", f"/v1/views/{name}/batch")
            assert status == 202, job
            done = srv.wait_job(job["id"])
            assert done["status"] == "done", done.get("error")
        assert view(srv.data_dir) == (2, dict(old_code(lines)))
        devices = Counter(e["device"] for e in events)
    assert view(srv.data_dir, "lines_per_device")[1] == dict(devices)
    # offline, with neither --flow nor the config: both flows are still known
    out = fluvial("--data-dir", srv.data_dir, "batch", "lines_per_device", "--config", tmp_path / "fluvial.toml")
    assert "lines_per_device@v1" in out.stdout
    out = fluvial("--data-dir", srv.data_dir, "rollback", "words")
    assert "rolled back: words@v1" in out.stdout
