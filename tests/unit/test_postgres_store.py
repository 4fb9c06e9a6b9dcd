"""The postgresql:// store refuses bad input clearly: malformed URLs, a server out of
reach, schema names that are not identifiers (nothing reaches SQL from ``schema=``), and
view, table and column names, which are quoted as identifiers."""

from __future__ import annotations

import socket

import pytest

import fluvial as fl
from fluvial.aggregators import Count
from fluvial.backends import check_store_url, open_store
from fluvial.errors import ConfigError, StoreError


@pytest.mark.parametrize("url, says", [
    ("postgresql://", "names no path"),
    ("postgresql:///test", "names no host"),
    ("postgresql://127.0.0.1:5432", "names no database"),
    ("postgresql://127.0.0.1:5432/", "names no database"),
    ("postgresql://127.0.0.1:5432/a/b", "names no database"),
    ("postgresql://127.0.0.1:99999/test", "Port out of range"),
    ("postgresql://127.0.0.1:port/test", "write it as postgresql://"),
    ("postgresql://127.0.0.1/test?schema=", "not a valid schema name"),
    ("postgresql://127.0.0.1/test?schema=a;DROP SCHEMA public CASCADE", "not a valid schema name"),
    ("postgresql://127.0.0.1/test?schema=x%22%3B%20DROP", "not a valid schema name"),
    ("postgresql://127.0.0.1/test?schema=pg_catalog", "not a valid schema name"),
    ("postgresql://127.0.0.1/test?schema=a&sslmode=disable", "unknown parameter 'sslmode'"),
    ("postgresql://127.0.0.1/test?schema=a&idle_in_transaction_s=0", "from 1 to 3600, got '0'"),
    ("postgresql://127.0.0.1/test?idle_in_transaction_s=soon", "from 1 to 3600, got 'soon'"),
    ("postgresql://127.0.0.1/test?idle_in_transaction_s=nan", "from 1 to 3600, got 'nan'"),
    ("postgresql://127.0.0.1/test#x", "no '#' part"),
    ("postgres://127.0.0.1/test", "no store backend for 'postgres://'"),
])
def test_malformed_urls_are_refused_before_connecting(url: str, says: str, tmp_path) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(")) as refused:
        check_store_url(url)
    assert "--store" in str(refused.value)
    with pytest.raises(ConfigError):
        fl.open(tmp_path, store=url)   # a workspace checks it at once, not at the first query


def test_an_unreachable_server_is_named_with_the_flag_to_fix() -> None:
    with socket.socket() as s:   # a free port: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreError) as failed:
        open_store(f"postgresql://postgres@127.0.0.1:{port}/test?schema=nowhere")
    message = str(failed.value)
    assert f"127.0.0.1:{port}" in message and "--store" in message and "FLUVIAL_STORE" in message
    assert "Connection refused" in message


def test_names_are_quoted_as_identifiers(postgres_url: str) -> None:
    with open_store(postgres_url) as store:
        store.define_view("select.from-where", aggregator=Count())   # every view name is data, never SQL
        with store.transaction() as txn:
            txn.merge_rows("select.from-where", [("'; DROP TABLE fluvial_views; --", None, 2)])
            txn.save_rows("Order", ["select", "From"], [("a", 1), ("b", 2)])
        assert [r.value for r in store.query("select.from-where")] == [2]
        assert store.tables() == ["Order"]
        assert store.table_rows("Order") == [{"select": "a", "From": 1}, {"select": "b", "From": 2}]
        for table in ['x"; DROP TABLE fluvial_views; --', "fluvial_views", "pg_class", "a b"]:
            with pytest.raises(ConfigError, match="invalid table name"), store.transaction() as txn:
                txn.save_rows(table, ["k"], [(1,)])
        with pytest.raises(ConfigError, match="invalid column name"), store.transaction() as txn:
            txn.save_rows("t", ['k"'], [(1,)])
        with pytest.raises(StoreError, match="cannot be null"), store.transaction() as txn:
            txn.save_rows("t", ["k", "v"], [(None, 1)])
        with pytest.raises(StoreError, match="byte string"), store.transaction() as txn:
            txn.save_rows("t", ["k", "v"], [("a", b"\x00")])
        assert store.tables() == ["Order"]


def test_the_schema_is_created_once_and_checked(postgres_url: str) -> None:
    first, second = open_store(postgres_url), open_store(postgres_url)
    try:
        first.define_view("hits", aggregator=Count())
        assert [v.name for v in second.views()] == ["hits"]
    finally:
        first.close()
        second.close()
