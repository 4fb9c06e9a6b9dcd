"""`fluvial demo` runs end to end and its numbers add up against the files it generated."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_shows_the_lambda_cycle(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fluvial.cli.main", "demo", "--tweets", "3000", "--readings", "8000",
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
    assert late > 0 and merged == readings - late      # the speed layer leaves late events out
    assert final == readings                           # the batch layer includes them
    assert "hashtag_top10 v2" in out.stdout and "Try:" in out.stdout
    # the printed commands work
    data = tmp_path / "demo" / "data"
    q = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(data), "query",
                        "device_stats", "--key", '["dev-007","temp"]', "--format", "jsonl"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert q.returncode == 0 and q.stdout.count('"key":["dev-007","temp"]') >= 1


def test_demo_refuses_to_wipe_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "data.txt").write_text("keep me")
    out = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "demo", "--demo-dir",
                          str(tmp_path / "precious")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "not a demo directory" in out.stderr
    assert (tmp_path / "precious" / "data.txt").read_text() == "keep me"
