"""Bounded resources of a real ``fluvial serve`` on loopback (``[limits]``, docs/guarantees.md "Load and limits").

* 40 concurrent 5 MiB bodies against a 24 MiB pending budget: the server's resident memory
  stays under baseline + 6 x the budget + a margin, the bodies beyond the budget get 429
  with ``Retry-After`` before they are read, and every acknowledged event is in the log
  exactly once (nothing else is); a chunked body is counted chunk by chunk and cut at the
  budget;
* overload (clients posting more than the server takes, for 8 s): the excess gets 429/503
  with ``Retry-After``, memory stays bounded, the log holds exactly the acknowledged events;
* slow-header and slow-body connections are closed after their timeouts (a slow body gets
  408) while a normal client keeps posting; idle connections beyond ``max_connections``
  are closed to make room, busy ones make a new connection get 503 at once; the soft
  open-file limit was raised to the hard one;
* a device token over its events per second gets 429 + ``Retry-After``, another device is
  unaffected; a device sending bad bodies beyond its dead-letter quota gets 429 and the
  dead-letter log stops growing (its size on disk is measured).

Every test prints its seed (``FLUVIAL_TEST_SEED=<n>`` reproduces it). No timing is asserted:
loops are bounded, and what is checked is what the server answered and stored.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import math
import os
import random
import resource
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import msgspec
import pytest

import fluvial
from fluvial.server.auth import TokenStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_proc import ServerProcess

pytestmark = pytest.mark.services

T0 = 1_700_000_000_000
MIB = 1 << 20
MEMORY_FACTOR = 6
"""docs/guarantees.md: ingest holds at most about 6 x max_pending_bytes above the server's baseline."""
MEMORY_MARGIN = 48 * MIB
"""For what else moves meanwhile (allocator slack, the log writer's buffers, the test's own requests)."""
JSON = "application/json"


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))
    print(f"seed {value} (FLUVIAL_TEST_SEED={value} reproduces it)")
    return value


@contextmanager
def running(srv: ServerProcess) -> Iterator[ServerProcess]:
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# -- helpers -----------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int                 # 0: no answer (the connection failed)
    headers: dict[str, str]
    body: dict[str, Any]


