"""The seed's ``saveToCassandra("spark", "wordcount")``: ``save_to("cassandra://HOST/KEYSPACE",
TABLE, COLUMNS)`` from a run whose serving store is SQLite (batch and stream, device retries
in the log), and from one whose serving store is Cassandra itself (``save_to(None, ...)``).
The table equals a brute force over the events the log kept (the first of each ``(device, seq)``)."""

from __future__ import annotations

import operator
import os
import random
from collections import Counter

import pytest

import fluvial as fl
from fluvial.backends import open_store
from fluvial.testing import make_events, run_batch, run_stream

SEED = int(os.environ.get("FLUVIAL_TEST_SEED") or random.randrange(2**32))
pytestmark = pytest.mark.explicit_backends   # it names its stores itself


def expected(events: list[fl.Event]) -> dict[str, int]:
    seen: set[tuple[str, int]] = set()
    counts: Counter[str] = Counter()
    for e in events:
        if (e.device, e.seq) not in seen:
            seen.add((e.device, e.seq))
            counts[e.device] += 1
    return dict(counts)


def pipeline(target: str | None) -> fl.Pipeline:
    p = fl.Pipeline("device_counts")
    (p.from_log("reading").map(lambda e: (e.device, 1)).reduce_by_key(operator.add)
     .save_to(target, "device_count", ["device", "n"]))
    return p


@pytest.mark.parametrize("mode", ["batch", "stream"])
def test_save_to_a_cassandra_url_from_a_sqlite_served_run(tmp_path, cassandra_url: str, mode: str) -> None:
    print(f"seed={SEED} mode={mode}")
    events = make_events(SEED, 600, devices=17, duplicate_fraction=0.05)
    if mode == "batch":
        run_batch(pipeline(cassandra_url), events, tmp_path)
    else:
        run_stream(pipeline(cassandra_url), events, tmp_path, max_batch_records=150, appends=2)
    with open_store(cassandra_url) as store:
        got = {row["device"]: row["n"] for row in store.table_rows("device_count")}
    assert got == expected(events)


def test_save_to_the_serving_cassandra_store(tmp_path, cassandra_url: str) -> None:
    print(f"seed={SEED}")
    events = make_events(SEED, 600, devices=13, duplicate_fraction=0.05)
    result = run_stream(pipeline(None), events, tmp_path, max_batch_records=150, appends=2, store=cassandra_url)
    assert {row["device"]: row["n"] for row in result.tables["device_count"]} == expected(events)


def test_a_save_to_target_that_is_not_a_url_is_refused(tmp_path) -> None:
    events = make_events(SEED, 10, devices=2)
    with pytest.raises(fl.errors.ConfigError, match="store URL such as cassandra://"):
        run_batch(pipeline("spark.wordcount"), events, tmp_path)
