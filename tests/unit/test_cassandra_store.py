"""The cassandra:// store refuses bad input clearly: malformed URLs, nodes out of reach,
keyspace names that are not identifiers (nothing reaches CQL from the URL), and table and
column names, which are quoted; ``save_to`` rows come back with their types."""

from __future__ import annotations

import os
import random
import socket

import pytest

import fluvial as fl
from fluvial.backends import check_store_url, open_store
from fluvial.errors import ConfigError, StoreError
from fluvial.serving.cassandra.address import parse_url

SEED = int(os.environ.get("FLUVIAL_TEST_SEED") or random.randrange(2**32))


@pytest.fixture
def rng() -> random.Random:
    print(f"seed={SEED}")
    return random.Random(SEED)


@pytest.mark.parametrize("url, says", [
    ("cassandra://", "names no path"),
    ("cassandra:///ks", "names no host"),
    ("cassandra://127.0.0.1", "names no keyspace"),
    ("cassandra://127.0.0.1:9042/", "names no keyspace"),
    ("cassandra://127.0.0.1:99999/ks", "not a number between 1 and 65535"),
    ("cassandra://127.0.0.1:port/ks", "port 'port' is not a number"),
    ("cassandra://127.0.0.1:9042,127.0.0.2:9042/ks", "give one port for every host"),
    ("cassandra://a b/ks", "not a host name"),
    ("cassandra://127.0.0.1/a/b", "not a valid keyspace name"),
    ("cassandra://127.0.0.1/1ks", "not a valid keyspace name"),
    ("cassandra://127.0.0.1/ks;DROP KEYSPACE x", "not a valid keyspace name"),
    ("cassandra://127.0.0.1/system_auth", "not a valid keyspace name"),
    ("cassandra://127.0.0.1/" + "k" * 49, "not a valid keyspace name"),
    ("cassandra://127.0.0.1/ks?replication=3", "unknown option 'replication'"),
    ("cassandra://127.0.0.1/ks?replication_factor=0", "replication_factor='0' is not an integer >= 1"),
    ("cassandra://127.0.0.1/ks?replication_factor=x", "is not an integer >= 1"),
    ("cassandra://127.0.0.1/ks?consistency=SOME", "consistency='SOME' is not one of"),
    ("cassandra://u:p@127.0.0.1/ks", "user names and passwords are not supported"),
    ("cassandra://127.0.0.1/ks#x", "no '#' part"),
    ("cassandra2://127.0.0.1/ks", "no store backend for 'cassandra2://'"),
])
def test_malformed_urls_are_refused_before_connecting(url: str, says: str, tmp_path) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(")) as refused:
        check_store_url(url)
    assert "--store" in str(refused.value)
    if "://" in url and url.startswith("cassandra://") and says != "names no path":
        assert "write it as cassandra://" in str(refused.value)
    with pytest.raises(ConfigError):
        fl.open(tmp_path, store=url)   # a workspace checks it at once, not at the first query


def test_a_well_formed_url_says_where_and_how() -> None:
    target = parse_url("cassandra://10.0.0.1,10.0.0.2:9043/Spark?replication_factor=3&consistency=local_quorum")
    assert target.hosts == ("10.0.0.1", "10.0.0.2") and target.port == 9043
    assert (target.keyspace, target.replication_factor, target.consistency) == ("spark", 3, "LOCAL_QUORUM")
    default = parse_url("cassandra://127.0.0.1/spark")
    assert (default.port, default.replication_factor, default.consistency) == (9042, 1, "QUORUM")


def test_unreachable_nodes_are_named_with_the_flag_to_fix() -> None:
    with socket.socket() as s:   # a free port: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreError) as failed:
        open_store(f"cassandra://127.0.0.1:{port}/nowhere")
    message = str(failed.value)
    assert f"127.0.0.1:{port}" in message and "--store" in message and "FLUVIAL_STORE" in message


@pytest.mark.parametrize("table, columns, says", [
    ("fluvial_views", ["a"], "reserved"),
    ("t" * 49, ["a"], "at most 48"),
    ('x"; DROP', ["a"], "invalid table name"),
    ("ok", ['a"b'], "invalid column name"),
    ("ok", ["a", "A"], "duplicate column names"),
])
def test_hostile_table_and_column_names_are_refused(cassandra_url: str, table: str, columns: list[str],
                                                    says: str) -> None:
    with open_store(cassandra_url) as store, pytest.raises(ConfigError, match=says), store.transaction() as txn:
        txn.save_rows(table, columns, [["v"] * len(columns)])


def test_save_to_rows_keep_their_types_and_case(cassandra_url: str, rng: random.Random) -> None:
    """Upserts by key, values of every JSON type come back as saved; quoted names keep their case."""
    words = [f"w{i}" for i in range(30)]
    expected: dict[str, object] = {}
    with open_store(cassandra_url) as store:
        for _ in range(4):
            batch = [(rng.choice(words), rng.choice([rng.randint(-5, 5), rng.random(), "txt", None, True]))
                     for _ in range(20)]
            with store.transaction() as txn:
                txn.save_rows("wordCount", ["Word", "count"], batch)
            for word, value in batch:
                expected[word] = int(value) if isinstance(value, bool) else value
        with pytest.raises(StoreError, match="null in its key columns"), store.transaction() as txn:
            txn.save_rows("wordCount", ["Word", "count"], [(None, 1)])
        with pytest.raises(StoreError, match="byte string"), store.transaction() as txn:
            txn.save_rows("wordCount", ["Word", "count"], [("b", b"x")])
        got = {row["Word"]: row["count"] for row in store.table_rows("wordCount")}
        assert store.tables() == ["wordCount"]
    assert got == expected


def test_stores_opened_at_once_on_a_new_keyspace_create_it_once(cassandra_url: str) -> None:
    """Cassandra cannot create one table twice at once (two table ids): one opener creates the
    tables, the others wait for it; every store then works on the same tables."""
    from concurrent.futures import ThreadPoolExecutor

    from fluvial.aggregators import Count

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_store(cassandra_url), range(4)))
    try:
        stores[0].define_view("v", aggregator=Count())
        for i, store in enumerate(stores):
            with store.transaction() as txn:
                txn.merge_rows("v", [("k", None, i + 1)])
        assert [row.value for row in stores[-1].query("v")] == [sum(range(1, 5))]
    finally:
        for store in stores:
            store.close()


def test_without_the_driver_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from fluvial.errors import MissingDependency

    for name in [m for m in sys.modules if m == "cassandra" or m.startswith("cassandra.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cassandra", None)   # "import cassandra" fails
    with pytest.raises(MissingDependency, match=r"pip install 'fluvial\[cassandra\]'"):
        open_store("cassandra://127.0.0.1:1/nowhere")
