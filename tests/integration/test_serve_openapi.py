"""The OpenAPI document of ``fluvial serve`` against a real server: every answer documented, never a 5xx.

schemathesis is not in requirements.lock, so this walks ``/openapi.json`` itself:
for every operation it sends requests built from the document's schemas (valid
ones, and ones that break a schema: wrong types, out-of-range numbers, names
outside the view-name rule, empty ``kind``, unknown keys, unreadable bodies),
each with no token and with a device, a read and an admin token, plus a foreign
``Host`` and a cross-site ``Origin``. Every answer must be a status the document
lists for that operation, with the documented media type and, for JSON, a body
that validates against the documented schema; no answer may be a 5xx.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import sys
import time
import types
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fluvial.server.auth import TokenStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_proc import EXAMPLES, ServerProcess

pytestmark = pytest.mark.services

SEED = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))
INT64_MAX = 2**63 - 1


# -- a validator for the JSON Schema the document uses ---------------------------------------------------------


def validate(value: Any, schema: dict[str, Any], doc: dict[str, Any], where: str = "$") -> None:
    """Raise AssertionError where ``value`` breaks ``schema`` (the subset of JSON Schema the document uses)."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        return validate(value, doc["components"]["schemas"][name], doc, where)
    if "oneOf" in schema:
        matches = sum(_valid(value, option, doc) for option in schema["oneOf"])
        assert matches == 1, f"{where}: {value!r:.200} matches {matches} of oneOf"
    if "anyOf" in schema:
        assert any(_valid(value, option, doc) for option in schema["anyOf"]), f"{where}: {value!r:.200}: no anyOf"
    if "not" in schema:
        assert not _valid(value, schema["not"], doc), f"{where}: {value!r:.200} matches its 'not'"
    if "const" in schema:
        assert value == schema["const"], f"{where}: {value!r} is not {schema['const']!r}"
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        assert any(_is(value, k) for k in kinds), f"{where}: {value!r:.200} is not {kinds}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            assert key in value, f"{where}: missing {key!r}"
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in schema.get("properties", {}):
                validate(item, schema["properties"][key], doc, f"{where}.{key}")
            elif extra is False:
                raise AssertionError(f"{where}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                validate(item, extra, doc, f"{where}.{key}")
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0) and len(value) <= schema.get("maxItems", len(value))
        for i, item in enumerate(value):
            if "items" in schema:
                validate(item, schema["items"], doc, f"{where}[{i}]")
    if isinstance(value, str):
        assert schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)), where
        if "pattern" in schema:
            assert re.search(schema["pattern"], value), f"{where}: {value!r} does not match {schema['pattern']}"
    if _is(value, "number"):
        assert schema.get("minimum", value) <= value <= schema.get("maximum", value), f"{where}: {value} out of range"
    return None


def _valid(value: Any, schema: dict[str, Any], doc: dict[str, Any]) -> bool:
    try:
        validate(value, schema, doc)
    except AssertionError:
        return False
    return True


def _is(value: Any, kind: str) -> bool:
    return {"object": isinstance(value, dict), "array": isinstance(value, list), "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | float) and not isinstance(value, bool),
            "boolean": isinstance(value, bool), "null": value is None}[kind]


def test_the_validator_refuses() -> None:
    """The checks below are only as good as this validator: it must say no."""
    doc = {"components": {"schemas": {"E": {"type": "object", "required": ["a"], "additionalProperties": False,
                                            "properties": {"a": {"type": "integer", "minimum": 0}}}}}}
    ref = {"$ref": "#/components/schemas/E"}
    validate({"a": 1}, ref, doc)
    for bad in [{"a": -1}, {}, {"a": 1, "b": 2}, {"a": "1"}, {"a": True}, [], None]:
        with pytest.raises(AssertionError):
            validate(bad, ref, doc)
    with pytest.raises(AssertionError):
        validate("x y", {"type": "string", "pattern": r"^\w+$"}, doc)
    either = {"anyOf": [{"type": "integer"}, {"const": "a"}], "not": {"const": 2}}
    validate(1, either, doc)
    validate("a", either, doc)
    for bad in [2, "b", None]:
        with pytest.raises(AssertionError):
            validate(bad, either, doc)