def post(port: int, body: bytes, *, token: str | None = None, conn: http.client.HTTPConnection | None = None,
         timeout: float = 60) -> Answer:
    """POST /v1/events (a new connection unless ``conn``)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": JSON, **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        conn.request("POST", "/v1/events", body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                      json.loads(raw) if raw else {})
    except (OSError, http.client.HTTPException):
        conn.close()
        return Answer(0, {}, {})
    finally:
        if own:
            conn.close()


def reading(device: str, seq: int, **extra: Any) -> dict[str, Any]:
    return {"device": device, "kind": "reading", "ts": T0 + seq, "seq": seq,
            "payload": {"kind": "temp", "value": float(seq % 89), **extra}}


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


class RssWatch:
    """The highest resident memory of a process while the block runs (sampled every 10 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self._stop.wait(0.01)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def baseline_rss(srv: ServerProcess) -> int:
    """The server's resident memory after a first small request (imports done, log open)."""
    assert srv.post_events([reading("warm-up", 0)])[0] == 200
    time.sleep(0.3)
    return rss_bytes(srv.proc.pid)  # type: ignore[union-attr]


def stored_pairs(data_dir: Path) -> Counter[tuple[str, int]]:
    """``(device, seq)`` of every event in the log, read back in chunks."""
    pairs: Counter[tuple[str, int]] = Counter()
    with fluvial.open(data_dir) as ws:
        log = ws.log
        for p, end in enumerate(log.end_offsets()):
            offset = 0
            while offset < end:
                batch = log.read(p, offset, max_records=100_000)
                pairs.update((e.device, e.seq) for e in batch.events)
                offset += len(batch.events)
    return pairs


def assert_exactly_acknowledged(data_dir: Path, acked: set[tuple[str, int]],
                                unknown: set[tuple[str, int]] = frozenset()) -> None:  # type: ignore[assignment]
    """The log holds every acknowledged event once, and nothing that was refused.

    ``unknown``: events whose request got no answer (the connection failed): they may be stored.
    """
    stored = stored_pairs(data_dir)
    stored.pop(("warm-up", 0), None)
    twice = [pair for pair, n in stored.items() if n > 1]
    assert twice == [], f"{len(twice)} events stored twice, e.g. {twice[:3]}"
    missing = acked - set(stored)
    assert not missing, f"{len(missing)} acknowledged events missing, e.g. {sorted(missing)[:3]}"
    extra = set(stored) - acked - unknown
    assert not extra, f"{len(extra)} events stored that were refused, e.g. {sorted(extra)[:3]}"


def retry_after(answer: Answer) -> int:
    value = answer.headers.get("retry-after")
    assert value is not None and value.isdigit() and int(value) >= 1, answer
    return int(value)


# -- (a) large bodies within the pending budget -------------------------------------------------------

BUDGET = 24 * MIB


def big_body(rng: random.Random, device: str, target: int) -> tuple[bytes, list[tuple[str, int]]]:
    """About ``target`` bytes of valid readings with 1 KB notes; their (device, seq)."""
    note = "".join(rng.choice("abcdefghij") for _ in range(1000))
    n = target // (len(note) + 110)
    events = [reading(device, seq, note=note[seq % 50:]) for seq in range(n)]
    return msgspec.json.encode(events), [(device, seq) for seq in range(n)]


def test_concurrent_large_bodies_stay_within_the_pending_budget(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    bodies = [big_body(rng, f"big-{i}", 5 * MIB) for i in range(40)]
    srv = ServerProcess(tmp_path, config=f"[server]\nmax_pending_bytes = {BUDGET}\n")
    answers: list[Answer] = [Answer(0, {}, {})] * len(bodies)
    with running(srv):
        base = baseline_rss(srv)
        start = threading.Barrier(len(bodies))

        def send(i: int) -> None:
            start.wait()
            answers[i] = post(srv.port, bodies[i][0], timeout=120)

        with RssWatch(srv.proc.pid) as rss:  # type: ignore[union-attr]
            threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        limits = srv.get("/v1/metrics")["limits"]
    statuses = Counter(a.status for a in answers)
    print(f"answers {dict(statuses)}, RSS baseline {base / MIB:.0f} MiB, peak {rss.peak / MIB:.0f} MiB, "
          f"bound {(base + MEMORY_FACTOR * BUDGET + MEMORY_MARGIN) / MIB:.0f} MiB")
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[200] >= 1 and statuses[429] >= 1, statuses  # 40 x 5 MiB do not fit 24 MiB at once
    for answer, (_, pairs) in zip(answers, bodies):
        if answer.status == 200:
            assert answer.body == {"accepted": len(pairs), "duplicates": 0, "rejected": []}, answer.body
        else:
            retry_after(answer)
            assert "max_pending_bytes" in answer.body["error"], answer.body
    assert rss.peak <= base + MEMORY_FACTOR * BUDGET + MEMORY_MARGIN, "memory grew past the bound"
    assert limits["pending_bytes"] == 0 and limits["shed"] == {"pending_bytes": statuses[429]}, limits
    acked = {pair for answer, (_, pairs) in zip(answers, bodies) if answer.status == 200 for pair in pairs}
    assert_exactly_acknowledged(srv.data_dir, acked)


def chunked_request(port: int, first: bytes) -> socket.socket:
    """A chunked POST /v1/events whose headers and ``first`` chunk are sent; the rest is up to the caller."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n" + chunk(first))
    return sock


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def read_answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the answer on a raw socket (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        assert got, data
        data += got
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        got = sock.recv(65536)
        assert got
        rest += got
    return int(head.split()[1]), json.loads(rest[:length])


def test_a_chunked_body_is_counted_as_it_streams_and_stopped_at_the_budget(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    budget = 1 * MIB
    srv = ServerProcess(tmp_path, config=f"[server]\nmax_body_bytes = {budget}\nmax_pending_bytes = {budget}\n")
    first, first_pairs = big_body(rng, "first", 700_000)
    second, _ = big_body(rng, "second", 700_000)
    with running(srv):
        a = chunked_request(srv.port, first[:600_000])  # holds 600 kB of the budget, not finished
        time.sleep(0.3)
        b = chunked_request(srv.port, second[:300_000])
        status_b, body_b = 0, {}
        for i in range(300_000, len(second), 50_000):  # within the budget at first, then over it
            try:
                b.sendall(chunk(second[i:i + 50_000]))
            except OSError:
                break
            b.settimeout(0.2)
            try:
                status_b, body_b = read_answer(b)
                break
            except TimeoutError:
                continue
            finally:
                b.settimeout(30)
        a.sendall(chunk(first[600_000:]) + b"0\r\n\r\n")
        status_a, body_a = read_answer(a)
        a.close()
        b.close()
        limits = srv.get("/v1/metrics")["limits"]
    assert status_b == 429 and "max_pending_bytes" in body_b["error"] and " after " in body_b["error"], body_b
    assert status_a == 200 and body_a["accepted"] == len(first_pairs), body_a
    assert limits["shed"] == {"pending_bytes": 1} and limits["pending_bytes"] == 0, limits
    assert_exactly_acknowledged(srv.data_dir, set(first_pairs))


# -- (b) overload ----------------------------------------------------------------------------------------


@dataclass
class Poster:
    """Posts batches of its readings on one keep-alive connection; retries a batch until it is acknowledged."""

    name: str
    batch: int
    acked: set[tuple[str, int]] = field(default_factory=set)
    unknown: set[tuple[str, int]] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    refusals: list[Answer] = field(default_factory=list)
    next_seq: int = 0
    error: BaseException | None = None

    def run(self, port: int, stop: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while time.monotonic() < stop:
                self.post_one(conn, port, stop)
        except BaseException as exc:
            self.error = exc
        finally:
            conn.close()

    def post_one(self, conn: http.client.HTTPConnection, port: int, stop: float) -> None:
        pairs = [(self.name, s) for s in range(self.next_seq, self.next_seq + self.batch)]
        self.next_seq += self.batch
        body = msgspec.json.encode([reading(d, s) for d, s in pairs])
        for _ in range(400):  # the same (device, seq) until acknowledged; bounded
            answer = post(port, body, conn=conn)
            self.statuses[answer.status] += 1
            if answer.status == 200:
                assert answer.body["accepted"] + answer.body["duplicates"] == len(pairs), answer.body
                self.acked.update(pairs)
                return
            if answer.status == 0:
                conn.close()
                self.unknown.update(pairs)  # it may have been stored before the connection failed
            else:
                assert answer.status in (429, 503), answer
                retry_after(answer)
                if len(self.refusals) < 3:
                    self.refusals.append(answer)
            time.sleep(0.1)  # sooner than told: keep the pressure on
        self.unknown.update(pairs)


def test_overload_is_shed_with_retry_after_and_memory_stays_bounded(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    budget = 8 * MIB
    srv = ServerProcess(tmp_path, config=f"[server]\nmax_pending_bytes = {budget}\n[limits]\nmax_queue_wait_ms = 250\n")
    posters = [Poster(f"dev-{k}-{rng.randrange(1000)}", batch=rng.choice([1000, 2000, 3000])) for k in range(64)]
    with running(srv):
        base = baseline_rss(srv)
        stop = time.monotonic() + 8.0
        with RssWatch(srv.proc.pid) as rss:  # type: ignore[union-attr]
            threads = [threading.Thread(target=p.run, args=(srv.port, stop)) for p in posters]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        metrics = srv.get("/v1/metrics")
        prometheus = srv.request("GET", "/metrics")[1].decode()
    statuses = sum((p.statuses for p in posters), Counter())
    shed = metrics["limits"]["shed"]
    print(f"answers {dict(statuses)}, shed {shed}, RSS baseline {base / MIB:.0f} MiB, peak {rss.peak / MIB:.0f} MiB")
    assert [p.error for p in posters if p.error] == []
    assert statuses[200] > 0 and statuses[429] + statuses[503] > 0, statuses  # the excess was refused
    refused = statuses[429] + statuses[503]  # each one counted by its reason (unless its answer was lost)
    assert set(shed) <= {"pending_bytes", "queue_wait", "queue_events"}, shed
    assert refused <= sum(shed.values()) <= refused + statuses[0], (shed, statuses)
    assert rss.peak <= base + MEMORY_FACTOR * budget + MEMORY_MARGIN, "memory grew past the bound"
    for reason, n in shed.items():
        assert f'fluvial_shed_total{{reason="{reason}"}} {n}' in prometheus
    assert 'fluvial_limit{limit="max_queue_wait_ms"} 250' in prometheus
    acked = set().union(*(p.acked for p in posters))
    assert_exactly_acknowledged(srv.data_dir, acked, set().union(*(p.unknown for p in posters)))


# -- (c) connections: timeouts and the limit --------------------------------------------------------------


def open_sockets(port: int, n: int, first: bytes = b"") -> list[socket.socket]:
    out = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if first:
            sock.sendall(first)
        sock.setblocking(False)
        out.append(sock)
    return out


def closed_by_server(sock: socket.socket, received: bytearray | None = None) -> bytes | None:
    """What the server sent before closing the connection; None while it is open.

    ``received`` keeps what came so far across calls (an answer may come before the close).
    """
    data = bytearray() if received is None else received
    while True:
        try:
            got = sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError:
            return bytes(data)
        if not got:
            return bytes(data)
        data += got


SLOW_HEADER = b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
SLOW_BODY = SLOW_HEADER + b"Content-Length: 100000\r\n\r\n["


def test_slow_headers_and_bodies_are_cut_while_normal_requests_succeed(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, config="[limits]\nheader_timeout_s = 1\nbody_timeout_s = 1.5\nkeep_alive_s = 1\n"
                                         "max_connections = 1000\n")
    with running(srv):
        slow_headers = open_sockets(srv.port, 150, SLOW_HEADER)
        slow_bodies = open_sockets(srv.port, 150, SLOW_BODY)
        ended: dict[int, bytes] = {}
        received = [bytearray() for _ in range(300)]
        normal: Counter[int] = Counter()
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        for step in range(150):  # trickle one byte per socket per step; bounded
            if len(ended) == 300:
                break
            for i, sock in enumerate([*slow_headers, *slow_bodies]):
                if i in ended:
                    continue
                if not received[i]:  # (nothing more once answered)
                    with contextlib.suppress(OSError):  # (closed by now)
                        sock.send(b"X" if i < 150 else b" ")
                seen = closed_by_server(sock, received[i])
                if seen is not None:
                    ended[i] = seen
            normal[post(srv.port, msgspec.json.encode([reading("normal", step)]), conn=conn).status] += 1
            time.sleep(0.1)
        conn.close()
        connections = srv.get("/v1/metrics")["limits"]["connections"]
        for sock in [*slow_headers, *slow_bodies]:
            sock.close()
    print(f"normal answers {dict(normal)}, connections {connections}")
    assert len(ended) == 300, f"{300 - len(ended)} slow connections were never closed"
    assert set(normal) == {200}, normal
    assert all(ended[i] == b"" for i in range(150)), "a slow header is cut without an answer"
    assert all(ended[i].startswith(b"HTTP/1.1 408 ") for i in range(150, 300)), {ended[i][:40] for i in ended}
    assert connections["closed"]["header_timeout"] >= 150, connections


def test_connections_beyond_the_limit_do_not_stop_normal_requests(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, config="[limits]\nmax_connections = 64\nheader_timeout_s = 30\nbody_timeout_s = 2\n")
    with running(srv):
        idle = open_sockets(srv.port, 300)  # connect, send nothing
        time.sleep(0.3)
        normal = [srv.post_events([reading("normal", seq)])[0] for seq in range(20)]
        evicted = sum(closed_by_server(s) is not None for s in idle)
        busy = open_sockets(srv.port, 70, SLOW_BODY)  # requests in progress: nothing to evict any more
        time.sleep(0.3)
        status, raw = srv.request("GET", "/healthz")
        refused = (status, raw)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        refused_retry = response.getheader("Retry-After")
        response.read()
        conn.close()
        after = []
        for _ in range(100):  # once the slow bodies are cut, new connections are served again; bounded
            after.append(srv.request("GET", "/healthz")[0])
            if after[-1] == 200:
                break
            time.sleep(0.1)
        connections = srv.get("/v1/metrics")["limits"]["connections"]
        for sock in [*idle, *busy]:
            sock.close()
    print(f"evicted {evicted} of 300 idle, connections {connections}")
    assert normal == [200] * 20
    assert evicted >= 300 - 64, evicted
    assert connections["closed"]["evicted_idle"] >= 300 - 64
    assert refused[0] == 503 and json.loads(refused[1])["status"] == 503 and refused_retry == "1", refused
    assert after[-1] == 200, after
    assert connections["refused"] >= 2
    assert connections["open_files_limit"] == resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # raised to the hard one
    assert connections["max"] == 64


# -- (d) per-device rates and dead-letter quotas -------------------------------------------------------------


JUNK = 20_000
"""Bytes of each unreadable body."""


def dead_letter_bytes(data_dir: Path) -> int:
    return sum(f.stat().st_size for f in (data_dir / "dead-letters").rglob("*") if f.is_file())


def test_device_rates_and_dead_letter_quotas(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    rate, burst, quota = 50, 100, 64 * 1024
    srv = ServerProcess(tmp_path, extra=["--auth", "tokens"], config=(
        f"[limits]\ndevice_events_per_s = {rate}\ndevice_events_burst = {burst}\ndead_letter_bytes = {quota}\n"
        "dead_letter_window_s = 3600\n"))
    srv.data_dir.mkdir(parents=True)
    with TokenStore(srv.data_dir / "tokens.db") as store:
        tokens = {name: store.create("device", device=name)[0] for name in ("flooder", "calm", "broken")}
        admin = store.create("admin")[0]
    with running(srv):
        # the flooder: bodies of 60 events back to back
        flood: list[Answer] = []
        acked: set[tuple[str, int]] = set()
        started = time.monotonic()
        for k in range(12):
            events = [reading("flooder", 60 * k + j) for j in range(60)]
            flood.append(post(srv.port, msgspec.json.encode(events), token=tokens["flooder"]))
            if flood[-1].status == 200:
                acked.update(("flooder", e["seq"]) for e in events)
        elapsed = time.monotonic() - started
        # meanwhile another device is not held back
        calm = []
        for k in range(5):
            events = [reading("calm", 10 * k + j) for j in range(10)]
            calm.append(post(srv.port, msgspec.json.encode(events), token=tokens["calm"]))
            acked.update(("calm", e["seq"]) for e in events)
        # a device sending bodies that cannot be read, 20 kB each
        sizes, broken = [dead_letter_bytes(srv.data_dir)], []
        for _ in range(10):
            junk = b"[" + "".join(rng.choice("{}:,") for _ in range(JUNK - 1)).encode()
            broken.append(post(srv.port, junk, token=tokens["broken"]))
            sizes.append(dead_letter_bytes(srv.data_dir))
        mixed = post(srv.port, msgspec.json.encode([reading("broken", 1), reading("broken", 2, value="x")]),
                     token=tokens["broken"])
        acked |= {("broken", 1)} if mixed.status == 200 else set()
        all_bad = post(srv.port, msgspec.json.encode([reading("broken", 3, value="x")]), token=tokens["broken"])
        sizes.append(dead_letter_bytes(srv.data_dir))
        limits = srv.get("/v1/metrics", token=admin)["limits"]
        prometheus = srv.request("GET", "/metrics", headers={"Authorization": f"Bearer {admin}"})[1]
    flood_statuses = [a.status for a in flood]
    print(f"flooder {flood_statuses}, calm {[a.status for a in calm]}, broken {[a.status for a in broken]}, "
          f"dead-letter sizes {sizes}")
    # the flooder: let in while it had tokens, then 429 with Retry-After; never more than the bucket allows
    assert flood_statuses[0] == 200 and set(flood_statuses) == {200, 429}, flood_statuses
    for answer in flood:
        if answer.status == 429:
            retry_after(answer)
            assert "device_events_per_s" in answer.body["error"] and "flooder" in answer.body["error"], answer.body
    assert 60 * flood_statuses.count(200) <= burst + rate * elapsed + 60
    assert [a.status for a in calm] == [200] * 5
    # bad bodies: kept until the quota is used, then refused with 429, counted, not kept
    statuses = [a.status for a in broken]
    first_refused = math.ceil(quota / JUNK)  # kept while less than the quota was used
    assert statuses == [400] * first_refused + [429] * (10 - first_refused), statuses
    grew = list(itertools.pairwise(sizes[:first_refused + 1]))
    assert all(a < b for a, b in grew), f"each kept body grew the dead-letter log: {sizes}"
    assert len(set(sizes[first_refused:])) == 1, f"the dead-letter log grew past the quota: {sizes}"
    for answer in broken[first_refused:]:
        retry_after(answer)
        assert "NOT kept in the dead-letter log" in answer.body["error"], answer.body
    assert mixed.status == 200 and mixed.body["accepted"] == 1 and "NOT kept" in mixed.body["warning"], mixed.body
    assert all_bad.status == 429 and all_bad.body["rejected"][0]["index"] == 0, all_bad.body
    assert limits["shed"]["device_events"] == flood_statuses.count(429)
    assert limits["shed"]["dead_letter_quota"] == statuses.count(429) + 1
    assert limits["dead_letters_refused"] == statuses.count(429) + 2
    assert f'fluvial_shed_total{{reason="device_events"}} {flood_statuses.count(429)}'.encode() in prometheus
    assert_exactly_acknowledged(srv.data_dir, acked)


def test_with_auth_off_the_device_limits_apply_per_client_address(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, config="[limits]\nper_address = true\ndevice_events_per_s = 1\n"
                                         "device_events_burst = 20\n")
    with running(srv):
        answers = [post(srv.port, msgspec.json.encode([reading("a", 30 * k + j) for j in range(30)]))
                   for k in range(3)]
    assert [a.status for a in answers] == [200, 429, 429], [(a.status, a.body) for a in answers]
    assert "address 127.0.0.1" in answers[1].body["error"]
