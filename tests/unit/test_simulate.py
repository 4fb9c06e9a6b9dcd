"""The device simulator: its events (pure, seeded) and its delivery to a stand-in server.

The stand-in (``FakeServer``) implements the ingest contract in a few lines:
decode gzip + JSON / NDJSON / MessagePack, validate, store each (device, seq)
once and answer ``{accepted, duplicates, rejected}``; a ``respond`` hook makes
it throttle, refuse or hang up. Timings are asserted loosely on purpose.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
import pytest

from fluvial.cli.main import main
from fluvial.errors import ConfigError, ValidationError
from fluvial.events import Event, SchemaRegistry
from fluvial.simulate import Simulator, SimulatorReport, Workload

T0 = 1_452_081_600_000  # 2016-01-06T12:00:00Z
REGISTRY = SchemaRegistry.with_builtins()

Respond = Callable[[int, list[dict[str, Any]]], Any]
"""(request index, decoded events) -> None (store and answer 200), "hang-up" (store, close
without an answer) or (status, headers, body) (store nothing)."""


class FakeServer:
    """A tiny ``POST /v1/events`` endpoint that records what it got."""

    def __init__(self, respond: Respond | None = None, port: int = 0) -> None:
        self.respond = respond
        self.lock = threading.Lock()
        self.requests: list[list[dict[str, Any]]] = []   # every body, resends included
        self.times: list[float] = []
        self.headers: list[dict[str, str]] = []
        self.stored: dict[tuple[str, int], dict[str, Any]] = {}
        self.arrivals: list[dict[str, Any]] = []         # first copies, in arrival order
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def store(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        accepted = duplicates = 0
        rejected = []
        with self.lock:
            for i, ev in enumerate(events):
                try:
                    REGISTRY.validate(ev)
                except ValidationError as exc:
                    rejected.append({"index": i, "reason": str(exc)})
                    continue
                key = (ev["device"], ev["seq"])
                if key in self.stored:
                    duplicates += 1
                else:
                    self.stored[key] = ev
                    self.arrivals.append(ev)
                    accepted += 1
        return {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        fake: FakeServer = self.server.fake  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.path == "/v1/events"
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        ctype = self.headers["Content-Type"]
        if ctype == "application/json":
            events = msgspec.json.decode(body)
        elif ctype == "application/x-ndjson":
            events = [msgspec.json.decode(line) for line in body.splitlines() if line]
        else:
            assert ctype == "application/msgpack"
            events = msgspec.msgpack.decode(body)
        with fake.lock:
            index = len(fake.requests)
            fake.requests.append(events)
            fake.times.append(time.monotonic())
            fake.headers.append(dict(self.headers))
        action = fake.respond(index, events) if fake.respond else None
        if action is None or action == "hang-up":
            answer = fake.store(events)
            if action == "hang-up":
                self.close_connection = True
                return
            self._answer(200, {}, json.dumps(answer).encode())
        else:
            self._answer(*action)

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_dict(ev: Event) -> dict[str, Any]:
    return msgspec.structs.asdict(ev)


def assert_seqs_contiguous(events: list[dict[str, Any]] | list[Event]) -> None:
    """Per device, seqs in arrival order are 0, 1, 2, ... (no gap, no reordering)."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for ev in events:
        d = ev if isinstance(ev, dict) else as_dict(ev)
        seqs[d["device"]].append(d["seq"])
    for device, got in seqs.items():
        assert got == list(range(len(got))), device


def late_count(events: list[Event] | list[dict[str, Any]], lateness_ms: int) -> int:
    """Events whose ts is more than lateness_ms behind the largest ts seen before them."""
    late, top = 0, -(2**63)
    for ev in events:
        ts = ev["ts"] if isinstance(ev, dict) else ev.ts
        late += ts < top - lateness_ms
        top = max(top, ts)
    return late


def check_delivery(server: FakeServer, report: SimulatorReport) -> None:
    """What the server stored is exactly what the simulator says was acknowledged."""
    assert sorted(report.acked) == sorted(server.stored)
    assert len(report.acked) == len(set(report.acked))
    assert report.accepted + report.duplicates >= len(server.stored)
    for ev in server.arrivals:
        REGISTRY.validate(ev)
    assert_seqs_contiguous(server.arrivals)