# -- the document lists every route --------------------------------------------------------------------------------


def test_the_document_lists_every_route() -> None:
    from fluvial.api.app import build_app
    from fluvial.api.openapi import document
    from fluvial.server.core import Metrics
    from fluvial.settings import Settings

    app = build_app(types.SimpleNamespace(settings=Settings(), metrics=Metrics()))  # type: ignore[arg-type]
    routes = {(route.path, method.lower()) for route in app.routes  # type: ignore[attr-defined]
              for method in route.methods - {"HEAD"}}  # type: ignore[attr-defined]
    documented = {(path, method) for path, ops in document()["paths"].items() for method in ops}
    assert routes == documented


# -- requests built from the document ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    label: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None = None


def reading(rng: random.Random, seq: int) -> dict[str, Any]:
    return {"device": "dev-1", "kind": "reading", "ts": 1_700_000_000_000 + seq * 1_000, "seq": seq,
            "payload": {"kind": rng.choice(["temp", "hum"]), "value": round(rng.uniform(-10, 40), 2)}}


def event_bodies(rng: random.Random, doc: dict[str, Any]) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(label, content type, body, extra headers) for POST /v1/events: valid, and breaking the Event schema."""
    base = 10_000 + rng.randrange(10**9)
    valid = [reading(rng, base + i) for i in range(rng.randint(1, 20))]
    for event in valid:
        validate(event, {"$ref": "#/components/schemas/Event"}, doc)
    broken: dict[str, dict[str, Any]] = {  # each breaks one rule of the Event schema
        "empty-kind": {"kind": ""}, "empty-device": {"device": ""}, "negative-seq": {"seq": -1},
        "seq-beyond-64-bits": {"seq": 2**63}, "ts-beyond-64-bits": {"ts": 2**63}, "ts-string": {"ts": "now"},
        "payload-list": {"payload": [1]}, "extra-key": {"extra": 1}, "unknown-kind": {"kind": "no-such-kind"},
        "payload-mistyped": {"payload": {"kind": "temp", "value": "warm"}}, "device-control": {"device": "a\nb"}}
    out = [("valid-json", "application/json", msgspec.json.encode(valid), {}),
           ("valid-ndjson", "application/x-ndjson", b"".join(msgspec.json.encode(e) + b"\n" for e in valid), {}),
           ("valid-msgpack", "application/msgpack", msgspec.msgpack.encode(valid), {}),
           ("valid-gzip", "application/json", gzip.compress(msgspec.json.encode(valid)), {"Content-Encoding": "gzip"})]
    for label, change in broken.items():
        event = {**reading(rng, base + 99), **change}
        with pytest.raises(AssertionError):
            validate(event, {"$ref": "#/components/schemas/Event"}, doc)
        out.append((label, "application/json", msgspec.json.encode([*valid[:2], event]), {}))
        out.append((f"{label}-alone", "application/json", msgspec.json.encode([event]), {}))
    no_payload = b'[{"device": "dev-1", "kind": "reading", "ts": 1, "seq": 1}]'
    out += [("missing-payload", "application/json", no_payload, {}),
            ("empty", "application/json", b"", {}), ("truncated", "application/json", b'[{"device": "d', {}),
            ("html", "text/html", b"<p>hi</p>", {}),
            ("bad-gzip", "application/json", b"[]", {"Content-Encoding": "gzip"}),
            ("brotli", "application/json", b"[]", {"Content-Encoding": "br"}),
            ("not-events", "application/json", b'{"a": 1}', {})]
    return out


def reprocess_bodies() -> list[tuple[str, Any]]:
    return [("dry-run", {"dry_run": True}), ("dry-run-from", {"from": "earliest", "dry_run": True}),
            ("flow-outside", {"flow": "/etc/passwd", "dry_run": True}), ("flow-not-string", {"flow": 42}),
            ("flow-missing", {"flow": "no_such_flow.py", "dry_run": True}), ("grace-negative", {"grace_s": -1}),
            ("unknown-key", {"bogus": 1}), ("list", [1]), ("nested", "[" * 5_000), ("not-json", "{")]


def path_values(param: dict[str, Any], job_id: str) -> list[tuple[str, str]]:
    """(label, value) for a path parameter: its examples, and values breaking its schema."""
    schema = param["schema"]
    if param["name"] == "id":
        return [("known-job", job_id), ("unknown-job", "nope")]
    return [*((f"example-{v}", v) for v in schema.get("examples", [])), ("unknown", "nope"),
            ("breaks-pattern", "no such view!"), ("too-long", "v" * 129), ("kappa-view", "words")]


def query_values(rng: random.Random, params: list[dict[str, Any]]) -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = [("none", {})]
    for param in (p for p in params if p["in"] == "query"):
        schema, name = param["schema"], param["name"]
        if schema.get("type") == "integer":
            out += [(f"{name}-valid", {name: str(rng.randint(schema["minimum"], 5))}),
                    (f"{name}-below", {name: str(schema["minimum"] - 1)}),
                    (f"{name}-above", {name: str(schema["maximum"] + 1)}), (f"{name}-text", {name: "latest"})]
        else:
            out += [(f"{name}-number", {name: str(rng.randint(0, 2**41))}),
                    (f"{name}-text", {name: "".join(rng.choices("abc-:TZ019", k=rng.randint(1, 12)))}),
                    (f"{name}-huge", {name: "9" * 30})]
    out += [("key-tuple", {"key": '["dev-1","temp"]'}), ("key-object", {"key": '{"a": 1}'}),
            ("unknown-param", {"limit": "5"})]
    return out


def calls_for(path: str, method: str, op: dict[str, Any], doc: dict[str, Any], rng: random.Random,
              job_id: str) -> Iterator[Call]:
    params = op.get("parameters", [])
    path_param = next((p for p in params if p["in"] == "path"), None)
    paths = [("", path)] if path_param is None else [
        (label, path.replace("{" + path_param["name"] + "}", urllib.parse.quote(value, safe="")))
        for label, value in path_values(path_param, job_id)]
    for path_label, url in paths:
        if path == "/v1/events":
            for label, ctype, body, extra in event_bodies(rng, doc):
                yield Call(label, method, url, {"Content-Type": ctype, **extra}, body)
        elif path.endswith("/reprocess"):
            for label, body in reprocess_bodies():
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                yield Call(f"{path_label}/{label}", method, url, {"Content-Type": "application/json"}, data)
        elif method == "get" and path == "/v1/views/{name}":
            for label, query in query_values(rng, params):
                yield Call(f"{path_label}/{label}", method, f"{url}?{urllib.parse.urlencode(query)}", {})
        else:
            yield Call(path_label, method, url, {})


# -- the walk --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str | None]]]:
    srv = ServerProcess(tmp_path_factory.mktemp("openapi"), flows=[EXAMPLES / "device_stats.py"],
                        kappa=[EXAMPLES / "word_count.py"], extra=["--auth", "tokens"])
    srv.data_dir.mkdir(parents=True)
    with TokenStore(srv.data_dir / "tokens.db") as store:
        tokens: dict[str, str | None] = {
            "none": None, "device": store.create("device", device="dev-1")[0],
            "read": store.create("read")[0], "admin": store.create("admin")[0]}
    with srv:
        yield srv, tokens


def send(srv: ServerProcess, call: Call, token: str | None, extra: dict[str, str] | None = None,
         ) -> tuple[int, str, bytes]:
    import http.client

    headers = {**call.headers, **(extra or {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        conn.request(call.method.upper(), call.path, body=call.body, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


def check(doc: dict[str, Any], op: dict[str, Any], what: str, status: int, ctype: str, raw: bytes) -> None:
    assert status < 500, f"{what}: {status} {raw[:500]!r}"
    documented = op["responses"].get(str(status))
    assert documented is not None, f"{what}: {status} is not documented ({sorted(op['responses'])}): {raw[:300]!r}"
    content = documented.get("content")
    if not content:
        return
    media = ctype.split(";")[0].strip()
    assert media in content, f"{what}: {status} answered {media}, documented {list(content)}"
    if media == "application/json":
        validate(json.loads(raw), content[media]["schema"], doc, f"{what} -> {status}")


def test_every_answer_is_documented_and_none_is_5xx(server: tuple[ServerProcess, dict[str, str | None]]) -> None:
    srv, tokens = server
    rng = random.Random(SEED)
    print(f"FLUVIAL_TEST_SEED={SEED}")
    doc = srv.get("/openapi.json")
    status, job = srv.admin("POST", "/v1/views/device_stats/batch", token=tokens["admin"])
    assert status == 202, job
    assert srv.wait_job(job["id"], token=tokens["admin"])["status"] == "done"
    seen: dict[str, Counter[int]] = {}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            statuses = seen.setdefault(f"{method.upper()} {path}", Counter())
            for call in calls_for(path, method, op, doc, rng, job["id"]):
                for who, token in tokens.items():
                    status, ctype, raw = send(srv, call, token)
                    check(doc, op, f"{method.upper()} {call.path} [{call.label}] as {who}", status, ctype, raw)
                    statuses[status] += 1
                for label, extra in [("foreign-host", {"Host": "evil.example"}),
                                     ("cross-site", {"Origin": "https://evil.example"})]:
                    status, ctype, raw = send(srv, call, tokens["admin"], extra)
                    check(doc, op, f"{method.upper()} {call.path} [{call.label}] {label}", status, ctype, raw)
                    if label == "foreign-host" or method != "get":
                        assert status == 403, (label, method, call.path, raw[:300])
    for operation, statuses in seen.items():
        print(operation, dict(sorted(statuses.items())))
        if not operation.endswith("/rollback"):  # a rollback may find no previous version: 409
            assert any(200 <= s < 300 for s in statuses), (operation, statuses)  # the valid requests succeeded
    deadline = time.monotonic() + 120
    while any(j["status"] == "running" for j in srv.get("/v1/jobs", tokens["admin"])["jobs"]):
        assert time.monotonic() < deadline, "jobs still running"
        time.sleep(0.2)
    for found in srv.get("/v1/jobs", tokens["admin"])["jobs"]:
        validate(found, {"$ref": "#/components/schemas/Job"}, doc)
    status, raw = srv.request("GET", "/healthz")
    assert status == 200, raw
    assert "Traceback" not in srv.output(), srv.output()[-3000:]


# -- what schemathesis found (tests/integration/test_schemathesis.py) -----------------------------------------------


def test_the_document_describes_the_registered_kinds(server: tuple[ServerProcess, dict[str, str | None]]) -> None:
    """An event of an unregistered kind, or whose payload breaks its kind's schema, breaks the document too."""
    srv, _ = server
    event = srv.get("/openapi.json")["components"]["schemas"]["Event"]
    assert sorted(option["properties"]["kind"]["const"] for option in event["oneOf"]) == ["line", "reading", "tweet"]
    reading = next(o for o in event["oneOf"] if o["properties"]["kind"]["const"] == "reading")
    assert reading["properties"]["payload"]["required"] == ["kind", "value"]


