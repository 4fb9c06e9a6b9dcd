"""HTTPS: ``fluvial serve --tls-cert FILE --tls-key FILE`` (or ``[server] tls_cert/tls_key``), real processes.

Certificates are made by the ``openssl`` command in each test (self-signed, for
127.0.0.1 and localhost). Without ``openssl`` the tests skip, and fail under
``FLUVIAL_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_proc import ServerProcess, free_port

pytestmark = pytest.mark.services

SEED = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))
REQUIRE_SERVICES = os.environ.get("FLUVIAL_REQUIRE_SERVICES") == "1"
FLOW = '''
import fluvial as fl
wc = fl.Pipeline("wc")
wc.from_log("line").flat_map(lambda e: e.payload["text"].split()).map(lambda w: (w, 1)) \\
    .reduce_by_key(lambda a, b: a + b).to_view("words")
'''


def openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        if REQUIRE_SERVICES:
            pytest.fail("the openssl command is needed to make test certificates (FLUVIAL_REQUIRE_SERVICES=1)")
        pytest.skip("no openssl command to make a self-signed test certificate")
    run = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr


def make_cert(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (EC P-256, unencrypted)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    return cert, key


class TlsServer(ServerProcess):
    """A ServerProcess spoken to over HTTPS, trusting ``cert`` only."""

    def __init__(self, tmp_path: Path, cert: Path, **kw: Any) -> None:
        super().__init__(tmp_path, **kw)
        self.context = ssl.create_default_context(cafile=str(cert))
        self.url = self.url.replace("http://", "https://")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 30) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self.context)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def plain_http_fails(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
    except (http.client.HTTPException, OSError):
        return True
    finally:
        conn.close()
    return response.status >= 400  # some TLS stacks answer plain HTTP with an error status


def untrusted_https_fails(port: int) -> bool:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ssl.create_default_context())
    try:
        conn.request("GET", "/healthz")
        conn.getresponse().read()
    except ssl.SSLCertVerificationError:
        return True
    finally:
        conn.close()
    return False


def words(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choices(["iot", "edge", "spark", "a"], k=rng.randint(1, 5))) for _ in range(n)]


def test_https_with_the_flags(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    print(f"FLUVIAL_TEST_SEED={SEED}")
    cert, key = make_cert(tmp_path / "tls")
    (tmp_path / "wc.py").write_text(FLOW)
    srv = TlsServer(tmp_path, cert, flows=[tmp_path / "wc.py"], extra=["--tls-cert", str(cert), "--tls-key", str(key)])
    lines = words(rng, 200)
    events = [{"device": "d", "kind": "line", "ts": i, "seq": i, "payload": {"text": t}} for i, t in enumerate(lines)]
    with srv:
        assert srv.post_events(events) == (200, {"accepted": len(events), "duplicates": 0, "rejected": []})
        srv.wait_caught_up()
        got = {r["key"]: r["value"] for r in srv.get("/v1/views/words")["rows"]}
        assert got == dict(Counter(w for line in lines for w in line.split()))
        assert plain_http_fails(srv.port)
        assert untrusted_https_fails(srv.port)  # it is this certificate the server presents
        assert f"fluvial serving on https://127.0.0.1:{srv.port}" in srv.output()
        assert json.loads((srv.data_dir / "server.json").read_text())["url"] == f"https://127.0.0.1:{srv.port}"
        cli = [sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(srv.data_dir), "batch", "words"]
        env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
        run = subprocess.run(cli, capture_output=True, text=True, timeout=120, check=False, env=env)
        assert run.returncode == 1 and "cannot trust the certificate of https://" in run.stderr, run.stderr
        run = subprocess.run(cli, capture_output=True, text=True, timeout=120, check=False,
                             env={**env, "SSL_CERT_FILE": str(cert)})
        assert run.returncode == 0 and f"{len(events)} records" in run.stdout, run.stderr


def test_https_from_the_config_file(tmp_path: Path) -> None:
    make_cert(tmp_path / "tls")
    (tmp_path / "wc.py").write_text(FLOW)
    config = '[server]\ntls_cert = "tls/server.pem"\ntls_key = "tls/server.key"\n'
    with TlsServer(tmp_path, tmp_path / "tls" / "server.pem", flows=[tmp_path / "wc.py"], config=config) as srv:
        assert srv.get("/v1/views")["views"] is not None
        assert plain_http_fails(srv.port)


def bad_files(tmp_path: Path) -> list[tuple[str, list[str], str]]:
    """(case, flags, what the error says) for TLS files that must stop the start."""
    cert, key = make_cert(tmp_path / "tls")
    _, other_key = make_cert(tmp_path / "tls", "other")
    encrypted = tmp_path / "tls" / "encrypted.key"
    openssl("pkey", "-in", str(key), "-out", str(encrypted), "-aes256", "-passout", "pass:secret")
    junk = tmp_path / "tls" / "junk.pem"
    junk.write_text("not a certificate\n")
    return [
        ("missing-cert", ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key)],
         f"--tls-cert {tmp_path / 'nope.pem'}: no such file"),
        ("missing-key", ["--tls-cert", str(cert), "--tls-key", str(tmp_path / "nope.key")],
         f"--tls-key {tmp_path / 'nope.key'}: no such file"),
        ("directory", ["--tls-cert", str(tmp_path / "tls"), "--tls-key", str(key)], "tls: not a file"),
        ("junk-cert", ["--tls-cert", str(junk), "--tls-key", str(key)], "junk.pem: not a PEM certificate"),
        ("junk-key", ["--tls-cert", str(cert), "--tls-key", str(junk)], "junk.pem: not a PEM private key"),
        ("mismatched", ["--tls-cert", str(cert), "--tls-key", str(other_key)],
         f"--tls-key {other_key} is not the private key of the certificate --tls-cert {cert}"),
        ("encrypted", ["--tls-cert", str(cert), "--tls-key", str(encrypted)], "the key is encrypted"),
        ("cert-alone", ["--tls-cert", str(cert)], "--tls-cert needs --tls-key"),
        ("key-alone", ["--tls-key", str(key)], "--tls-key needs --tls-cert"),
    ]


def test_bad_tls_files_stop_the_start_before_binding(tmp_path: Path) -> None:
    for case, flags, error in bad_files(tmp_path):
        port = free_port()
        data = tmp_path / f"data-{case}"
        run = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(data), "serve",
                              "--port", str(port), *flags], capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 1 and error in run.stderr, (case, run.stderr)
        assert not data.exists(), case  # nothing was started
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # nothing listens there


def test_unreadable_key_file(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path / "tls")
    if os.geteuid() == 0:  # root reads files whatever their mode: a file whose read fails instead
        key, reason = Path("/proc/self/mem"), "Input/output error"
    else:
        key.chmod(0)
        reason = "Permission denied"
    run = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(tmp_path / "data"), "serve",
                          "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 1 and f"--tls-key {key}: cannot be read: {reason}" in run.stderr, run.stderr


def test_bad_tls_settings_name_the_config_file(tmp_path: Path) -> None:
    cert, _ = make_cert(tmp_path / "tls")
    _, other_key = make_cert(tmp_path / "tls", "other")
    config = tmp_path / "fluvial.toml"
    for text, error in [
        ('[server]\ntls_cert = "tls/server.pem"\n', f"{config}: [server].tls_cert is set but tls_key is not"),
        ('[server]\ntls_cert = "tls/server.pem"\ntls_key = "tls/other.key"\n',
         f"{config}: [server].tls_key {other_key} is not the private key of the certificate "
         f"{config}: [server].tls_cert {cert}"),
    ]:
        config.write_text(text)
        run = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(tmp_path / "data"),
                              "serve", "--port", "0", "--config", str(config)],
                             capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 1 and error in run.stderr, run.stderr