# -- the workload (pure) ------------------------------------------------------------


def test_events_are_valid_envelopes() -> None:
    evs = Workload(devices=30, rate=500, kinds=("reading", "tweet"), seed=1, start_ms=T0,
                   offline_fraction=0).events(5000)
    for ev in evs:
        REGISTRY.validate(ev)
    readings = [e for e in evs if e.kind == "reading"]
    assert {e.device for e in readings} == {f"dev-{i:04d}" for i in range(30)}
    assert {e.payload["kind"] for e in readings} <= {"temperature", "humidity", "pressure", "battery", "co2"}
    sensors: dict[str, set[str]] = defaultdict(set)
    for e in readings:
        sensors[e.device].add(e.payload["kind"])
    assert all(2 <= len(s) <= 4 for s in sensors.values())
    assert all(isinstance(e.payload["value"], float) for e in readings)


def test_same_seed_same_events() -> None:
    a = Simulator("http://127.0.0.1:1", devices=20, rate=300, kinds=("reading", "tweet"), seed=3, start_ms=T0,
                  offline_fraction=0.2, offline_spell_s=(1, 3))
    b = Workload(devices=20, rate=300, kinds=("reading", "tweet"), seed=3, start_ms=T0,
                 offline_fraction=0.2, offline_spell_s=(1, 3))
    assert a.events(4000) == b.events(4000)
    assert a.events(4000) != Workload(devices=20, rate=300, kinds=("reading", "tweet"), seed=4,
                                      start_ms=T0).events(4000)
    first = a.generate(10)
    assert first == a.events(len(first))
    assert a.generate(10) == first


def test_first_seq_continues_the_counters() -> None:
    w = Workload(devices=3, rate=100, kinds=("reading", "tweet"), start_ms=T0, offline_fraction=0, users=2)
    later = Workload(devices=3, rate=100, kinds=("reading", "tweet"), start_ms=T0, offline_fraction=0, users=2,
                     first_seq=1000)
    assert [e.seq + 1000 for e in w.events(200)] == [e.seq for e in later.events(200)]


def test_rate_split_evenly_between_kinds() -> None:
    evs = Workload(devices=10, rate=1000, kinds=("reading", "tweet"), start_ms=T0, offline_fraction=0).generate(3)
    kinds = Counter(e.kind for e in evs)
    assert abs(kinds["reading"] - 1500) <= 1 and abs(kinds["tweet"] - 1500) <= 1
    assert [e.ts for e in evs] == sorted(e.ts for e in evs)  # nobody offline: in order
    assert evs[0].ts == T0 and evs[-1].ts < T0 + 3000


def test_offline_devices_send_late_events() -> None:
    evs = Workload(devices=20, rate=40, seed=5, start_ms=T0, offline_fraction=0.2).generate(600)
    assert late_count(evs, 30_000) > 100  # backlogs flushed after 30-120 s offline
    assert_seqs_contiguous(evs)
    per_device: dict[str, list[int]] = defaultdict(list)
    for e in evs:
        per_device[e.device].append(e.ts)
    assert all(ts == sorted(ts) for ts in per_device.values())  # a backlog is flushed oldest first
    assert late_count(Workload(devices=20, rate=40, seed=5, start_ms=T0, offline_fraction=0).generate(600), 0) == 0


def test_tweets_have_zipf_hashtags() -> None:
    evs = Workload(devices=1, rate=500, kinds=("tweet",), seed=2, start_ms=T0).events(20_000)
    assert all(e.device == e.payload["user"] and re.fullmatch(r"user-\d{3}", e.device) for e in evs)
    assert_seqs_contiguous(evs)
    tags = Counter(w for e in evs for w in e.payload["text"].split() if w.startswith("#"))
    top = tags.most_common(11)
    assert top[0][1] > 5 * top[9][1]  # a meaningful top-10: ranks differ clearly
    assert top[0][0] == "#iot"