def test_whole_floats_are_integers_in_the_envelope(server: tuple[ServerProcess, dict[str, str | None]]) -> None:
    """JSON (and JSON Schema) does not tell 455.0 from 455: a whole ``ts`` or ``seq`` is that integer."""
    srv, tokens = server
    seq = 10**12 + SEED
    whole = {"device": "dev-1", "kind": "reading", "ts": 1_700_000_000_000.0, "seq": float(seq),
             "payload": {"kind": "temp", "value": 20.0}}
    status, body = srv.post_events([whole], token=tokens["device"])
    assert (status, body["accepted"]) == (200, 1), body
    status, body = srv.post_events([{**whole, "ts": 1_700_000_000_000, "seq": seq}], token=tokens["device"])
    assert (status, body["accepted"], body["duplicates"]) == (200, 0, 1), body  # the same event
    status, body = srv.post_events([{**whole, "seq": seq + 0.5}], token=tokens["device"])
    assert status == 422 and body["rejected"][0]["reason"] == "$.seq: expected int, got float", body


@pytest.mark.parametrize("route", ["batch", "reprocess", "rollback"])
def test_admin_routes_answer_404_for_an_unknown_view(server: tuple[ServerProcess, dict[str, str | None]],
                                                      route: str) -> None:
    """Reprocess and rollback answered 400 ("no flow of this server writes view"), batch 404."""
    srv, tokens = server
    status, body = srv.admin("POST", f"/v1/views/nope/{route}", token=tokens["admin"])
    assert (status, body["status"]) == (404, 404) and "nope" in body["error"], body


