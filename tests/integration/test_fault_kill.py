"""SIGKILL at random moments: the server, and the batch layer's child processes, under load.

A device fleet posts readings through a retrying client (a batch is sent again until it is
acknowledged, and now and then after its acknowledgement was "lost"), batch runs are
requested at random moments, and 20 times a random victim is killed with SIGKILL: the whole
server (then restarted on the same data directory) or a running batch child. Afterwards the
merged view must equal a brute force over exactly the acknowledged events, before and after a
final batch run: nothing acknowledged lost, nothing counted twice. The seed is printed
(``FLUVIAL_E2E_SEED`` reproduces the choices; the moments depend on the machine).
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import time
from collections.abc import Callable

from server_proc import ServerProcess
from test_serve_e2e import (
    EXAMPLES,
    Devices,
    RetryingClient,
    base_ms,
    brute_stats,
    eventually,
    rng,  # noqa: F401 (fixture)
    run_batch,
    serve,  # noqa: F401 (fixture)
    view,
    wait_until,
)

# 20 in the suite; bench/soak.sh runs the same test for longer (FLUVIAL_KILL_CYCLES=200)
CYCLES = int(os.environ.get("FLUVIAL_KILL_CYCLES", "20"))


def request_batch(srv: ServerProcess) -> bool:
    try:
        status, _ = srv.admin("POST", "/v1/views/device_stats/batch")
    except (OSError, http.client.HTTPException, ValueError):
        return False
    return status == 202


def test_sigkill_of_the_server_and_batch_children_loses_and_duplicates_nothing(
        serve: Callable[..., ServerProcess], rng: random.Random) -> None:  # noqa: F811
    srv = serve(flows=[EXAMPLES / "device_stats.py"], batch_interval_ms=50,
                config="[log]\nsegment_bytes = 16384\n")
    fleet = Devices(rng, 16)
    events = fleet.readings(120 * CYCLES, base_ms(rng), step_ms=100)
    batches = [events[i:i + 40] for i in range(0, len(events), 40)]
    client = RetryingClient(srv, batches, rng, pause_s=0.01)
    client.start()
    kills = {"server": 0, "batch child": 0}
    requested = 0
    for _ in range(CYCLES):
        time.sleep(rng.uniform(0.0, 0.4))
        if rng.random() < 0.6:
            requested += request_batch(srv)
            time.sleep(rng.uniform(0.0, 0.3))
        assert srv.proc is not None
        children = srv.children()
        if children and rng.random() < 0.5:
            victim = rng.choice(children)
            try:
                os.kill(victim, signal.SIGKILL)
                kills["batch child"] += 1
            except ProcessLookupError:
                pass   # it finished in between
        else:
            srv.kill()
            kills["server"] += 1
            time.sleep(rng.uniform(0.0, 0.2))
            srv.start()
    print(f"kills: {kills}, batch runs requested: {requested}")
    client.join(60 + 6 * CYCLES)
    assert not client.is_alive() and not client.problems, client.problems
    assert client.acked_batches == len(batches)
    assert kills["server"] > 0

    by_id = {(e["device"], e["seq"]): e for e in events}
    acked = [by_id[k] for k in dict.fromkeys(client.acked)]
    want = brute_stats(acked)
    srv.wait_caught_up(timeout=60)
    eventually(srv, "device_stats", want, f"merged view after {CYCLES} kills", timeout=60)
    _, got = view(srv, "device_stats")
    assert sum(v["count"] for v in got.values()) == len(acked)   # no event counted twice

    wait_until(lambda: not srv.children(), "batch runs finished", 60)
    run_batch(srv, "device_stats")                               # the batch layer's final answer
    eventually(srv, "device_stats", want, "merged view after a final batch run", timeout=60)
