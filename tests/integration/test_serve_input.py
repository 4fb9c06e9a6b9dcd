"""Bad, hostile and unauthorised input against a real ``fluvial serve`` on loopback.

Two servers serve the whole module (each started once):

* ``plain``: no auth, ``max_body_bytes = 65536`` and ``max_events_per_request
  = 50`` (from a config file), so the limits are cheap to reach;
* ``secured``: ``--auth tokens`` with default limits, and a device (``dev-1``),
  a read and an admin token made before it starts.

Every request is judged three ways: its status and JSON body, what the log and
the dead-letter log hold afterwards (read back from the data directory,
readonly), and ``/healthz`` answering 200 after it. Tests write under their own
device ids, so they can share a server and still count exactly what they stored.
"""

from __future__ import annotations

import gzip
import http.client
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fluvial.events.envelope import Event
from fluvial.log import DeadLetterLog, LocalLog
from fluvial.log.deadletter import DeadLetter
from fluvial.server.auth import TokenStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_proc import EXAMPLES, ServerProcess

pytestmark = pytest.mark.services

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
MAX_BODY = 65_536
MAX_EVENTS = 50
CONFIG = f"[server]\nmax_body_bytes = {MAX_BODY}\nmax_events_per_request = {MAX_EVENTS}\n"
JSON = "application/json"
NDJSON = "application/x-ndjson"
MSGPACK = "application/msgpack"
UNAUTHORISED = ("missing or invalid bearer token: send 'Authorization: Bearer <token>' with a token "
                "from `fluvial token create`")


# -- servers -------------------------------------------------------------------------------------


@contextmanager
def running(srv: ServerProcess) -> Iterator[ServerProcess]:
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("plain"), flows=[EXAMPLES / "device_stats.py"],
                        config=CONFIG, extra=["--auth", "none"])
    with running(srv):
        yield srv


@dataclass(frozen=True)
class Secured:
    srv: ServerProcess
    device: str   # may post events of dev-1 only
    read: str
    admin: str
    forged: str   # the device token's id with another secret: the right format, not a token


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    srv = ServerProcess(tmp_path_factory.mktemp("secured"), flows=[EXAMPLES / "device_stats.py"],
                        extra=["--auth", "tokens"])
    srv.data_dir.mkdir(parents=True)
    with TokenStore(srv.data_dir / "tokens.db") as store:
        device, grant = store.create("device", device="dev-1", note="test sensor")
        read, _ = store.create("read")
        admin, _ = store.create("admin")
    forged = f"flv_{grant.token_id}_{'A' * len(device.split('_', 2)[2])}"
    assert forged != device and len(forged) == len(device)
    with running(srv):
        yield Secured(srv, device, read, admin, forged)


# -- events and what the server kept -----------------------------------------------------------------


def reading(device: str, seq: int, value: Any = 1.5, **envelope: Any) -> dict[str, Any]:
    """A ``reading`` event (what examples/device_stats.py consumes); ``envelope`` replaces fields."""
    event = {"device": device, "kind": "reading", "ts": T0 + seq * 1_000, "seq": seq,
             "payload": {"kind": "temp", "value": value}}
    event.update(envelope)
    return event


def encode(events: list[Any], ctype: str) -> bytes:
    if ctype == NDJSON:
        return b"".join(msgspec.json.encode(e) + b"\n" for e in events)
    return msgspec.msgpack.encode(events) if ctype == MSGPACK else msgspec.json.encode(events)


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def stored(srv: ServerProcess, device: str) -> list[Event]:
    """The events of ``device`` in the server's log, by seq."""
    log = LocalLog.open(srv.data_dir / "log", readonly=True)
    try:
        events = [e for p in range(log.partitions) for e in log.read(p, 0).events if e.device == device]
    finally:
        log.close()
    return sorted(events, key=lambda e: e.seq)


def log_size(srv: ServerProcess) -> int:
    log = LocalLog.open(srv.data_dir / "log", readonly=True)
    try:
        return sum(log.end_offsets())
    finally:
        log.close()


def dead_letters(srv: ServerProcess) -> list[DeadLetter]:
    with DeadLetterLog.open(srv.data_dir / "dead-letters", readonly=True) as dl:
        return dl.read()


def healthz(srv: ServerProcess) -> int:
    status, body = srv.request("GET", "/healthz")
    assert json.loads(body)["status"] == ("ok" if status == 200 else "degraded"), body
    return status