@pytest.mark.parametrize("start", ["", "yesterday", -1, 2**63, 1.5, "9:0", "0:99999999999"])
def test_a_bad_reprocessing_start_is_400_and_starts_no_job(server: tuple[ServerProcess, dict[str, str | None]],
                                                           start: Any) -> None:
    """It was a 202 with a job that failed a moment later."""
    srv, tokens = server
    jobs = len(srv.get("/v1/jobs", tokens["admin"])["jobs"])
    status, body = srv.admin("POST", "/v1/views/device_stats/reprocess", {"from": start, "dry_run": True},
                             tokens["admin"])
    assert status == 400 and ("from" in body["error"]), body
    assert len(srv.get("/v1/jobs", tokens["admin"])["jobs"]) == jobs


def test_a_whole_float_reprocessing_start_is_an_offset(server: tuple[ServerProcess, dict[str, str | None]]) -> None:
    srv, tokens = server
    status, job = srv.admin("POST", "/v1/views/device_stats/reprocess", {"from": 0.0, "dry_run": True, "flow": None},
                            tokens["admin"])
    assert status == 202, job
    assert srv.wait_job(job["id"], token=tokens["admin"])["status"] == "done"


def test_a_version_the_view_does_not_have_is_404(server: tuple[ServerProcess, dict[str, str | None]]) -> None:
    srv, tokens = server
    status, raw = srv.request("GET", f"/v1/views/device_stats?version={INT64_MAX}",
                              headers={"Authorization": f"Bearer {tokens['read']}"})
    assert status == 404 and f"has no version {INT64_MAX}" in json.loads(raw)["error"], raw


