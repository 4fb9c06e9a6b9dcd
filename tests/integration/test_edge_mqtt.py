"""The edge SDK over MQTT: a device publishes its queue through a real Mosquitto (the test's own,
with a password per device and an ACL) that ``fluvial serve --mqtt`` reads.

The device records readings while the broker is unreachable, then sends them at QoS 1; the queue
as it was before that (as if every PUBACK had been lost) is published again, and the server keeps
each event once: the ``device_stats`` view equals the brute force over the recorded readings,
and the log holds each exactly once.  A device with a wrong password is told so
(:class:`~fluvial.edge.EdgeAuthError`) and its queue keeps its events.  Seed printed.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pytest
from server_proc import EXAMPLES, ServerProcess, free_port
from test_edge import brute_stats, log_events
from test_mqtt_ingest import Broker

import fluvial
from fluvial.edge import EdgeAuthError, EdgeClient

pytestmark = pytest.mark.explicit_backends   # it names its backends: not in make test's spelled-out pass

T0 = 1_790_000_000_000


def test_a_queue_published_twice_through_mosquitto_is_counted_once(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    rnd = random.Random(seed)
    broker = Broker(tmp_path / "broker")
    try:
        device = "dev-3"
        offline = EdgeClient(f"mqtt://{device}:pw-{device}@127.0.0.1:{free_port()}", device, tmp_path / "queue",
                             batch_records=rnd.randint(20, 200), timeout_s=2)
        recorded: list[fluvial.Event] = []
        while len(recorded) < 3_000:
            n = rnd.randint(1, 50)
            payloads = [{"kind": rnd.choice(["x", "y"]), "value": rnd.randint(-500, 500) / 4} for _ in range(n)]
            ts = [T0 + rnd.randrange(6 * 3_600_000) for _ in range(n)]
            seqs = offline.record_many("reading", payloads, ts)
            recorded += [fluvial.Event(device=device, kind="reading", ts=t, seq=s, payload=p)
                         for s, t, p in zip(seqs, ts, payloads)]
        assert offline.flush(deadline_s=0.5) is False and offline.pending == len(recorded)   # no broker there
        offline.close()
        shutil.copytree(tmp_path / "queue", tmp_path / "queue-before")

        url = f"mqtt://{device}:pw-{device}@127.0.0.1:{broker.port}"
        with ServerProcess(tmp_path, flows=[EXAMPLES / "device_stats.py"], extra=["--mqtt", broker.url]) as srv:
            for queue in ("queue", "queue-before"):   # the second: every PUBACK of the first lost
                client = EdgeClient(url, device, tmp_path / queue, batch_records=rnd.randint(20, 200), timeout_s=5)
                assert client.flush(deadline_s=120) is True and client.pending == 0
                assert client.stats.sent == len(recorded), client.stats
                client.close()
            deadline = time.monotonic() + 120   # the bridge appends what the broker delivers: all of it
            while sum(r["value"]["count"] for r in srv.get("/v1/views/device_stats")["rows"]) < len(recorded):
                assert time.monotonic() < deadline, "the published readings did not all reach the view"
                time.sleep(0.2)
            srv.wait_caught_up(timeout=60)   # (and anything more there is to come)
            rows = srv.get("/v1/views/device_stats")["rows"]
            view = {(tuple(r["key"]), tuple(r["window"])): r["value"] for r in rows}

            wrong = EdgeClient(f"mqtt://{device}:not-the-password@127.0.0.1:{broker.port}", device,
                               tmp_path / "wrong", timeout_s=5)
            wrong.record("reading", {"kind": "x", "value": 1.0})
            with pytest.raises(EdgeAuthError, match="refused"):
                wrong.flush(deadline_s=30)
            assert wrong.pending == 1
            wrong.close()
        events = log_events(srv.data_dir)
    finally:
        broker.close()
    print(f"recorded {len(recorded)}, in the log {len(events)}")
    assert sorted(e.seq for e in events) == sorted(e.seq for e in recorded)   # each once, none lost
    assert view == brute_stats(recorded)