@dataclass(frozen=True)
class Outcome:
    """One request, and what it left in the data directory."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    appended: int               # events the log grew by
    letters: list[DeadLetter]   # records the dead-letter log grew by


def send(srv: ServerProcess, body: Any, headers: dict[str, str], *, method: str = "POST",
         path: str = "/v1/events", chunked: bool = False) -> Outcome:
    """Make one request and observe its effects; the server must be healthy afterwards."""
    size, before = log_size(srv), len(dead_letters(srv))
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
        response = conn.getresponse()
        status, answer = response.status, response.read()
        got_headers = {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
    assert got_headers.get("content-type") == "application/json", (status, answer[:300])
    assert healthz(srv) == 200, srv.output()[-3000:]
    return Outcome(status, got_headers, json.loads(answer), log_size(srv) - size, dead_letters(srv)[before:])


def refused(srv: ServerProcess, body: Any, headers: dict[str, str], status: int, **kw: Any) -> Outcome:
    """A request refused as a whole: ``status``, the JSON error body, nothing appended to the log."""
    out = send(srv, body, headers, **kw)
    assert out.status == status, out.body
    assert set(out.body) == {"error", "status"} and out.body["status"] == status, out.body
    assert out.appended == 0
    return out


def kept_as_received(out: Outcome, raw: bytes, source: str = "http") -> None:
    """The refused body is the one new dead letter, as received, with the error as its reason."""
    assert [(d.raw, d.reason, d.source, d.line) for d in out.letters] == [
        (raw, f"{out.status}: {out.body['error']}", source, None)]


# -- bodies that cannot be read: refused whole, kept whole ---------------------------------------------

GOOD_LINE = b'{"device": "bad-ndjson", "kind": "reading", "ts": 0, "seq": 0, "payload": {"kind": "t", "value": 1.0}}'
TRUNCATED = b'[{"device": "bad-json", "kind": "reading", "ts": 0, "seq": 0, "payload": {"value": 1.0}}, {"de'
MSGPACK_TRUNCATED = msgspec.msgpack.encode([reading("bad-msgpack", 0)])[:-4]

UNREADABLE = [
    # id, body, content type, the error
    ("truncated-array", TRUNCATED, JSON,
     f"the body is not valid JSON: invalid JSON: input ends early (truncated) at byte {len(TRUNCATED)}"),
    ("garbage-bytes", b"\x00\x01\x02garbage", JSON,
     "the body is not valid JSON: invalid JSON: invalid character '\\x00' at byte 0"),
    ("invalid-utf8", b'[{"device": "\xff\xfe", "kind": "reading"}]', JSON,
     "the body is not valid JSON: invalid JSON: invalid UTF-8 at byte 13"),
    ("ndjson-bad-line", GOOD_LINE + b"\n" + b'{"device": "bad-ndjson", "kind": reading}\n', NDJSON,
     "the body is not valid JSON: invalid NDJSON at line 2: invalid character 'r' at byte 136"),
    ("msgpack-bad-opcode", b"\x91\xc1", MSGPACK,
     "the body is not valid MessagePack: invalid MessagePack: invalid type byte 0xc1 at byte 1"),
    ("msgpack-truncated", MSGPACK_TRUNCATED, MSGPACK,
     "the body is not valid MessagePack: invalid MessagePack: input ends early (truncated) at byte "
     f"{len(MSGPACK_TRUNCATED)}"),
]


@pytest.mark.parametrize(("body", "ctype", "error"), [c[1:] for c in UNREADABLE], ids=[c[0] for c in UNREADABLE])
def test_unreadable_body_is_400_and_kept(plain: ServerProcess, body: bytes, ctype: str, error: str) -> None:
    out = refused(plain, body, {"Content-Type": ctype}, 400)
    assert out.body["error"] == error
    kept_as_received(out, body)


def test_readable_lines_of_an_unreadable_ndjson_body_are_not_stored(plain: ServerProcess) -> None:
    body = encode([reading("ndjson-half", 0), reading("ndjson-half", 1)], NDJSON) + b"{oops\n"
    out = refused(plain, body, {"Content-Type": NDJSON}, 400)
    assert out.body["error"].startswith("the body is not valid JSON: invalid NDJSON at line 3: ")
    kept_as_received(out, body)
    assert stored(plain, "ndjson-half") == []


UNSUPPORTED = [
    ({"Content-Type": "text/html"}, "Content-Type 'text/html' is not supported: send application/json (an "
                                    "array of events), application/x-ndjson or application/msgpack"),
    ({"Content-Type": "image/png"}, "Content-Type 'image/png' is not supported: send application/json (an "
                                    "array of events), application/x-ndjson or application/msgpack"),
    ({"Content-Type": JSON, "Content-Encoding": "br"},
     "Content-Encoding 'br' is not supported: send gzip or no Content-Encoding"),
    ({"Content-Type": JSON, "Content-Encoding": "deflate"},
     "Content-Encoding 'deflate' is not supported: send gzip or no Content-Encoding"),
]


@pytest.mark.parametrize(("headers", "error"), UNSUPPORTED, ids=["html", "png", "br", "deflate"])
def test_unsupported_media_is_415_and_kept(plain: ServerProcess, headers: dict[str, str], error: str) -> None:
    body = encode([reading("media", 0)], JSON)  # valid events: the envelope alone is refused
    out = refused(plain, body, headers, 415)
    assert out.body["error"] == error
    kept_as_received(out, body)
    assert stored(plain, "media") == []


GZIPPED = gzip.compress(encode([reading("bad-gzip", 0)], JSON))
INVALID_GZIP = [
    ("random-bytes", random.Random(7).randbytes(300),
     "invalid gzip body: it does not start as gzip data does (bytes 1f 8b); send the gzip file format, "
     "or no Content-Encoding"),
    ("damaged", GZIPPED[:-8] + bytes(b ^ 0xFF for b in GZIPPED[-8:-4]) + GZIPPED[-4:],
     "invalid gzip body: the compressed data is damaged (a block or a checksum does not match)"),
    ("truncated", GZIPPED[:-12], "invalid gzip body: the compressed stream ends early (truncated)"),
    ("trailing-junk", GZIPPED + b"junk", "invalid gzip body: bytes after the end of the gzip stream"),
]


@pytest.mark.parametrize(("body", "error"), [c[1:] for c in INVALID_GZIP], ids=[c[0] for c in INVALID_GZIP])
def test_invalid_gzip_is_400_and_kept(plain: ServerProcess, body: bytes, error: str) -> None:
    out = refused(plain, body, {"Content-Type": JSON, "Content-Encoding": "gzip"}, 400)
    assert out.body["error"] == error
    kept_as_received(out, body)  # the compressed bytes, as they came
    assert stored(plain, "bad-gzip") == []


@pytest.mark.parametrize("ctype", [JSON, NDJSON, MSGPACK])
def test_valid_gzip_body_of_each_format_is_stored(plain: ServerProcess, ctype: str) -> None:
    device = f"gzip-{ctype.rsplit('/', 1)[1]}"
    events = [reading(device, seq) for seq in range(3)]
    out = send(plain, gzip.compress(encode(events, ctype)), {"Content-Type": ctype, "Content-Encoding": "gzip"})
    assert (out.status, out.body, out.appended, out.letters) == (
        200, {"accepted": 3, "duplicates": 0, "rejected": []}, 3, [])
    assert [msgspec.structs.asdict(e) for e in stored(plain, device)] == events


# -- oversized --------------------------------------------------------------------------------------


def padded(event: dict[str, Any], size: int) -> bytes:
    """``[event]`` padded with spaces to exactly ``size`` bytes."""
    body = encode([event], JSON)
    return body[:-1] + b" " * (size - len(body)) + b"]"


def test_body_over_max_body_bytes_is_413_before_it_is_read(plain: ServerProcess) -> None:
    out = refused(plain, padded(reading("big", 1), MAX_BODY + 1), {"Content-Type": JSON}, 413)
    assert out.body["error"] == (f"the body is {MAX_BODY + 1} bytes; the server takes at most {MAX_BODY} "
                                 "(max_body_bytes): send fewer events per request")
    assert out.letters == []  # refused on its Content-Length: nothing was read, nothing to keep
    at_limit = send(plain, padded(reading("big", 0), MAX_BODY), {"Content-Type": JSON})
    assert (at_limit.status, at_limit.body["accepted"]) == (200, 1)
    assert [e.seq for e in stored(plain, "big")] == [0]


def chunks(body: bytes, size: int = 8_192) -> Iterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i:i + size]


def test_chunked_body_over_max_body_bytes_is_413(plain: ServerProcess) -> None:
    body = padded(reading("chunked", 1), MAX_BODY + 8_192)
    out = refused(plain, chunks(body), {"Content-Type": JSON}, 413, chunked=True)
    assert out.body["error"] == (f"the body exceeds {MAX_BODY} bytes (max_body_bytes): "
                                 "send fewer events per request")
    assert out.letters == []
    small = send(plain, chunks(padded(reading("chunked", 0), MAX_BODY - 100)), {"Content-Type": JSON},
                 chunked=True)
    assert (small.status, small.body["accepted"]) == (200, 1)
    assert [e.seq for e in stored(plain, "chunked")] == [0]


def test_gzip_bomb_is_413(plain: ServerProcess) -> None:
    inflated = b"[" + b" " * 10_000_000 + encode([reading("bomb", 0)], JSON)[1:]
    bomb = gzip.compress(inflated, compresslevel=9)
    assert len(bomb) < MAX_BODY // 4
    out = refused(plain, bomb, {"Content-Type": JSON, "Content-Encoding": "gzip"}, 413)
    assert out.body["error"] == (f"the body inflates to more than {MAX_BODY} bytes (the server's "
                                 "max_body_bytes): send fewer events per request")
    assert out.letters == []  # inflating stops at the limit: the bomb is not kept
    assert stored(plain, "bomb") == []


@pytest.mark.parametrize("ctype", [JSON, NDJSON, MSGPACK])
def test_more_events_than_max_events_per_request_is_413(plain: ServerProcess, ctype: str) -> None:
    device = f"many-{ctype.rsplit('/', 1)[1]}"
    events = [reading(device, seq) for seq in range(MAX_EVENTS + 1)]
    for variant in (events, [*events[:-1], reading(device, 99, "bad")]):  # all valid; one invalid (slow path)
        out = refused(plain, encode(variant, ctype), {"Content-Type": ctype}, 413)
        assert out.body["error"] == (f"{MAX_EVENTS + 1} events in one request; the server takes at most "
                                     f"{MAX_EVENTS} (max_events_per_request): split the batch")
        assert out.letters == []
    at_limit = send(plain, encode(events[:MAX_EVENTS], ctype), {"Content-Type": ctype})
    assert (at_limit.status, at_limit.body["accepted"], at_limit.appended) == (200, MAX_EVENTS, MAX_EVENTS)
    assert [e.seq for e in stored(plain, device)] == list(range(MAX_EVENTS))


# -- wrong schemas: refused one by one -------------------------------------------------------------------

BAD_EVENTS = [
    # id, what replaces fields of a good reading, the reason
    ("payload-type", {"payload": {"kind": "temp", "value": "hot"}}, "$.payload.value: expected float, got str"),
    ("payload-missing", {"payload": {"kind": "temp"}}, "$.payload.value: missing required field"),
    ("payload-not-object", {"payload": [1, 2]}, "$.payload: expected object, got array"),
    ("extra-envelope-field", {"unit": "C"}, "$.unit: unknown envelope field; put extra data inside payload"),
    ("missing-ts", {"ts": msgspec.UNSET}, "$.ts: missing required field"),
    ("negative-seq", {"seq": -1}, "$.seq: expected int >= 0"),
    ("empty-device", {"device": ""}, "$.device: expected a non-empty str"),
    ("device-not-str", {"device": 7}, "$.device: expected str, got int"),
    ("ts-str", {"ts": "1700000000000"}, "$.ts: expected int, got str"),
    ("ts-float", {"ts": 1.5}, "$.ts: expected int, got float"),
    ("ts-bool", {"ts": True}, "$.ts: expected int, got bool"),
    ("unknown-kind", {"kind": "humidity"}, "$.kind: unknown kind 'humidity'; registered kinds: line, reading, tweet"),
    ("not-an-object", None, "$: expected object, got str"),
]


def bad_event(device: str, seq: int, fields: dict[str, Any] | None) -> Any:
    if fields is None:
        return f"{device} {seq}"
    event = reading(device, seq)
    event.update(fields)
    return {k: v for k, v in event.items() if v is not msgspec.UNSET}


@pytest.mark.parametrize("ctype", [JSON, NDJSON, MSGPACK])
def test_mixed_body_stores_the_valid_and_dead_letters_exactly_the_invalid(plain: ServerProcess, ctype: str) -> None:
    device = f"mixed-{ctype.rsplit('/', 1)[1]}"
    body: list[Any] = []
    expected: list[dict[str, Any]] = []
    for seq, (_, fields, reason) in enumerate(BAD_EVENTS):
        body.append(reading(device, seq))
        expected.append({"index": len(body), "reason": reason})
        body.append(bad_event(device, 100 + seq, fields))
    out = send(plain, encode(body, ctype), {"Content-Type": ctype})
    assert out.status == 200, out.body
    assert out.body == {"accepted": len(BAD_EVENTS), "duplicates": 0, "rejected": expected}
    assert out.appended == len(BAD_EVENTS)
    assert [msgspec.structs.asdict(e) for e in stored(plain, device)] == body[0::2]
    assert [(d.reason, d.source, d.line) for d in out.letters] == [
        (f"event {r['index']}: {r['reason']}", "http", r["index"]) for r in expected]
    assert [msgspec.json.decode(d.raw) for d in out.letters] == body[1::2]


def test_payload_and_kind_errors_in_well_formed_envelopes(plain: ServerProcess) -> None:
    # every envelope is well formed: the body decodes in one go, then each payload is checked
    body = [reading("payloads", 0), reading("payloads", 1, value="hot"), reading("payloads", 2),
            reading("payloads", 3, kind="humidity"), reading("payloads", 4, value=None)]
    out = send(plain, encode(body, JSON), {"Content-Type": JSON})
    assert out.status == 200, out.body
    assert out.body == {"accepted": 2, "duplicates": 0, "rejected": [
        {"index": 1, "reason": "$.payload.value: expected float, got str"},
        {"index": 3, "reason": "$.kind: unknown kind 'humidity'; registered kinds: line, reading, tweet "
                               "(register it: `fluvial schema add`)"},
        {"index": 4, "reason": "$.payload.value: expected float, got null"}]}
    assert [e.seq for e in stored(plain, "payloads")] == [0, 2]
    assert [(d.line, msgspec.json.decode(d.raw)) for d in out.letters] == [(1, body[1]), (3, body[3]), (4, body[4])]


@pytest.mark.parametrize("ctype", [JSON, MSGPACK])
def test_body_of_only_invalid_events_is_422_and_every_one_is_kept(plain: ServerProcess, ctype: str) -> None:
    device = f"invalid-{ctype.rsplit('/', 1)[1]}"
    body = [bad_event(device, seq, fields) for seq, (_, fields, _) in enumerate(BAD_EVENTS)]
    reasons = [reason for _, _, reason in BAD_EVENTS]
    out = send(plain, encode(body, ctype), {"Content-Type": ctype})
    assert out.status == 422
    assert out.body == {
        "error": f"no valid event in the body; event 0: {reasons[0]} (and {len(reasons) - 1} more)",
        "status": 422, "accepted": 0, "duplicates": 0,
        "rejected": [{"index": i, "reason": r} for i, r in enumerate(reasons)]}
    assert out.appended == 0
    assert [(d.reason, d.line, msgspec.json.decode(d.raw)) for d in out.letters] == [
        (f"event {i}: {r}", i, item) for i, (r, item) in enumerate(zip(reasons, body))]


# -- hostile bodies -------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b" \n\t "], ids=["empty", "whitespace"])
def test_empty_body_is_400(plain: ServerProcess, body: bytes) -> None:
    out = refused(plain, body, {"Content-Type": JSON}, 400)
    assert out.body["error"] == "empty body: send one or more events"
    assert out.letters == []  # nothing to keep


NOT_EVENTS = [
    (b"null", "$: expected object, got null"),
    (b'"a string"', "$: expected object, got str"),
    (b"42", "$: expected object, got int"),
    (b"{}", "$.device: missing required field"),
    (b"[null, []]", "$: expected object, got null"),
]


@pytest.mark.parametrize(("body", "reason"), NOT_EVENTS, ids=["null", "string", "number", "empty-object", "junk"])
def test_json_that_is_not_events_is_422_and_kept(plain: ServerProcess, body: bytes, reason: str) -> None:
    out = send(plain, body, {"Content-Type": JSON})
    assert out.status == 422
    items = msgspec.json.decode(body)
    items = items if isinstance(items, list) else [items]
    more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
    assert out.body["error"] == f"no valid event in the body; event 0: {reason}{more}"
    assert out.body["rejected"][0] == {"index": 0, "reason": reason}
    assert len(out.body["rejected"]) == len(items)
    assert out.appended == 0
    assert [msgspec.json.decode(d.raw) for d in out.letters] == items


def test_empty_array_is_an_empty_batch(plain: ServerProcess) -> None:
    out = send(plain, b"[]", {"Content-Type": JSON})
    assert (out.status, out.body, out.appended, out.letters) == (
        200, {"accepted": 0, "duplicates": 0, "rejected": []}, 0, [])


def test_megabyte_device_id_is_refused_by_the_body_limit(plain: ServerProcess) -> None:
    body = encode([reading("d" * 1_000_000, 0)], JSON)
    out = refused(plain, body, {"Content-Type": JSON}, 413)
    assert out.body["error"].startswith(f"the body is {len(body)} bytes; the server takes at most {MAX_BODY}")


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_moderately_nested_payload_is_stored_verbatim(plain: ServerProcess) -> None:
    body = encode([reading("nested", 0)], JSON).replace(b'"value":1.5', b'"value":1.5,"deep":' + nested(200))
    out = send(plain, body, {"Content-Type": JSON})
    assert (out.status, out.body["accepted"]) == (200, 1)
    (event,) = stored(plain, "nested")
    assert msgspec.json.encode(event.payload["deep"]) == nested(200)


DEEP = [
    ("json-body", nested(10_000), JSON),
    ("json-payload", encode([reading("deep", 0)], JSON).replace(b"1.5", b"1.5,\"x\":" + nested(10_000)), JSON),
    ("msgpack-body", b"\x91" * 10_000 + b"\xc0", MSGPACK),
]


@pytest.mark.parametrize(("body", "ctype"), [c[1:] for c in DEEP], ids=[c[0] for c in DEEP])
def test_10k_levels_of_nesting_do_not_take_the_server_down(plain: ServerProcess, body: bytes, ctype: str) -> None:
    out = send(plain, body, {"Content-Type": ctype})  # send() checks /healthz afterwards
    assert out.status >= 400 and out.body["status"] == out.status
    assert out.appended == 0
    seq = len(stored(plain, "after-deep"))
    after = send(plain, encode([reading("after-deep", seq)], JSON), {"Content-Type": JSON})
    assert (after.status, after.body["accepted"]) == (200, 1)


@pytest.mark.parametrize(("body", "ctype"), [c[1:] for c in DEEP], ids=[c[0] for c in DEEP])
def test_10k_levels_of_nesting_are_400_and_kept(plain: ServerProcess, body: bytes, ctype: str) -> None:
    out = refused(plain, body, {"Content-Type": ctype}, 400)
    assert "nest" in out.body["error"] or "depth" in out.body["error"]
    kept_as_received(out, body)


def test_integer_with_10k_digits_is_400_and_kept(plain: ServerProcess) -> None:
    body = encode([reading("digits", 0)], JSON).replace(b"1.5", b"1" * 10_000)
    out = refused(plain, body, {"Content-Type": JSON}, 400)
    at = body.index(b"1" * 10_000)
    assert out.body["error"] == f"the body is not valid JSON: invalid JSON: number out of range at byte {at}"
    kept_as_received(out, body)
    assert stored(plain, "digits") == []


def test_fraction_with_10k_digits_is_stored_as_the_nearest_float(plain: ServerProcess) -> None:
    digits = "1." + "1" * 10_000
    body = encode([reading("fraction", 0)], JSON).replace(b"1.5", digits.encode())
    out = send(plain, body, {"Content-Type": JSON})
    assert (out.status, out.body["accepted"]) == (200, 1)
    assert [e.payload["value"] for e in stored(plain, "fraction")] == [float(digits)]


def test_nul_bytes_in_payload_strings_are_stored_verbatim(plain: ServerProcess) -> None:
    event = reading("nul", 0, payload={"kind": "te\x00mp", "value": 2.0, "note": "\x00\x00end"})
    body = encode([event], JSON)
    assert b"\\u0000" in body
    out = send(plain, body, {"Content-Type": JSON})
    assert (out.status, out.body["accepted"]) == (200, 1)
    assert [e.payload for e in stored(plain, "nul")] == [{"kind": "te\x00mp", "value": 2.0, "note": "\x00\x00end"}]


# -- duplicates -----------------------------------------------------------------------------------------


def test_duplicates_within_and_across_bodies_are_acknowledged_and_stored_once(plain: ServerProcess) -> None:
    first = send(plain, encode([reading("dup", 0, 1.0), reading("dup", 1, 2.0), reading("dup", 0, 99.0)], JSON),
                 {"Content-Type": JSON})
    assert (first.status, first.body, first.appended) == (200, {"accepted": 2, "duplicates": 1, "rejected": []}, 2)
    retry = send(plain, encode([reading("dup", 1, 42.0), reading("dup", 2, 3.0)], JSON), {"Content-Type": JSON})
    assert (retry.status, retry.body, retry.appended) == (200, {"accepted": 1, "duplicates": 1, "rejected": []}, 1)
    # the same retry in another encoding is still a retry
    again = send(plain, gzip.compress(encode([reading("dup", 0, 7.0), reading("dup", 2, 7.0)], MSGPACK)),
                 {"Content-Type": MSGPACK, "Content-Encoding": "gzip"})
    assert (again.status, again.body, again.appended) == (200, {"accepted": 0, "duplicates": 2, "rejected": []}, 0)
    assert [(e.seq, e.payload["value"]) for e in stored(plain, "dup")] == [(0, 1.0), (1, 2.0), (2, 3.0)]
    assert first.letters == retry.letters == again.letters == []  # duplicates are not errors


# -- queries --------------------------------------------------------------------------------------------

BAD_QUERIES = [
    ("/v1/views/nope", 404, "no view named 'nope' in "),
    ("/v1/views/device_stats?from=yesterday", 400,
     "bad query parameter: 'yesterday' is not an ISO-8601 time (like 2016-01-06T12:00:00Z) nor epoch ms"),
    ("/v1/views/device_stats?to=2016-13-45", 400, "bad query parameter: "),
    ("/v1/views/device_stats?version=latest", 400,
     "bad query parameter: invalid literal for int() with base 10: 'latest'"),
    ("/v1/views/device_stats?frm=0", 400, "unknown query parameters ['frm']; use key, from, to, version"),
    ("/v1/views/device_stats?key=x&limit=5&from=0", 400,
     "unknown query parameters ['limit']; use key, from, to, version"),
]


@pytest.mark.parametrize(("path", "status", "error"), BAD_QUERIES,
                         ids=["unknown-view", "bad-from", "bad-to", "bad-version", "unknown-param", "limit"])
def test_bad_view_queries(plain: ServerProcess, path: str, status: int, error: str) -> None:
    out = refused(plain, None, {}, status, method="GET", path=path)
    assert out.body["error"].startswith(error)
    assert out.letters == []
    if status == 404:
        assert "existing views: ['device_stats']" in out.body["error"]


def test_good_view_query_answers_with_the_realtime_rows(plain: ServerProcess) -> None:
    # ten days after the other tests' readings: the speed layer would drop older ones as late
    t1 = T0 + 10 * 86_400_000
    events = [reading("view-probe", 0, 1.0, ts=t1), reading("view-probe", 1, 4.0, ts=t1 + 1_000),
              reading("view-probe", 2, 2.0, ts=t1 + 70_000)]
    assert send(plain, encode(events, JSON), {"Content-Type": JSON}).body["accepted"] == 3
    plain.wait_caught_up()
    window = t1 - 20_000  # its minute, 2023-11-24T22:13:00Z
    path = f'/v1/views/device_stats?key=["view-probe","temp"]&from=2023-11-24T22:13:00Z&to={window + 60_000}'
    out = send(plain, None, {}, method="GET", path=path)
    assert (out.status, out.body) == (200, {"view": "device_stats", "version": None, "rows": [
        {"key": ["view-probe", "temp"], "window": [window, window + 60_000],
         "value": {"count": 2, "min": 1.0, "max": 4.0, "mean": 2.5}}]})


# -- auth --------------------------------------------------------------------------------------------


def test_healthz_needs_no_token(secured: Secured) -> None:
    status, body = secured.srv.request("GET", "/healthz")
    assert (status, json.loads(body)["status"]) == (200, "ok")


UNAUTHENTICATED = [
    ("missing", None),
    ("forged", "forged"),
    ("garbage", "Bearer !!not a token!!"),
    ("garbage-token", "Bearer flv_zz_123"),
    ("basic", "Basic ZGV2LTE6c2VjcmV0"),
    ("empty-bearer", "Bearer "),
]


@pytest.mark.parametrize("authorization", [c[1] for c in UNAUTHENTICATED], ids=[c[0] for c in UNAUTHENTICATED])
@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/events"), ("GET", "/v1/views/device_stats"),
                                              ("POST", "/v1/views/device_stats/batch")])
def test_no_valid_token_is_401(secured: Secured, authorization: str | None, method: str, path: str) -> None:
    headers = {"Content-Type": JSON}
    if authorization == "forged":
        headers.update(bearer(secured.forged))
    elif authorization is not None:
        headers["Authorization"] = authorization
    body = encode([reading("dev-1", 0)], JSON) if method == "POST" else None
    out = refused(secured.srv, body, headers, 401, method=method, path=path)
    assert out.body["error"] == UNAUTHORISED
    assert out.headers["www-authenticate"] == 'Bearer realm="fluvial"'
    assert out.letters == []


FOREIGN = [
    # id, the body (dev-1's token), the index of the foreign event
    ("valid", [*(reading("dev-1", s) for s in range(5)), reading("dev-9", 5),
               *(reading("dev-1", s) for s in range(6, 10))], 5),
    ("invalid", [reading("dev-1", 0), reading("dev-1", 1), reading("dev-9", 2, "hot"), reading("dev-1", 3)], 2),
    ("all-invalid", [reading("dev-1", 0, "hot"), reading("dev-9", 1, "hot")], 1),
]


@pytest.mark.parametrize(("body", "index"), [c[1:] for c in FOREIGN], ids=[c[0] for c in FOREIGN])
@pytest.mark.parametrize("ctype", [JSON, MSGPACK])
def test_device_token_posting_another_devices_event_is_403_and_writes_nothing(
        secured: Secured, body: list[Any], index: int, ctype: str) -> None:
    out = refused(secured.srv, encode(body, ctype), {"Content-Type": ctype, **bearer(secured.device)}, 403)
    assert out.body["error"] == (f"device token for 'dev-1' cannot write events of device 'dev-9' "
                                 f"(event {index}); nothing was written")
    assert "www-authenticate" not in out.headers
    assert out.letters == []  # not even the invalid events of the refused request
    assert stored(secured.srv, "dev-9") == []


def test_device_token_posts_its_own_events(secured: Secured) -> None:
    events = [reading("dev-1", seq) for seq in range(100, 104)]
    out = send(secured.srv, encode(events, JSON), {"Content-Type": JSON, **bearer(secured.device)})
    assert (out.status, out.body, out.appended) == (200, {"accepted": 4, "duplicates": 0, "rejected": []}, 4)
    assert [msgspec.structs.asdict(e) for e in stored(secured.srv, "dev-1")] == events


def test_device_tokens_unreadable_body_is_kept_under_its_device(secured: Secured) -> None:
    body = b'[{"device": "dev-1", "kind": "reading", '
    out = refused(secured.srv, body, {"Content-Type": JSON, **bearer(secured.device)}, 400)
    kept_as_received(out, body, source="http:device:dev-1")


def test_device_token_created_by_the_cli_works_on_the_running_server(secured: Secured) -> None:
    run = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(secured.srv.data_dir),
                          "token", "create", "--device", "dev-cli"], capture_output=True, text=True, timeout=60,
                         check=False, cwd=secured.srv.data_dir.parent)
    assert run.returncode == 0, run.stderr
    token = run.stdout.splitlines()[0]
    assert token.startswith("flv_")
    own = send(secured.srv, encode([reading("dev-cli", 0)], JSON), {"Content-Type": JSON, **bearer(token)})
    assert (own.status, own.body["accepted"]) == (200, 1)
    other = refused(secured.srv, encode([reading("dev-1", 0)], JSON), {"Content-Type": JSON, **bearer(token)}, 403)
    assert other.body["error"] == ("device token for 'dev-cli' cannot write events of device 'dev-1' (event 0); "
                                   "nothing was written")
    assert [e.seq for e in stored(secured.srv, "dev-cli")] == [0]


def test_read_token_cannot_post(secured: Secured) -> None:
    out = refused(secured.srv, encode([reading("dev-read", 0)], JSON), {"Content-Type": JSON, **bearer(secured.read)},
                  403)
    assert out.body["error"] == "read token cannot post events"
    assert out.letters == []
    assert stored(secured.srv, "dev-read") == []


ROLES = [
    # token, method, path, status, error (None: allowed)
    ("read", "GET", "/v1/views", 200, None),
    ("read", "GET", "/v1/views/device_stats?from=0", 200, None),
    ("read", "GET", "/v1/metrics", 200, None),
    ("device", "GET", "/v1/views", 403, "device token cannot query views"),
    ("device", "GET", "/v1/views/device_stats", 403, "device token cannot query views"),
    ("read", "POST", "/v1/views/device_stats/batch", 403,
     "read token cannot run admin actions (batch, reprocess, rollback): use an admin token"),
    ("device", "POST", "/v1/views/device_stats/batch", 403,
     "device token cannot run admin actions (batch, reprocess, rollback): use an admin token"),
    ("device", "POST", "/v1/views/device_stats/rollback", 403,
     "device token cannot run admin actions (batch, reprocess, rollback): use an admin token"),
]


@pytest.mark.parametrize(("role", "method", "path", "status", "error"), ROLES,
                         ids=[f"{r[0]}-{r[1]}-{r[2].split('?')[0]}" for r in ROLES])
def test_what_each_role_may_do(secured: Secured, role: str, method: str, path: str, status: int,
                               error: str | None) -> None:
    out = send(secured.srv, None, bearer(getattr(secured, role)), method=method, path=path)
    assert out.status == status, out.body
    if error is None:
        assert "error" not in out.body
    else:
        assert out.body == {"error": error, "status": status}
    assert (out.appended, out.letters) == (0, [])


def test_admin_posts_any_devices_events_and_runs_the_batch_layer(secured: Secured) -> None:
    srv = secured.srv
    events = [reading("dev-a", 0, 1.0), reading("dev-b", 0, 5.0), reading("dev-a", 1, 3.0), reading("dev-c", 9)]
    out = send(srv, encode(events, JSON), {"Content-Type": JSON, **bearer(secured.admin)})
    assert (out.status, out.body, out.appended) == (200, {"accepted": 4, "duplicates": 0, "rejected": []}, 4)
    assert [(e.seq, e.payload["value"]) for e in stored(srv, "dev-a")] == [(0, 1.0), (1, 3.0)]
    assert [e.seq for e in stored(srv, "dev-b")] == [0]
    assert [e.seq for e in stored(srv, "dev-c")] == [9]
    started = send(srv, None, bearer(secured.admin), path="/v1/views/device_stats/batch")
    assert started.status == 202, started.body
    assert started.headers["location"] == f"/v1/jobs/{started.body['id']}"
    job = srv.wait_job(started.body["id"], token=secured.admin)
    assert (job["status"], job["error"], job["kind"]) == ("done", None, "batch")
    assert job["result"]["records"] == log_size(srv)
    version = job["result"]["views"]["device_stats"]
    view = srv.get('/v1/views/device_stats?key=["dev-a","temp"]', secured.read)
    assert view == {"view": "device_stats", "version": version, "rows": [
        {"key": ["dev-a", "temp"], "window": [T0 - 20_000, T0 + 40_000],
         "value": {"count": 2, "min": 1.0, "max": 3.0, "mean": 2.0}}]}


# -- device ids the token store would never issue --------------------------------------------------------


@pytest.mark.parametrize("device", ["d" * 1_000_000, "dev\x00ice"], ids=["1MB", "NUL"])
def test_device_ids_no_token_could_be_issued_for_are_rejected(secured: Secured, device: str) -> None:
    body = encode([reading(device, 0)], JSON)
    out = send(secured.srv, body, {"Content-Type": JSON, **bearer(secured.admin)})
    assert out.status == 422, out.body
    assert out.body["rejected"][0]["reason"].startswith("$.device: ")
    assert out.appended == 0
    assert [msgspec.json.decode(d.raw) for d in out.letters] == [reading(device, 0)]