@pytest.mark.parametrize("kwargs, message", [
    ({"url": "ftp://host"}, "http://HOST"),
    ({"url": "localhost:8000"}, "http://HOST"),
    ({"rate": 0}, "rate must be"),
    ({"rate": float("nan")}, "rate must be"),
    ({"devices": 0}, "devices must be"),
    ({"batch": 0}, "batch must be"),
    ({"batch": 100_001}, "batch must be"),
    ({"kinds": ("reading", "metric")}, "'metric'"),
    ({"fmt": "xml"}, "'xml'"),
    ({"offline_fraction": 1.0}, "offline_fraction"),
])
def test_invalid_settings(kwargs: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"url": "http://127.0.0.1:8000", "devices": 10, "rate": 100} | kwargs
    with pytest.raises(ConfigError, match=re.escape(message)):
        Simulator(settings.pop("url"), **settings)


# -- delivery -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt, compress, seconds", [("json", True, 1.0), ("ndjson", True, 0.4),
                                                    ("msgpack", True, 0.4), ("json", False, 0.4)])
def test_run_delivers_the_workload(server: FakeServer, fmt: str, compress: bool, seconds: float) -> None:
    sim = Simulator(server.url, devices=50, rate=2000, kinds=("reading", "tweet"), seed=9, fmt=fmt,
                    gzip=compress, token="s3cret", record=True)
    report = sim.run(seconds)
    assert 500 * seconds <= report.sent <= 4000 * seconds, report
    assert report.sent == report.accepted == len(server.stored)
    assert report.duplicates == report.rejected == report.dropped == report.retries == report.unsent == 0
    check_delivery(server, report)
    # exactly the events the pure generator gives, in order (one connection)
    assert server.arrivals == [as_dict(e) for e in sim.events(len(server.arrivals))]
    h = server.headers[0]
    assert h["Authorization"] == "Bearer s3cret"
    assert h.get("Content-Encoding") == ("gzip" if compress else None)
    assert all(len(r) <= 500 for r in server.requests)
    assert report.rate > 0


def test_offline_devices_arrive_late_and_out_of_order(server: FakeServer) -> None:
    sim = Simulator(server.url, devices=20, rate=1000, seed=4, record=True, offline_fraction=0.3,
                    offline_spell_s=(0.4, 0.8), buffer_size=15)
    report = sim.run(1.5)
    check_delivery(server, report)
    assert late_count(server.arrivals, 150) > 0
    assert report.sent == report.accepted
    assert report.buffer_dropped > 0  # a reading every 20 ms, 15 kept: the oldest went
    assert server.arrivals == [as_dict(e) for e in sim.events(len(server.arrivals))]


def test_429_waits_retry_after_and_resends_the_same_batch(server: FakeServer) -> None:
    server.respond = lambda i, evs: (429, {"Retry-After": "1"}, b'{"error": "slow down"}') if i == 0 else None
    report = Simulator(server.url, devices=5, rate=200, record=True).run(0.5)
    assert server.requests[1] == server.requests[0]
    assert server.times[1] - server.times[0] >= 0.9
    assert report.throttled == report.retries == 1
    assert report.unsent == report.dropped == 0
    assert report.sent == report.accepted == len(server.stored)
    check_delivery(server, report)


def test_retry_after_is_capped(server: FakeServer) -> None:
    server.respond = lambda i, evs: (503, {"Retry-After": "3600"}, b"") if i < 2 else None
    sim = Simulator(server.url, devices=5, rate=200, record=True)
    sim.max_retry_after_s = 0.2
    started = time.monotonic()
    report = sim.run(0.5)
    assert time.monotonic() - started < 5
    assert report.throttled == 2
    check_delivery(server, report)


def test_lost_answer_resend_is_deduplicated(server: FakeServer) -> None:
    server.respond = lambda i, evs: "hang-up" if i == 0 else None  # stored, but no answer
    report = Simulator(server.url, devices=5, rate=200, record=True).run(0.5)
    assert server.requests[1] == server.requests[0]
    assert report.duplicates == len(server.requests[0]) > 0
    assert report.retries == 1
    assert report.accepted + report.duplicates == report.sent == len(server.stored)
    check_delivery(server, report)


