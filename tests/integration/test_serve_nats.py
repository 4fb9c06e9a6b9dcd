"""``fluvial serve`` with its log on NATS JetStream: HTTP ingest appends to the streams, the speed
layer serves views over them, equal to a brute force; a retried request is stored once."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest
from server_proc import ServerProcess
from test_serve_e2e import (
    EXAMPLES,
    Devices,
    base_ms,
    brute_stats,
    eventually,
    rng,  # noqa: F401 (fixture)
    serve,  # noqa: F401 (fixture)
)

from logs import delete_streams, fresh_nats_url, nats_or_skip

pytestmark = pytest.mark.explicit_backends   # they name their backends: not in make test's spelled-out pass


@pytest.fixture
def nats_log() -> Iterator[str]:
    nats_or_skip()
    url = fresh_nats_url()
    yield url
    delete_streams(url)


def test_serve_on_a_nats_log(serve: Callable[..., ServerProcess], rng: random.Random,  # noqa: F811
                             nats_log: str) -> None:
    srv = serve(flows=[EXAMPLES / "device_stats.py"], batch_interval_ms=50, env={"FLUVIAL_LOG": nats_log})
    events = Devices(rng, 8).readings(600, base_ms(rng), step_ms=100)
    for i in range(0, len(events), 100):
        status, body = srv.post_events(events[i:i + 100])
        assert status == 200 and body["accepted"] == 100, body
    status, body = srv.post_events(events[:100])  # a retried request
    assert status == 200 and (body["accepted"], body["duplicates"]) == (0, 100), body
    eventually(srv, "device_stats", brute_stats(events), "device_stats over the NATS log")
