"""The edge queue (fluvial.edge.queue): FIFO across reopens, torn tails, damage, the bound.

The random test checks the queue against a model (a plain list of what was put and not yet
acknowledged) over random puts, peeks, acks, reopens and crashes (a reopen after a tail torn
mid-record), with a printed seed.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fluvial.edge.queue import DiskQueue, QueueFull


def records(n: int, start: int = 0, size: int = 40) -> list[bytes]:
    return [f"{i:08d}".encode() + b"x" * (size - 8) for i in range(start, start + n)]


def drain(q: DiskQueue) -> list[bytes]:
    got, position = q.peek(10**9)
    q.ack(position)
    return got


def test_fifo_across_reopens_and_acks(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, max_bytes=64 << 10, segment_bytes=1024)
    q.put(records(100))
    first, position = q.peek(30)
    assert first == records(30)
    q.ack(position, high=29)
    q = DiskQueue(tmp_path, max_bytes=64 << 10, segment_bytes=1024)   # a restart
    assert q.high == 29 and q.stats.records == 70
    q.put(records(10, start=100))
    assert drain(q) == records(80, start=30)
    assert q.stats.records == 0 and q.peek(5)[0] == []
    assert len(list(tmp_path.glob("*.seg"))) == 1   # acknowledged segments are deleted
    assert q.last() == records(1, start=109)[0]


def test_a_torn_tail_is_cut_and_loses_nothing_put(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, max_bytes=64 << 10, segment_bytes=1024)
    q.put(records(50))
    tail = max(tmp_path.glob("*.seg"))
    size = tail.stat().st_size
    with open(tail, "ab") as f:   # a put that a crash cut short: header and half its bytes
        f.write(b"\x28\x00\x00\x00\x01\x02\x03\x04" + b"y" * 20)
    q = DiskQueue(tmp_path, max_bytes=64 << 10, segment_bytes=1024)
    assert tail.stat().st_size == size and q.stats.damaged == 0
    assert drain(q) == records(50)


def test_damage_in_an_earlier_segment_is_counted_and_the_rest_is_kept(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, max_bytes=64 << 10, segment_bytes=1024)
    q.put(records(30))
    q.put(records(30, start=30))
    segments = sorted(tmp_path.glob("*.seg"))
    assert len(segments) >= 2
    first = bytearray(segments[0].read_bytes())
    first[8 + 48 * 3 + 5] ^= 0xFF   # a flipped bit in the 4th record's bytes
    segments[0].write_bytes(bytes(first))
    q = DiskQueue(tmp_path, max_bytes=64 << 10, segment_bytes=1024)
    assert q.stats.damaged == 1
    got = drain(q)
    assert got[:3] == records(3)   # before the damage
    later = sorted(tmp_path.glob("*.seg"))   # the segments after the first are whole
    assert got[-30:] == records(30, start=30) and later


def test_refuse_at_the_bound(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, max_bytes=8 << 10, segment_bytes=1024)
    put = 0
    with pytest.raises(QueueFull, match="refused"):
        while True:
            q.put(records(10, start=put))
            put += 10
    assert q.stats.refused == 10 and sum(p.stat().st_size for p in tmp_path.glob("*.seg")) <= 8 << 10
    assert drain(q) == records(put)   # everything put before the refusal, nothing of it
    q.put(records(10, start=put))     # room again once sent
    assert drain(q) == records(10, start=put)


def test_drop_oldest_at_the_bound_keeps_the_newest_and_counts(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, max_bytes=8 << 10, on_full="drop_oldest", segment_bytes=1024)
    for i in range(0, 1000, 10):
        q.put(records(10, start=i))
        assert sum(p.stat().st_size for p in tmp_path.glob("*.seg")) <= 8 << 10
    got = drain(q)
    assert q.stats.dropped + len(got) == 1000 and q.stats.dropped > 0
    assert got == records(len(got), start=1000 - len(got))   # a suffix: the newest, in order


def test_bad_arguments_and_a_damaged_head_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_full"):
        DiskQueue(tmp_path, max_bytes=1 << 20, on_full="block")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fsync"):
        DiskQueue(tmp_path, max_bytes=1 << 20, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two segments"):
        DiskQueue(tmp_path, max_bytes=1000, segment_bytes=1024)
    q = DiskQueue(tmp_path, max_bytes=1 << 20)
    with pytest.raises(QueueFull, match="at once"):
        q.put([b"z" * (1 << 20)])
    q.put(records(3))
    q.ack(q.peek(1)[1])
    (tmp_path / "head").write_bytes(b"garbage")
    with pytest.raises(OSError, match="remove it"):
        DiskQueue(tmp_path, max_bytes=1 << 20)


def test_random_operations_match_a_model(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    rnd = random.Random(seed)
    for round_ in range(4):
        directory = tmp_path / f"q{round_}"
        open_q = lambda: DiskQueue(directory, max_bytes=1 << 30, segment_bytes=rnd.choice([64, 512, 4096]))  # noqa: E731
        q, model, n = open_q(), [], 0
        for _ in range(300):
            op = rnd.random()
            if op < 0.45:
                batch = [bytes([rnd.randrange(256)]) * rnd.randrange(0, 200) + f"#{n + i}".encode()
                         for i in range(rnd.randrange(1, 8))]
                n += len(batch)
                q.put(batch)
                model.extend(batch)
            elif op < 0.8:
                k = rnd.randrange(0, 12)
                got, position = q.peek(k)
                assert got == model[:k], seed
                if rnd.random() < 0.7:
                    q.ack(position)
                    del model[:len(got)]
            elif op < 0.9:
                q = open_q()   # a clean restart
            else:   # a crash tearing a put in the middle of its bytes: the torn part goes
                segments = sorted(directory.glob("*.seg"))
                if segments:
                    with open(segments[-1], "ab") as f:
                        f.write(b"\xff\x00\x00\x00" + bytes(rnd.randrange(0, 30)))
                q = open_q()
            assert q.stats.records == len(model), seed
        got, _ = q.peek(10**9)
        assert got == model, seed


def test_the_edge_package_needs_only_the_standard_library_and_msgspec() -> None:
    """Imported in a fresh interpreter with the ``fluvial`` package created empty (its
    ``__init__``, the server's API, not run): nothing but the standard library and msgspec."""
    import json
    import subprocess
    import sys

    import fluvial

    code = f"""
import json, sys, types
pkg = types.ModuleType("fluvial"); pkg.__path__ = [{str(Path(fluvial.__file__).parent)!r}]
sys.modules["fluvial"] = pkg
before = set(sys.modules)
import fluvial.edge
print(json.dumps(sorted({{m.split(".")[0] for m in set(sys.modules) - before}} - set(sys.stdlib_module_names))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert set(json.loads(out.stdout)) <= {"fluvial", "msgspec", "typing_extensions"}, out.stdout  # (msgspec's)


def test_the_edge_sdk_works_in_a_virtualenv_with_msgspec_alone(tmp_path: Path) -> None:
    """A device's environment: a new virtualenv (no site packages) holding only msgspec (the
    installed one, linked in: no network), fluvial's sources on the path. ``import fluvial.edge``
    works, and a client records and tries to send with no server there."""
    import os
    import subprocess
    import venv

    import msgspec

    import fluvial

    venv.EnvBuilder(with_pip=False).create(tmp_path / "venv")
    python = tmp_path / "venv" / "bin" / "python"
    only = tmp_path / "only-msgspec"
    only.mkdir()
    (only / "msgspec").symlink_to(Path(msgspec.__file__).parent, target_is_directory=True)
    code = """
import sys
from fluvial.edge import EdgeClient
client = EdgeClient("http://127.0.0.1:9", "d-1", sys.argv[1], timeout_s=0.5)
client.record("reading", {"kind": "t", "value": 1.5})
print(client.flush(deadline_s=0.3), client.pending, sorted(m for m in sys.modules if m.startswith("fluvial")))
"""
    env = {"PATH": os.environ.get("PATH", ""),
           "PYTHONPATH": os.pathsep.join([str(Path(fluvial.__file__).parents[1]), str(only)])}
    out = subprocess.run([str(python), "-c", code, str(tmp_path / "queue")], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(" ", 2)[:2] == ["False", "1"], out.stdout
    assert "fluvial.engine" not in out.stdout and "fluvial.flow" not in out.stdout, out.stdout
    check = subprocess.run([str(python), "-c", "import xxhash"], capture_output=True, text=True, env=env)
    assert check.returncode != 0   # (the core's dependencies are not there)