@pytest.mark.parametrize("query", ["version=%205", "version=1_0", "version=%D9%A3", "from=%205", "from=1_000",
                                   "to=%D9%A3", "from="])
def test_numbers_in_a_query_are_ascii_digits(server: tuple[ServerProcess, dict[str, str | None]], query: str) -> None:
    """int() takes spaces, '_' and the digits of other scripts; the document's integers do not."""
    srv, tokens = server
    status, raw = srv.request("GET", f"/v1/views/device_stats?{query}",
                              headers={"Authorization": f"Bearer {tokens['read']}"})
    assert status == 400 and json.loads(raw)["error"].startswith("bad query parameter"), raw


def test_every_key_text_is_a_key(server: tuple[ServerProcess, dict[str, str | None]]) -> None:
    """``key`` is JSON when a view key can be that value, else its text: the words NaN, Infinity, 1e400 or
    {"a":1} of word_counts were a 400 (Python's json reads NaN; an object cannot be a key)."""
    srv, tokens = server
    words = ["NaN", "Infinity", "1e400", '{"a":1}', "[1,{}]", "7"]
    line = {"device": "dev-1", "kind": "line", "ts": 1_700_000_000_000, "seq": 2 * 10**12 + SEED,
            "payload": {"text": " ".join(words)}}
    assert srv.post_events([line], token=tokens["device"])[0] == 200
    srv.wait_caught_up(token=tokens["admin"])
    for word in [*words[:-1], '"7"']:
        rows = srv.get(f"/v1/views/word_counts?key={urllib.parse.quote(word)}", tokens["read"])["rows"]
        assert [row["key"] for row in rows] == [word.strip('"')], (word, rows)
    assert srv.get("/v1/views/word_counts?key=7", tokens["read"])["rows"] == []  # the number 7: no such key
