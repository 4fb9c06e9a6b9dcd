"""Security of a real ``fluvial serve`` on loopback (issue 16, defect 11).

* reprocessing loads flow files only from the flow directories (or the served flow
  files): a file elsewhere, a symlink or ``..`` leading out, a file that is not
  ``.py`` is a 403 and its code never runs (a marker file it would write stays absent);
* Host and Origin checks: a name that is not the server's (DNS rebinding) is refused
  on every request; a state-changing request from another origin (CSRF) is refused
  and writes nothing; curl-like requests without these headers keep working;
* tokens: an expired one is 401 "token expired"; a revocation applies to the very
  next request;
* no internal paths or error texts to callers who are not admins: 404 bodies,
  ``/healthz``, ``/v1/views``, jobs, pipelines and the 500 handler.

Servers are real child processes (``server_proc.ServerProcess``); what the log holds
afterwards is read back from the data directory.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fluvial.api.disclosure import LAST_ERROR_HIDDEN
from fluvial.log import LocalLog
from fluvial.server.auth import UNAUTHENTICATED, TokenStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_proc import ServerProcess

pytestmark = pytest.mark.services

SEED = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))
WORDS = ["Spark", "spark", "Kafka", "IoT", "iot", "edge", "a", "of"]
OLD_FLOW = '''
import fluvial as fl
wc = fl.Pipeline("wc")
(wc.from_log("line").flat_map(lambda e: e.payload["text"].split())
   .map(lambda w: (w, 1)).reduce_by_key(lambda a, b: a + b).to_view("words"))
'''
NEW_FLOW = OLD_FLOW.replace('e.payload["text"].split()', '[w.lower() for w in e.payload["text"].split()]')
EVIL = '''
from pathlib import Path
Path(__file__).with_suffix(".ran").write_text("the server imported me")
import fluvial as fl
wc = fl.Pipeline("wc")
wc.from_log("line").map(lambda e: ("pwned", 1)).reduce_by_key(lambda a, b: a + b).to_view("words")
'''
FRAGILE = '''
import fluvial as fl
def parse(e):
    if e.payload["text"] == "boom":
        raise ValueError("cannot parse boom in /srv/secret/parsers/boom.cfg")
    return (e.payload["text"], 1)
p = fl.Pipeline("fragile")
p.from_log("line").map(parse).reduce_by_key(lambda a, b: a + b).to_view("fragile")
'''
COMPLEX = '''
import fluvial as fl
p = fl.Pipeline("cplx")  # values the JSON API cannot encode: a bug in the server's answer, on purpose
p.from_log("line").map(lambda e: (e.payload["text"], complex(1, 1))).reduce_by_key(lambda a, b: a + b).to_view("cplx")
'''


def lines_of(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 6))) for _ in range(n)]


def line_events(lines: list[str], device: str = "d", first_seq: int = 0) -> list[dict[str, Any]]:
    return [{"device": device, "kind": "line", "ts": 1_000 * (first_seq + i), "seq": first_seq + i,
             "payload": {"text": t}} for i, t in enumerate(lines)]


def log_size(srv: ServerProcess) -> int:
    log = LocalLog.open(srv.data_dir / "log", readonly=True)
    try:
        return sum(log.end_offsets())
    finally:
        log.close()


def call(srv: ServerProcess, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
         token: str | None = None) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    status, raw = srv.request(method, path, data, sent)
    return status, json.loads(raw)


def fluvial(*args: Any, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "fluvial.cli.main", *map(str, args)], capture_output=True,
                         text=True, timeout=120, check=False)
    if check:
        assert out.returncode == 0, out.stderr + out.stdout
    return out


# -- 1. reprocessing loads code only from the flow directories ---------------------------------------------


@dataclass(frozen=True)
class Flows:
    srv: ServerProcess
    root: Path      # the test's folder
    flows: Path     # the flow directory (the served flow's folder)
    outside: Path   # a folder beside it
    lines: list[str]


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flows]:
    root = tmp_path_factory.mktemp("flows")
    (root / "flows").mkdir()
    (root / "outside").mkdir()
    (root / "flows" / "wc.py").write_text(OLD_FLOW)
    (root / "flows" / "wc2.py").write_text(NEW_FLOW)
    (root / "outside" / "evil.py").write_text(EVIL)
    (root / "flows" / "notes.txt").write_text(EVIL)
    (root / "flows" / "link.py").symlink_to(root / "outside" / "evil.py")
    (root / "flows" / "text.py").symlink_to(root / "flows" / "notes.txt")
    (root / "flows" / "away").symlink_to(root / "outside", target_is_directory=True)
    rng = random.Random(SEED)
    print(f"FLUVIAL_TEST_SEED={SEED}")
    lines = lines_of(rng, 150)
    srv = ServerProcess(root, flows=[root / "flows" / "wc.py"])
    with srv:
        assert srv.post_events(line_events(lines))[0] == 200
        srv.wait_caught_up()
        yield Flows(srv, root, root / "flows", root / "outside", lines)


def evil_ran(f: Flows) -> bool:
    return any(p.suffix == ".ran" for p in f.root.rglob("*"))


def refused_paths(f: Flows) -> list[tuple[str, str]]:
    """(the request's flow, what the 403 says) for every way out of the flow directory."""
    return [
        (str(f.outside / "evil.py"), "is outside the flow directories of this server"),
        (str(f.flows / ".." / "outside" / "evil.py"), "is outside the flow directories"),
        ("../outside/evil.py", "is outside the flow directories"),
        (str(f.flows / "link.py"), f"(it resolves to {f.outside / 'evil.py'}) is outside"),
        (str(f.flows / "away" / "evil.py"), "is outside the flow directories"),
        (str(f.flows / "notes.txt"), "notes.txt' is not a Python file (.py)"),
        (str(f.flows / "text.py"), f"(it resolves to {f.flows / 'notes.txt'}) is not a Python file (.py)"),
        (str(f.flows), "is outside the flow directories"),  # the directory itself is not inside it
        ("/etc/passwd", "is outside the flow directories"),
        (str(f.root / "fluvial.toml"), "is outside the flow directories"),
    ]


def test_reprocess_refuses_flow_files_outside_the_flow_directories(flows: Flows) -> None:
    """Before the fix every one of these was imported by the server (202, and evil.py ran)."""
    jobs = len(call(flows.srv, "GET", "/v1/jobs")[1]["jobs"])
    for given, reason in refused_paths(flows):
        status, body = call(flows.srv, "POST", "/v1/views/words/reprocess", {"flow": given, "dry_run": True})
        assert (status, body["status"]) == (403, 403), (given, body)
        assert reason in body["error"], (given, body)
        assert ("[server] flow_dirs" in body["error"]) is ("outside" in reason), (given, body)
        assert str(flows.flows.resolve()) in body["error"]  # the caller is an admin (auth off): details
        assert not evil_ran(flows), given
    assert len(call(flows.srv, "GET", "/v1/jobs")[1]["jobs"]) == jobs  # no job was started


@pytest.mark.parametrize(("body", "error"), [
    ({"flow": 42}, "flow must be the path of a flow file (.py) on the server, got 42"),
    ({"flow": ""}, "flow must be the path of a flow file"),
    ({"flow": "missing.py"}, "no flow file at "),
    ({"flow": "wc2.py", "grace_s": "soon"}, "grace_s must be a number of seconds"),
    ({"flow": "wc2.py", "dry_run": "yes"}, "dry_run must be true or false"),
    ({"flow": "wc2.py", "from": ["earliest"]}, "from must be a string"),
    ({"flows": "wc2.py"}, "the body must be a JSON object with keys among"),
    ([1, 2], "the body must be a JSON object with keys among"),
])
def test_reprocess_bodies_that_are_400(flows: Flows, body: Any, error: str) -> None:
    status, answer = call(flows.srv, "POST", "/v1/views/words/reprocess", body)
    assert (status, answer["status"]) == (400, 400) and error in answer["error"], answer


def test_a_deeply_nested_body_is_400_not_500(flows: Flows) -> None:
    status, answer = call(flows.srv, "POST", "/v1/views/words/reprocess", b"[" * 100_000)
    assert status == 400 and "nested too deeply" in answer["error"], answer


@pytest.mark.parametrize("how", ["absolute", "relative", "dotted-inside"])
def test_reprocess_takes_flow_files_inside_the_flow_directory(flows: Flows, how: str) -> None:
    given = {"absolute": str(flows.flows / "wc2.py"), "relative": "wc2.py",
             "dotted-inside": str(flows.flows / "sub" / ".." / "wc2.py")}[how]
    status, job = call(flows.srv, "POST", "/v1/views/words/reprocess", {"flow": given, "dry_run": True})
    assert status == 202, job
    done = flows.srv.wait_job(job["id"])
    assert done["status"] == "done", done
    old = Counter(w for line in flows.lines for w in line.split())
    new = Counter(w.lower() for line in flows.lines for w in line.split())
    diff = done["result"]["diff"]["words"]
    assert (diff["old_rows"], diff["new_rows"]) == (len(old), len(new))
    assert diff["removed"] == len(set(old) - set(new))


def test_configured_flow_dirs_replace_the_default(tmp_path: Path) -> None:
    """``[server] flow_dirs``: files there may be loaded; beside the served flow only the served file."""
    (tmp_path / "served").mkdir()
    (tmp_path / "v2").mkdir()
    (tmp_path / "served" / "wc.py").write_text(OLD_FLOW)
    (tmp_path / "served" / "wc2.py").write_text(NEW_FLOW)
    (tmp_path / "v2" / "wc2.py").write_text(NEW_FLOW)
    with ServerProcess(tmp_path, flows=[tmp_path / "served" / "wc.py"],
                       config='[server]\nflow_dirs = ["v2"]\n') as srv:
        assert srv.post_events(line_events(["a b", "b c"]))[0] == 200
        status, body = call(srv, "POST", "/v1/views/words/reprocess", {"flow": str(tmp_path / "served" / "wc2.py")})
        assert status == 403 and f"({(tmp_path / 'v2').resolve()})" in body["error"], body
        for allowed in (str(tmp_path / "v2" / "wc2.py"), str(tmp_path / "served" / "wc.py")):
            status, job = call(srv, "POST", "/v1/views/words/reprocess", {"flow": allowed, "dry_run": True})
            assert status == 202, job
            assert srv.wait_job(job["id"])["status"] == "done"


def test_the_cli_reprocesses_through_the_server_inside_the_flow_directory_only(flows: Flows) -> None:
    data = flows.srv.data_dir
    out = fluvial("--data-dir", data, "reprocess", "words", "--flow", flows.outside / "evil.py", check=False)
    assert out.returncode == 1 and ": 403 flow file " in out.stderr and "is outside the flow" in out.stderr
    assert not evil_ran(flows)
    out = fluvial("--data-dir", data, "reprocess", "words", "--flow", flows.flows / "wc2.py", "--dry-run")
    assert "dry run: nothing switched" in out.stdout


# -- 2. Host and Origin ---------------------------------------------------------------------------------------------

CONFIG = '[server]\nallowed_hosts = ["fluvial.test", ".iot.test"]\nallowed_origins = ["https://dash.test"]\n'


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("web")
    (root / "wc.py").write_text(OLD_FLOW)
    with ServerProcess(root, flows=[root / "wc.py"], config=CONFIG) as srv:
        yield srv


def host_cases(port: int, rng: random.Random) -> list[tuple[str, bool]]:
    """(Host header, allowed?) from pools whose answer is known by construction, with random ports."""
    allowed = ["127.0.0.1", "localhost", "LOCALHOST", "localhost.", "app.localhost", "[::1]", "10.9.8.7",
               "[2001:db8::1]", "fluvial.test", "FLUVIAL.TEST", "iot.test", "a.iot.test", "b.a.iot.test"]
    refused = ["evil.example", "fluvial.test.evil.example", "xiot.test", "localhost.evil.example",
               "127.0.0.1.nip.io", "test", "iot.test.example", "[evil]", "evil.example."]
    cases = [(name + rng.choice(["", f":{port}", ":80"]), ok)
             for name, ok in [*((h, True) for h in allowed), *((h, False) for h in refused)]]
    cases += [("fluvial.test:x", False), ("fluvial.test:", False), ("[::1]x", False)]  # malformed
    rng.shuffle(cases)
    return cases


def test_the_host_check_against_the_pools(web: ServerProcess) -> None:
    rng = random.Random(SEED)
    print(f"FLUVIAL_TEST_SEED={SEED}")
    for host, ok in host_cases(web.port, rng):
        for method, path, body in [("GET", "/v1/views", None), ("GET", "/healthz", None),
                                   ("POST", "/v1/events", b"[]")]:
            status, answer = call(web, method, path, body, headers={"Host": host})
            if ok:
                assert status == 200, (host, method, path, answer)
            else:
                assert status == 403 and answer["error"].startswith(f"Host {host!r} is not a name of this server"), (
                    host, answer)
                assert "[server] allowed_hosts" in answer["error"]


def origin_cases(port: int) -> list[tuple[dict[str, str], bool]]:
    own = f"http://127.0.0.1:{port}"
    return [
        ({}, True),                                                     # curl, devices, the CLI
        ({"Origin": own}, True),
        ({"Origin": own, "Sec-Fetch-Site": "same-origin"}, True),
        ({"Sec-Fetch-Site": "none"}, True),                             # typed by the user
        ({"Origin": "https://dash.test"}, True),                        # allowed_origins
        ({"Origin": "https://dash.test", "Sec-Fetch-Site": "cross-site"}, True),
        ({"Origin": "https://evil.example"}, False),
        ({"Origin": "null"}, False),                                    # sandboxed frames, file:// pages
        ({"Origin": f"http://localhost:{port + 1 if port < 65535 else 1}"}, False),  # another local web app
        ({"Origin": f"https://127.0.0.1:{port}"}, False),               # another scheme is another origin
        ({"Origin": "http://dash.test"}, False),
        ({"Sec-Fetch-Site": "cross-site"}, False),
        ({"Sec-Fetch-Site": "same-site"}, False),
        ({"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"}, False),
    ]


def test_cross_site_requests_write_nothing(web: ServerProcess) -> None:
    """A web page posting events as a form would (text/plain, no preflight) or starting a batch run."""
    for n, (headers, ok) in enumerate(origin_cases(web.port)):
        before = log_size(web)
        body = json.dumps(line_events(["csrf probe"], device=f"csrf-{n}")).encode()
        status, answer = call(web, "POST", "/v1/events", body, headers={"Content-Type": "text/plain", **headers})
        assert (status == 200) is ok, (headers, answer)
        assert log_size(web) - before == (1 if ok else 0), headers
        if not ok:
            assert answer["error"].startswith("cross-site request refused"), answer
            jobs = len(call(web, "GET", "/v1/jobs")[1]["jobs"])
            status, answer = call(web, "POST", "/v1/views/words/batch", headers=headers)
            assert status == 403 and answer["error"].startswith("cross-site request refused"), (headers, answer)
            assert len(call(web, "GET", "/v1/jobs")[1]["jobs"]) == jobs  # no batch run started
    status, job = call(web, "POST", "/v1/views/words/batch", headers={"Origin": "https://dash.test"})
    assert status == 202 and web.wait_job(job["id"])["status"] == "done", job


def response_headers(srv: ServerProcess, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def test_reads_from_other_origins_pass_but_grant_no_cors(web: ServerProcess) -> None:
    """A page may not read the answers (no CORS headers) nor frame the UI; reads change nothing."""
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        status, got = response_headers(web, "/v1/views", headers)
        assert status == 200 and not any(k.startswith("access-control-") for k in got), got
    status, got = response_headers(web, "/ui", {})
    assert status == 200 and got["x-frame-options"] == "DENY"
    assert got["content-security-policy"] == "frame-ancestors 'none'"


# -- 3. and 4. tokens on a running server; what callers who are not admins see --------------------------------------


@dataclass(frozen=True)
class Secured:
    srv: ServerProcess
    device: str
    read: str
    admin: str


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("secured")
    (root / "wc.py").write_text(OLD_FLOW)
    srv = ServerProcess(root, flows=[root / "wc.py"], extra=["--auth", "tokens"])
    srv.data_dir.mkdir(parents=True)
    with TokenStore(srv.data_dir / "tokens.db") as store:
        device, _ = store.create("device", device="dev-1")
        read, _ = store.create("read")
        admin, _ = store.create("admin")
    with srv:
        yield Secured(srv, device, read, admin)


def test_an_expired_token_is_401_token_expired(secured: Secured) -> None:
    with TokenStore(secured.srv.data_dir / "tokens.db") as store:
        short, grant = store.create("read", expires_in_ms=2_000)
    status, body = call(secured.srv, "GET", "/v1/views", token=short)
    if time.time_ns() // 1_000_000 < grant.expires_ms:  # type: ignore[operator]
        assert status == 200, body  # answered (and its grant cached) before it expired
    while not grant.expired():
        time.sleep(0.05)
    for path in ("/v1/views", "/v1/metrics"):
        status, body = call(secured.srv, "GET", path, token=short)
        assert status == 401 and body["error"].startswith(f"token expired: token {grant.token_id} expired at "), body
    status, body = call(secured.srv, "POST", "/v1/events", line_events(["x"], device="dev-1"), token=short)
    assert status == 401 and body["error"].startswith("token expired")


def test_a_revocation_applies_to_the_very_next_request(secured: Secured) -> None:
    """Before the fix the server kept accepting a revoked token for up to 5 s."""
    data = secured.srv.data_dir
    token = fluvial("--data-dir", data, "token", "create", "--read").stdout.strip()
    token_id = token.split("_")[1]
    assert call(secured.srv, "GET", "/v1/views", token=token)[0] == 200  # verified, and cached
    fluvial("--data-dir", data, "token", "revoke", token_id)
    status, body = call(secured.srv, "GET", "/v1/views", token=token)
    assert (status, body["error"]) == (401, UNAUTHENTICATED)


def test_unknown_views_do_not_show_the_data_directory_to_read_tokens(secured: Secured) -> None:
    data = str(secured.srv.data_dir)
    status, body = call(secured.srv, "GET", "/v1/views/nope", token=secured.read)
    assert (status, body) == (404, {"error": "no view named 'nope': GET /v1/views lists the views", "status": 404})
    status, body = call(secured.srv, "GET", "/v1/views/nope", token=secured.admin)
    assert status == 404 and data in body["error"] and "existing views" in body["error"]  # admins see details
    status, body = call(secured.srv, "POST", "/v1/views/nope/batch", token=secured.admin)
    assert status == 404 and data in body["error"]


def test_pipelines_show_flow_file_names_to_read_tokens(secured: Secured) -> None:
    (read,) = call(secured.srv, "GET", "/v1/pipelines", token=secured.read)[1]["pipelines"]
    (admin,) = call(secured.srv, "GET", "/v1/pipelines", token=secured.admin)[1]["pipelines"]
    assert read["file"] == "wc.py" and admin["file"] == str((secured.srv.data_dir.parent / "wc.py").resolve())
    assert {k: v for k, v in read.items() if k != "file"} == {k: v for k, v in admin.items() if k != "file"}


def test_errors_of_a_failing_flow_are_for_admins_only(tmp_path: Path) -> None:
    (tmp_path / "fragile.py").write_text(FRAGILE)
    srv = ServerProcess(tmp_path, flows=[tmp_path / "fragile.py"], extra=["--auth", "tokens"])
    srv.data_dir.mkdir(parents=True)
    with TokenStore(srv.data_dir / "tokens.db") as store:
        tokens = {role: store.create(role, **({"device": "d"} if role == "device" else {}))[0]  # type: ignore[arg-type]
                  for role in ("device", "read", "admin")}
    secret = ("cannot parse boom", "/srv/secret", str(tmp_path))
    with srv:
        events = line_events(["fine", "fine", "boom"], device="d")
        assert srv.post_events(events, token=tokens["admin"])[0] == 200
        deadline = time.monotonic() + 30
        while srv.request("GET", "/healthz")[0] == 200:
            assert time.monotonic() < deadline, "the speed layer never failed"
            time.sleep(0.1)
        for who in (None, "device", "read"):
            status, raw = srv.request("GET", "/healthz", headers={"Authorization": f"Bearer {tokens[who]}"}
                                      if who else {})
            text = raw.decode()
            assert status == 503 and "speed layer fragile: " in text and LAST_ERROR_HIDDEN in text, (who, text)
            assert not any(s in text for s in secret), (who, text)
        status, raw = srv.request("GET", "/healthz", headers={"Authorization": f"Bearer {tokens['admin']}"})
        assert status == 503 and "ValueError: cannot parse boom in /srv/secret/parsers/boom.cfg" in raw.decode()

        (view,) = call(srv, "GET", "/v1/views", token=tokens["read"])[1]["views"]
        assert view["speed_layer"]["errors"] >= 1 and view["speed_layer"]["last_error"] == LAST_ERROR_HIDDEN
        (view,) = call(srv, "GET", "/v1/views", token=tokens["admin"])[1]["views"]
        assert "cannot parse boom" in view["speed_layer"]["last_error"]

        status, job = call(srv, "POST", "/v1/views/fragile/batch", token=tokens["admin"])
        assert status == 202, job
        done = srv.wait_job(job["id"], token=tokens["admin"])
        assert done["status"] == "failed" and "cannot parse boom" in done["error"], done
        for path in (f"/v1/jobs/{job['id']}", "/v1/jobs"):
            text = json.dumps(call(srv, "GET", path, token=tokens["read"])[1])
            assert LAST_ERROR_HIDDEN in text and not any(s in text for s in secret), text


def test_the_500_handler_tells_details_to_admins_only(tmp_path: Path) -> None:
    """A flow whose values the JSON API cannot encode (complex numbers) makes queries of its view fail."""
    (tmp_path / "cplx.py").write_text(COMPLEX)
    srv = ServerProcess(tmp_path, flows=[tmp_path / "cplx.py"], extra=["--auth", "tokens"])
    srv.data_dir.mkdir(parents=True)
    with TokenStore(srv.data_dir / "tokens.db") as store:
        read, _ = store.create("read")
        admin, _ = store.create("admin")
    with srv:
        assert srv.post_events(line_events(["a", "b"]), token=admin)[0] == 200
        srv.wait_caught_up(token=read)
        status, body = call(srv, "GET", "/v1/views/cplx", token=read)
        assert status == 500 and body["error"].startswith("internal error (reference "), body
        assert "TypeError" not in body["error"] and "complex" not in body["error"]
        reference = body["error"].split("(reference ")[1].split(")")[0]
        assert f"(reference {reference})" in srv.output()  # the details are in the server log
        status, body = call(srv, "GET", "/v1/views/cplx", token=admin)
        assert status == 500 and body["error"].startswith("internal error: TypeError: ") and "complex" in body["error"]
