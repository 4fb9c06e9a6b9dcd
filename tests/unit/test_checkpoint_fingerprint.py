"""A changed flow never silently reuses state that does not fit it: the checkpoint's
fingerprint covers window shapes, aggregators, lateness and operator parameters."""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import fluvial as fl
from fluvial.aggregators import Count, Sum
from fluvial.engine.plan import compile_plan
from fluvial.errors import ConfigError
from fluvial.state.checkpoint import CHECKPOINT_FORMAT, Checkpoint, checkpoint_id
from fluvial.state.operators import ExecState
from fluvial.windows.shapes import Sliding, Tumbling


def flow(*, window: object = None, agg: object = None, lateness: int = 5_000, kind: str = "reading",
         f: Callable[[fl.Event], object] = lambda e: e.payload["v"], view: str = "totals") -> fl.Pipeline:
    p = fl.Pipeline("meaning")
    values = p.from_log(kind).map(lambda e: (e.device, f(e)))
    shape = window or Tumbling(length_ms=60_000)
    values.window(shape, allowed_lateness_ms=lateness).aggregate_by_key(agg or Sum()).to_view(view)
    return p


def events(n: int) -> list[fl.Event]:
    return [fl.Event(device=f"d{i % 3}", kind="reading", ts=1_000 * i, seq=i + 1, payload={"v": i})
            for i in range(n)]


def run(directory: Path, pipeline: fl.Pipeline) -> None:
    with fl.open(directory) as ws:
        ws.stream_runner(fl.StreamConfig(batch_interval_ms=0)).run(pipeline, until_caught_up=True)


@pytest.fixture()
def directory(tmp_path: Path) -> Path:
    with fl.open(tmp_path / "d", writer=True, log_config=fl.LogConfig(partitions=2, fsync="never")) as ws:
        ws.log.append(events(50))
    return tmp_path / "d"


@pytest.mark.parametrize("change, what", [
    ({"window": Sliding(length_ms=60_000, slide_ms=10_000)}, "sliding"),
    ({"window": Tumbling(length_ms=30_000)}, "30000"),
    ({"agg": Count()}, "count"),
    ({"lateness": 60_000}, "60000"),
    ({"kind": "status"}, "status"),
])
def test_a_change_of_meaning_is_refused_naming_it(directory: Path, change: dict, what: str) -> None:
    run(directory, flow())
    with pytest.raises(ConfigError) as refused:   # (a new view: the view's own guard is not what fires)
        run(directory, flow(**change, view="other"))
    message = str(refused.value)
    assert "changed since its checkpoint" in message and "fluvial reprocess" in message
    assert what in message, message


def test_a_fix_inside_a_function_keeps_the_state(directory: Path) -> None:
    run(directory, flow())
    with fl.open(directory, writer=True) as ws:
        ws.log.append([fl.Event(device="d0", kind="reading", ts=200_000, seq=1_000, payload={"v": 7})])
    run(directory, flow(f=lambda e: int(e.payload["v"])))   # same meaning, other code: goes on
    with fl.open(directory) as ws:
        total = sum(r.value for r in ws.store.query("totals"))
    assert total == sum(range(50)) + 7


def test_a_checkpoint_of_the_older_format_is_accepted_and_upgraded(directory: Path) -> None:
    """Checkpoints written before the fingerprint covered parameters (operators and edges only)."""
    run(directory, flow())
    plan = compile_plan(flow())
    with fl.open(directory, writer=True) as ws:
        with ws.store.transaction() as txn:
            cp = Checkpoint.loads(txn.get_checkpoint(checkpoint_id("meaning")))
            cp.fingerprint = plan.legacy_fingerprint
            del cp.__dict__["shape"]   # as unpickled from the older format
            txn.set_checkpoint(checkpoint_id("meaning"), pickle.dumps((CHECKPOINT_FORMAT, cp)))
        ws.log.append([fl.Event(device="d1", kind="reading", ts=300_000, seq=2_000, payload={"v": 1})])
    run(directory, flow())   # accepted; its next commit writes the new fingerprint
    with fl.open(directory) as ws:
        with ws.store.transaction() as txn:
            upgraded = Checkpoint.loads(txn.get_checkpoint(checkpoint_id("meaning")))
        total = sum(r.value for r in ws.store.query("totals"))
    assert upgraded.fingerprint == plan.fingerprint != plan.legacy_fingerprint
    assert upgraded.shape == plan.shape
    assert total == sum(range(50)) + 1
    with pytest.raises(ConfigError, match="changed since"):   # and now a change is named
        run(directory, flow(agg=Count(), view="other"))


@contextmanager
def pickled_as_before(*classes: type) -> Iterator[None]:
    """Pickle ``classes`` under the module paths earlier releases had (engine/checkpoint.py and
    engine/execute.py), as a data directory written by them holds them."""
    old = {"Checkpoint": "fluvial.engine.checkpoint", "ExecState": "fluvial.engine.execute"}
    saved = {}
    for cls in classes:
        module = types.ModuleType(old[cls.__name__])
        setattr(module, cls.__name__, cls)
        saved[cls] = cls.__module__, sys.modules.get(module.__name__)
        sys.modules[module.__name__], cls.__module__ = module, module.__name__
    try:
        yield
    finally:
        for cls, (home, before) in saved.items():
            name = old[cls.__name__]
            cls.__module__ = home
            if before is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = before


def test_a_checkpoint_written_before_it_moved_to_state_loads_and_goes_on(directory: Path) -> None:
    run(directory, flow())
    with fl.open(directory, writer=True) as ws:
        with ws.store.transaction() as txn:
            cp = Checkpoint.loads(txn.get_checkpoint(checkpoint_id("meaning")))
            with pickled_as_before(Checkpoint, ExecState):
                blob = cp.dumps()
            assert b"fluvial.engine.checkpoint" in blob and b"fluvial.engine.execute" in blob
            txn.set_checkpoint(checkpoint_id("meaning"), blob)
        ws.log.append([fl.Event(device="d1", kind="reading", ts=300_000, seq=2_000, payload={"v": 5})])
    loaded = Checkpoint.loads(blob)
    assert type(loaded) is Checkpoint and type(loaded.state) is ExecState
    assert loaded.offsets == cp.offsets and loaded.state == cp.state
    run(directory, flow())   # the moved checkpoint goes on where it was
    with fl.open(directory) as ws:
        total = sum(r.value for r in ws.store.query("totals"))
    assert total == sum(range(50)) + 5


def test_the_fingerprint_ignores_what_a_print_shows() -> None:
    def printed(n: int) -> fl.Pipeline:
        p = fl.Pipeline("shown")
        p.from_log("reading").map(lambda e: e.device).print(n)
        return p

    assert compile_plan(printed(10)).fingerprint == compile_plan(printed(3)).fingerprint
    assert compile_plan(flow()).fingerprint != compile_plan(flow(lateness=1)).fingerprint
