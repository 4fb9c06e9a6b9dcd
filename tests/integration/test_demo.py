"""`fluvial demo` runs end to end and its numbers add up against the files it generated."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The printed curl commands are run with the real curl; only a machine without it (and not
# FLUVIAL_REQUIRE_SERVICES=1, as in CI) checks the same query with urllib instead.
CURL = bool(shutil.which("curl")) or os.environ.get("FLUVIAL_REQUIRE_SERVICES") == "1"


def shell(command: str, *, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``command`` run by bash as a user pastes it, with this environment's ``fluvial`` first on PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={**os.environ, "PATH": path})


def test_demo_shows_the_lambda_cycle(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fluvial.cli.main", "demo", "--offline", "--tweets", "3000", "--readings", "8000",
         "--seed", "3", "--demo-dir", str(tmp_path / "demo"), "--examples", str(REPO / "examples")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    readings = sum(len(f.read_text().splitlines()) for f in (tmp_path / "demo").glob("readings-*.jsonl"))
    counted = [tuple(int(s.replace(",", "")) for s in m)
               for m in re.findall(r"counting ([\d,]+) of the ([\d,]+) readings ingested; "
                                   r"the speed layer has seen (\d+) late", out.stdout)]
    assert len(counted) == 3, out.stdout
    (batch1, ingested1, _), (merged, ingested2, late), (final, ingested3, _) = counted
    assert ingested3 == ingested2 == readings and batch1 == ingested1 == readings * 4 // 5
    assert late > 0 and merged == readings             # late events are counted and correct their windows
    assert final == readings                           # the batch layer: the same final answer
    assert "hashtag_top10 v2" in out.stdout and "Try:" in out.stdout
    # the printed key query works pasted into a shell, quotes and all
    data = tmp_path / "demo" / "data"
    [line] = [ln.strip() for ln in out.stdout.splitlines() if "query device_stats --key" in ln]
    assert f"--data-dir {data} " in line
    q = shell(line + " --format jsonl", cwd=tmp_path)
    assert q.returncode == 0, q.stderr
    keys = [json.loads(row)["key"] for row in q.stdout.splitlines()]
    assert keys and all(k == ["dev-007", "temp"] for k in keys)


def test_demo_refuses_to_wipe_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "data.txt").write_text("keep me")
    out = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "demo", "--demo-dir",
                          str(tmp_path / "precious")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "not a demo directory" in out.stderr
    assert (tmp_path / "precious" / "data.txt").read_text() == "keep me"


def test_live_demo_serves_changing_views_and_its_commands_work(tmp_path: Path) -> None:
    """`fluvial demo` as a new user runs it: a server, simulated devices, live views, a guide."""
    import time
    import urllib.request
    from urllib.parse import quote

    with subprocess.Popen(
        [sys.executable, "-m", "fluvial.cli.main", "demo", "--seconds", "20", "--port", "0", "--devices", "20",
         "--rate", "600", "--batch-every", "6", "--demo-dir", str(tmp_path / "demo"),
         "--examples", str(REPO / "examples")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", first)
        assert match, first + proc.stderr.read() if proc.stderr else first
        url = match.group(1)
        lines = [first]
        seen_views = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("[") and len(seen_views) < 2:   # while it runs, the printed curl commands work
                with urllib.request.urlopen(f"{url}/v1/views/device_stats") as r:
                    seen_views.append(json.loads(r.read()))
                # the printed key query, pasted into a shell as it is (curl must not glob its [ ])
                [command] = [ln.strip() for ln in lines if "/v1/views/device_stats?key=" in ln]
                key = re.search(r"\?key=([^']+)'", command)
                assert key, command
                if CURL:
                    pasted = shell(command, cwd=tmp_path)
                    assert pasted.returncode == 0, f"{command}\n-> exit {pasted.returncode}: {pasted.stderr}"
                    keyed = json.loads(pasted.stdout)["rows"]
                else:
                    with urllib.request.urlopen(f"{url}/v1/views/device_stats?key={quote(key.group(1))}") as r:
                        keyed = json.loads(r.read())["rows"]
                assert keyed and all(row["key"] == json.loads(key.group(1)) for row in keyed)
                with urllib.request.urlopen(f"{url}/v1/views") as r:
                    names = {v["name"] for v in json.loads(r.read())["views"]}
                assert names == {"device_stats", "hashtag_top10"}
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    out = "".join(lines)
    assert "Try, in another terminal:" in out and f"curl -s {url}/v1/views" in out
    counted = [int(m.replace(",", "")) for m in re.findall(r"device_stats: ([\d,]+) readings", out)]
    assert len(counted) >= 2 and counted[-1] > counted[0] > 0, out   # live, changing views
    totals = [sum(r["value"]["count"] for r in v["rows"]) for v in seen_views]
    assert len(totals) == 2 and totals[1] > totals[0] > 0
    assert re.search(r"device_stats: [\d,]+ readings in [\d,]+ rows, v\d", out), out  # the batch layer ran
    data = tmp_path / "demo" / "data"
    query = re.search(r"(\S*fluvial) --data-dir (\S+) query hashtag_top10 --format jsonl", out)
    assert query and Path(query.group(2)) == data.resolve()
    q = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", query.group(2), "query",
                        "hashtag_top10", "--format", "jsonl"], capture_output=True, text=True, timeout=60)
    assert q.returncode == 0
    last = json.loads(q.stdout.splitlines()[-1])
    assert last["window"][1] - last["window"][0] == 60_000 and len(last["value"]) >= 1