def test_refused_batch_is_dropped_and_the_run_goes_on(server: FakeServer) -> None:
    server.respond = lambda i, evs: (400, {}, b'{"error": "bad batch"}') if i == 1 else None
    report = Simulator(server.url, devices=5, rate=400, record=True).run(1.0)
    refused = server.requests[1]
    assert report.dropped == len(refused) > 0 and report.dropped_batches == 1
    assert report.retries == 0
    assert "HTTP 400" in (report.last_error or "")
    keys = [(e["device"], e["seq"]) for r in server.requests for e in r]
    assert len(keys) == len(set(keys))  # nothing was resent
    assert len(server.requests) >= 2 and report.accepted == len(server.stored) > 0
    assert report.sent == report.accepted + report.dropped
    assert sorted(report.acked) == sorted(server.stored)


def test_connection_refused_until_the_server_starts() -> None:
    port = free_port()
    sim = Simulator(f"http://127.0.0.1:{port}", devices=10, rate=500, record=True)
    result: list[SimulatorReport] = []
    runner = threading.Thread(target=lambda: result.append(sim.run(1.5)))
    runner.start()
    time.sleep(0.7)
    server = FakeServer(port=port)
    try:
        runner.join(30)
        report = result[0]
    finally:
        server.close()
    assert report.retries >= 1 and report.unsent == 0
    assert report.sent == report.accepted > 300
    check_delivery(server, report)


def test_server_never_there_ends_with_unsent_events() -> None:
    sim = Simulator(f"http://127.0.0.1:{free_port()}", devices=10, rate=500)
    sim.drain_s = 0.5
    started = time.monotonic()
    report = sim.run(0.5)
    assert time.monotonic() - started < 5
    assert report.sent == 0 and report.unsent > 0 and report.retries > 0
    assert "ConnectionRefusedError" in (report.last_error or "")


def test_stop_event_ends_an_open_ended_run(server: FakeServer) -> None:
    stop = threading.Event()
    threading.Timer(0.4, stop.set).start()
    sim = Simulator(server.url, devices=5, rate=200)
    report = sim.run(None, stop)
    assert report.sent == len(server.stored) > 0
    assert sim.progress().sent == report.sent


# -- the command ----------------------------------------------------------------------


