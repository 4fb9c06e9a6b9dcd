"""The embedded store (and the PostgreSQL and Cassandra stores) implements the whole store protocol
(serving/base.py), with the same parameters: the protocol is what a new backend implements (docs/architecture.md)."""

from __future__ import annotations

import inspect

import pytest

from fluvial.log.base import Log
from fluvial.log.local import LocalLog
from fluvial.serving.base import Txn, ViewStore
from fluvial.serving.cassandra import CassandraStore, CassandraTxn
from fluvial.serving.postgres import PostgresStore, PostgresTxn
from fluvial.serving.sqlite import SqliteStore, SqliteTxn
from fluvial.state.base import CheckpointTxn, StateStore


def members(protocol: type) -> list[str]:
    """The methods of ``protocol`` and of the protocols it extends (ViewStore: StateStore's too)."""
    return sorted({name for base in protocol.__mro__ if base.__module__.startswith("fluvial.")
                   for name, value in vars(base).items() if callable(value) and not name.startswith("_")})


@pytest.mark.parametrize("protocol, cls", [(ViewStore, SqliteStore), (Txn, SqliteTxn), (Log, LocalLog),
                                           (StateStore, SqliteStore), (CheckpointTxn, SqliteTxn),
                                           (ViewStore, PostgresStore), (Txn, PostgresTxn),
                                           (StateStore, PostgresStore), (CheckpointTxn, PostgresTxn),
                                           (ViewStore, CassandraStore), (Txn, CassandraTxn),
                                           (StateStore, CassandraStore), (CheckpointTxn, CassandraTxn)])
def test_the_embedded_backend_has_every_method_of_its_protocol(protocol: type, cls: type) -> None:
    missing, different = [], []
    for name in members(protocol):
        if not hasattr(cls, name):
            missing.append(name)
            continue
        want = inspect.signature(getattr(protocol, name)).parameters
        got = inspect.signature(getattr(cls, name)).parameters
        for param, spec in want.items():
            if spec.kind is inspect.Parameter.VAR_KEYWORD:
                continue
            if param not in got and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in got.values()):
                different.append(f"{name}({param})")
    assert not missing, f"{cls.__name__} lacks {missing} of {protocol.__name__}"
    assert not different, f"{cls.__name__} lacks parameters {different} of {protocol.__name__}"
    assert len(members(protocol)) >= 5


def test_the_view_store_protocol_includes_the_state_store_protocol() -> None:
    assert set(members(StateStore)) <= set(members(ViewStore))
    assert set(members(CheckpointTxn)) <= set(members(Txn))
    assert {"claim", "renew", "release", "holder", "exclusive", "transaction"} <= set(members(StateStore))
    assert {"get_checkpoint", "set_checkpoint", "delete_checkpoint", "fence"} <= set(members(CheckpointTxn))
