#!/usr/bin/env bash
# Run every benchmark at full size (50 MB of text, 1M tweets, 1M readings, 30 s of
# latency load) and print the summary.  Results: bench/results/*.json.
# Extra arguments go to every throughput benchmark (e.g. --repeat 5, --sides ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

"$PY" bench/word_count.py "$@"
"$PY" bench/hashtags.py "$@"
"$PY" bench/device_stats.py "$@"
"$PY" bench/latency.py

echo
echo "== summary (bench/results/*.json)"
"$PY" - <<'PY'
import json, pathlib
res = pathlib.Path("bench/results")
for name in ("word_count", "hashtags", "device_stats"):
    f = res / f"{name}.json"
    if not f.exists():
        continue
    d = json.loads(f.read_text())
    sides = d["sides"]
    line = ", ".join(f"{k} {v['median_s']:.2f} s" for k, v in sides.items())
    print(f"{name:<13} {d['records']:>9,} {d['unit']:<9} {line}")
    for side, v in d["verdicts"].items():
        print(f"{'':<13} {side}: {v.get('slowdown_vs_plain', float('nan')):.2f}x plain "
              f"({'PASS' if v.get('plain_target_met') else 'MISS'} <= 3x), "
              f"{v.get('speedup_vs_spark', float('nan')):.2f}x faster than PySpark "
              f"({'PASS' if v.get('spark_target_met') else 'MISS'} >= 5x)")
f = res / "latency.json"
if f.exists():
    d = json.loads(f.read_text())
    print(f"{'latency':<13} {d['achieved_rate']:,.0f} events/s: p50 {d['p50_ms']:.1f} ms, "
          f"p95 {d['p95_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms "
          f"({'PASS' if d['target_met'] else 'MISS'} p99 < {d['target_p99_ms']:g} ms)")
PY

# fluvial serve over loopback: HTTP ingest throughput (json/msgpack x gzip x fsync, next to
# LocalLog.append in-process) and POST -> visible latency at three batch intervals.
"$PY" bench/ingest_http.py --matrix
"$PY" bench/serve_latency.py --batch-interval-ms 20,200,1000
