"""schemathesis against the live ``/openapi.json`` of a real ``fluvial serve``: as admin, device, read, no token.

For each of the four callers, ``schemathesis run`` (the CLI, in a child process) generates requests
for every operation from the document (the example values, the coverage phase's boundary and
missing-value cases, positive and negative fuzzed data, stateful sequences through the links it
infers) and applies every check it has (``--checks all``): no 5xx, every status, media type,
header and body as documented, schema-breaking requests refused, schema-valid ones accepted,
missing required headers and unsupported methods refused, authentication not ignored. The four share one
server (per test process), so a caller may fuzz a server whose views were batch-run, reprocessed
and rolled back by random requests; after each run the server must still ingest, answer and be
healthy, and its log must hold no failed request (a 500).

Bounded for the suite (``FLUVIAL_API_FUZZ_EXAMPLES``, default 20 examples per operation and
phase: about 2,100 test cases and 15 to 20 s per caller on the 2-core test machine). ``bench/api_fuzz.sh
MINUTES`` runs the same with a time budget instead (``FLUVIAL_API_FUZZ_SECONDS`` per caller). The
seed is printed: ``FLUVIAL_TEST_SEED=<n>`` generates the same requests again (answers that depend
on timing, such as a job still running or a rate limit, may differ).

The few places where the document cannot say all the server does are in :data:`CONFIG`, each
with its reason; :mod:`schemathesis_hooks` writes the NDJSON and MessagePack bodies.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fluvial.server.auth import TokenStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_proc import EXAMPLES, ServerProcess

pytestmark = pytest.mark.services

SEED = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))
MAX_EXAMPLES = int(os.environ.get("FLUVIAL_API_FUZZ_EXAMPLES", "20"))
FUZZ_SECONDS = os.environ.get("FLUVIAL_API_FUZZ_SECONDS")  # set: a time budget per caller (the long run)
CALLERS = ("admin", "device", "read", "none")
DEVICE = "dev-1"
HOOKS = Path(__file__).resolve().parent / "schemathesis_hooks.py"

CONFIG = f"""
hooks = "{HOOKS}"

# /healthz answers 503 for a degraded server: its documented answer (a readiness probe reads it),
# not a server error. (Fuzzed events at the end of time once degraded it: see the test at the end.)
[[operations]]
include-path = "/healthz"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]

# A reprocessing names things on the server that no schema can list: a flow file (which files
# exist in the flow directories, and which pipelines they define) and PARTITION:OFFSET pairs
# (the log's partitions and ends now). Naming one that does not exist is a 400 that says so.
[[operations]]
include-path = "/v1/views/{{name}}/reprocess"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str | None]]]:
    srv = ServerProcess(tmp_path_factory.mktemp("schemathesis"),
                        flows=[EXAMPLES / "device_stats.py", EXAMPLES / "hashtag_top10.py"],
                        kappa=[EXAMPLES / "word_count.py"], extra=["--auth", "tokens"])
    srv.data_dir.mkdir(parents=True)
    with TokenStore(srv.data_dir / "tokens.db") as store:
        tokens: dict[str, str | None] = {
            "admin": store.create("admin")[0], "device": store.create("device", device=DEVICE)[0],
            "read": store.create("read")[0], "none": None}
    with srv:
        yield srv, tokens