def test_cli_sends_and_prints_a_summary(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--url", server.url, "--devices", "5", "--rate", "300", "--duration", "0.5",
                 "--kinds", "reading,tweet", "--format", "ndjson", "--batch", "50", "--seed", "7"])
    out = capsys.readouterr().out
    assert code == 0
    sent = int(re.search(r"^sent\s+([\d,]+)", out, re.M).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert sent == len(server.stored) > 0
    assert re.search(r"^accepted\s", out, re.M) and re.search(r"^retries\s", out, re.M)
    assert {e["kind"] for e in server.arrivals} == {"reading", "tweet"}


@pytest.mark.parametrize("argv", [
    ["--rate", "0"], ["--rate", "fast"], ["--devices", "0"], ["--batch", "0"], ["--batch", "100001"],
    ["--kinds", "reading,metric"], ["--duration", "-1"], ["--format", "xml"],
])
def test_cli_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    base = {"--url": "http://127.0.0.1:1", "--devices": "1", "--rate": "10"}
    base.update(dict(zip(argv[::2], argv[1::2])))
    with pytest.raises(SystemExit) as exc:
        main(["simulate", *[x for kv in base.items() for x in kv]])
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_cli_bad_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--url", "ftp://x", "--devices", "1", "--rate", "10"]) == 1
    assert "http://HOST" in capsys.readouterr().err


# -- several ingest nodes ---------------------------------------------------------------


@pytest.fixture
def nodes() -> Iterator[tuple[FakeServer, FakeServer]]:
    """Two ingest nodes in front of one log: they share what is stored, de-duplicated by (device, seq)."""
    a, b = FakeServer(), FakeServer()
    b.lock, b.stored, b.arrivals = a.lock, a.stored, a.arrivals
    yield a, b
    for node in (a, b):
        if node.thread.is_alive():
            node.close()


def check_one_log(a: FakeServer, report: SimulatorReport) -> None:
    """Every acknowledged event is in the log once, and nothing else is."""
    assert sorted(report.acked) == sorted(a.stored)
    assert len(report.acked) == len(set(report.acked)) == len(a.arrivals)
    assert report.unsent == report.dropped == 0


def test_connections_spread_over_the_nodes(nodes: tuple[FakeServer, FakeServer]) -> None:
    a, b = nodes
    report = Simulator(f"{a.url}, {b.url}", devices=20, rate=2000, batch=50, connections=2,
                       record=True).run(1.0)
    check_one_log(a, report)
    assert report.failovers == 0 and report.retries == 0
    assert report.by_url[a.url] > 0 and report.by_url[b.url] > 0
    assert report.by_url[a.url] + report.by_url[b.url] == report.accepted == len(a.stored)
    assert len(a.requests) > 0 and len(b.requests) > 0


def test_a_node_that_dies_is_failed_over_and_nothing_is_lost_or_doubled(
        nodes: tuple[FakeServer, FakeServer]) -> None:
    a, b = nodes
    # node a stores its third batch but dies before answering, then is gone for good
    a.respond = lambda i, evs: "hang-up" if i == 2 else None
    died = threading.Event()

    def kill_after_hang_up() -> None:
        while len(a.requests) < 3:
            time.sleep(0.01)
        a.close()
        died.set()

    threading.Thread(target=kill_after_hang_up, daemon=True).start()
    report = Simulator([a.url, b.url], devices=10, rate=1000, batch=40, record=True).run(1.5)
    assert died.is_set()
    check_one_log(a, report)
    assert report.failovers >= 1 and report.by_url[b.url] > 0
    lost_answer = a.requests[2]
    assert report.duplicates >= len(lost_answer)   # resent to b, which already had it: stored once
    assert b.requests[0] == lost_answer
    assert_seqs_contiguous(a.arrivals)             # one connection: each device's events in order


def test_a_node_shedding_load_sends_the_batch_to_the_next_at_once(nodes: tuple[FakeServer, FakeServer]) -> None:
    a, b = nodes
    a.respond = lambda i, evs: (503, {"Retry-After": "3600"}, b"{}")
    started = time.monotonic()
    report = Simulator(f"{a.url},{b.url}", devices=5, rate=400, record=True).run(0.6)
    assert time.monotonic() - started < 10
    check_one_log(a, report)
    assert report.throttled >= 1 and report.failovers >= 1
    assert report.by_url.get(a.url, 0) == 0 and report.by_url[b.url] == len(a.stored) > 0


@pytest.mark.parametrize("urls, message", [
    ("", "no server URL given"),
    (" , ", "no server URL given"),
    ("http://127.0.0.1:1,http://127.0.0.1:1", "listed twice"),
    ("http://127.0.0.1:1,ftp://x", "must look like http://HOST:PORT"),
    (["http://127.0.0.1:1", "http://127.0.0.1:2?x=1"], "has a query or fragment"),
])
def test_bad_lists_of_urls_are_refused(urls: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Simulator(urls, devices=1, rate=1)


def test_cli_with_two_nodes_says_where_events_went(nodes: tuple[FakeServer, FakeServer],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    a, b = nodes
    code = main(["simulate", "--url", f"{a.url},{b.url}", "--devices", "10", "--rate", "800",
                 "--duration", "0.8", "--connections", "2", "--batch", "40"])
    out = capsys.readouterr().out
    assert code == 0, out
    per_node = {url: int(re.search(rf"{re.escape(url)}\s+([\d,]+)", out)[1].replace(",", ""))  # type: ignore[index]
                for url in (a.url, b.url)}
    assert sum(per_node.values()) == len(a.stored) > 0 and min(per_node.values()) > 0, out
    assert re.search(r"failovers\s+0", out), out