def schemathesis(srv: ServerProcess, token: str | None, workdir: Path, *, device: str | None = None,
                 ) -> tuple[int, str, float]:
    """``schemathesis run`` against ``srv`` with ``token``: (exit code, output, seconds)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    budget = ["--max-time", FUZZ_SECONDS, "--max-examples", "1000"] if FUZZ_SECONDS else [
        "--max-examples", str(MAX_EXAMPLES)]
    args = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run",
            f"{srv.url}/openapi.json", "--checks", "all", "--mode", "all", "--seed", str(SEED), *budget,
            "--workers", "1", "--generation-database", "none", "--continue-on-failure", "--request-timeout", "30",
            "--output-truncate", "false"]
    if token is not None:
        args += ["--header", f"Authorization: Bearer {token}"]
    env = {k: v for k, v in os.environ.items() if k != "FLUVIAL_FUZZ_DEVICE"}
    if device is not None:
        env["FLUVIAL_FUZZ_DEVICE"] = device
    started = time.monotonic()
    done = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=(float(FUZZ_SECONDS) * 1.5 + 300) if FUZZ_SECONDS else 600)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def summary(output: str) -> str:
    """The figures of a run: test cases generated, failures, time."""
    lines = [line.strip() for line in output.splitlines()
             if re.search(r"\d+ generated|^=+ .* in [\d.]+s =+$|Authentication failed", line.strip())]
    return "; ".join(lines)


@pytest.mark.parametrize("who", CALLERS)
def test_schemathesis_finds_nothing(server: tuple[ServerProcess, dict[str, str | None]], who: str,
                                    tmp_path: Path) -> None:
    srv, tokens = server
    print(f"FLUVIAL_TEST_SEED={SEED}")
    code, output, seconds = schemathesis(srv, tokens[who], tmp_path, device=DEVICE if who == "device" else None)
    print(f"{who}: {summary(output)} ({seconds:.1f} s)")
    assert code == 0, f"schemathesis as {who} (FLUVIAL_TEST_SEED={SEED}):\n{output[-20000:]}"
    assert srv.proc is not None and srv.proc.poll() is None, srv.output()[-3000:]
    still_ingests_and_answers(srv, tokens, seq=2**62 + SEED + CALLERS.index(who))


def still_ingests_and_answers(srv: ServerProcess, tokens: dict[str, str | None], seq: int) -> None:
    """After a caller's run (batch runs, reprocessings and rollbacks at random among them): the
    server ingests, answers, is healthy, and no request ended in a 500."""
    event = {"device": DEVICE, "kind": "reading", "ts": 1_700_000_000_000, "seq": seq,
             "payload": {"kind": "temp", "value": 21.5}}
    status, body = srv.post_events([event], token=tokens["device"])
    assert status == 200 and body["accepted"] + body["duplicates"] == 1, body
    for name in ("device_stats", "hashtag_top10", "word_counts"):
        assert "rows" in srv.get(f"/v1/views/{name}", tokens["read"])
    status, raw = srv.request("GET", "/healthz", headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert status == 200, raw   # healthy: nothing the fuzzers sent degraded it
    assert "failed (reference" not in srv.output(), srv.output()[-5000:]  # no request ended in a 500


def test_an_event_at_the_end_of_time_does_not_stop_the_speed_layer(tmp_path: Path) -> None:
    """Found by schemathesis: ``ts`` took any signed 64-bit integer, and an event in the last
    minute of that range (or the first) made every micro-batch of device_stats fail, so that
    nothing acknowledged after it reached the view. Event times are now dates of the years 1
    to 9999: beyond them an event is refused with the reason (and dead-lettered), and events at
    both ends are counted like any other."""
    from fluvial.log.limits import MAX_TS_MS, MIN_TS_MS

    with ServerProcess(tmp_path, flows=[EXAMPLES / "device_stats.py"]) as srv:
        base = {"device": "d", "kind": "reading", "seq": 1, "payload": {"kind": "t", "value": 1.0}}
        events = [{**base, "ts": ts, "seq": i} for i, ts in   # in time order: none is late
                  enumerate([2**63 - 1, -(2**63), MAX_TS_MS + 1, MIN_TS_MS, 1_700_000_000_000, MAX_TS_MS])]
        status, body = srv.post_events(events)
        assert status == 200 and body["accepted"] == 3, body
        assert [r["index"] for r in body["rejected"]] == [0, 1, 2], body
        assert all(".ts" in r["reason"] and "years 1 to 9999" in r["reason"] for r in body["rejected"]), body
        srv.wait_caught_up(timeout=10)
        windows = sorted(row["window"][0] for row in srv.get("/v1/views/device_stats")["rows"])
        assert windows == [MIN_TS_MS, 1_699_999_980_000, MAX_TS_MS - MAX_TS_MS % 60_000], windows
        assert srv.request("GET", "/healthz")[0] == 200
