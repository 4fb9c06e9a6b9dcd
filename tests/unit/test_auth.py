"""Bearer tokens: TokenStore, authorize, parse_bearer and `fluvial token`."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fluvial.cli.main import main
from fluvial.errors import ConfigError, StoreError
from fluvial.server.auth import (
    MAX_TOKEN_CHARS,
    TOKENS_FILE,
    AuthError,
    Grant,
    TokenStore,
    authorize,
    parse_bearer,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TokenStore]:
    with TokenStore(tmp_path / TOKENS_FILE) as s:
        yield s


def grant(role: str, device: str | None = None) -> Grant:
    return Grant(token_id="0badcafe", role=role, device=device, note="", created_ms=0)  # type: ignore[arg-type]


# -- TokenStore ----------------------------------------------------------------------


def test_create_verify_revoke(store: TokenStore) -> None:
    token, g = store.create("device", device="dev-1", note="greenhouse")
    prefix, token_id, secret = token.split("_", 2)
    assert (prefix, token_id) == ("flv", g.token_id)
    assert len(token_id) == 8 and int(token_id, 16) >= 0
    assert len(secret) >= 43
    assert (g.role, g.device, g.note, g.revoked_ms) == ("device", "dev-1", "greenhouse", None)
    assert abs(g.created_ms - time.time() * 1000) < 60_000
    assert store.verify(token) == g
    assert store.list() == [g]

    assert store.revoke(g.token_id) is True
    assert store.verify(token) is None  # the revoking object drops its cache at once
    assert store.revoke(g.token_id) is False
    assert store.list() == []
    (revoked,) = store.list(include_revoked=True)
    assert revoked.token_id == g.token_id and revoked.revoked_ms is not None


def test_roles_and_devices(store: TokenStore) -> None:
    read, rg = store.create("read")
    admin, ag = store.create("admin", note="ops")
    assert (rg.role, rg.device, ag.role, ag.note) == ("read", None, "admin", "ops")
    assert store.verify(read) == rg and store.verify(admin) == ag
    assert len({rg.token_id, ag.token_id}) == 2
    # oldest first; tokens made in the same millisecond come in token-id order
    assert [g.token_id for g in store.list()] == [g.token_id for g in sorted(
        [rg, ag], key=lambda g: (g.created_ms, g.token_id))]

    with pytest.raises(ConfigError, match="needs the id of its device"):
        store.create("device")
    with pytest.raises(ConfigError, match="not tied to a device"):
        store.create("read", device="dev-1")
    with pytest.raises(ConfigError, match="unknown token role"):
        store.create("root")  # type: ignore[arg-type]
    for bad, why in [("", "empty"), ("d" * 257, "257 characters"), ("dev\n1", "U\\+000A"),
                     ("dev\x001", "U\\+0000"), ("dev\x7f", "U\\+007F")]:
        with pytest.raises(ConfigError, match=why):
            store.create("device", device=bad)
    assert store.create("device", device="d" * 256)[1].device == "d" * 256
    assert store.create("device", device="capteur-é")[1].device == "capteur-é"
    with pytest.raises(ConfigError, match="control characters"):
        store.create("read", note="a\x1b[31m")


def test_forged_and_garbage_tokens_are_refused(store: TokenStore) -> None:
    token, g = store.create("admin")
    forged = f"flv_{g.token_id}_{'A' * 43}"
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    garbage = ["", "flv_", "flv__", f"flv_{g.token_id}_", "xyz" + token[3:], token.upper(),
               "Bearer " + token, token + "\n", " " + token, token + "=", forged, flipped,
               token[:-1], "x" * 10_240, token + "x" * (MAX_TOKEN_CHARS - len(token) + 1),
               "flv_" + "é" * 8 + "_" + "a" * 43, token[:-2] + "é", token[:10] + "\x00" + token[11:],
               token + "\x00", "\x00" * 64, "flv_\ud800\udfff_abc", "\U0001f600" * 60]
    for bad in garbage:
        assert store.verify(bad) is None, repr(bad)
    for not_str in [None, b"flv_", 42]:
        assert store.verify(not_str) is None  # type: ignore[arg-type]
    assert store.verify(token) == g
    assert store.revoke("nothex!!") is False and store.revoke("") is False
    assert store.revoke("x" * 10_000) is False and store.revoke(token) is False


def test_the_file_holds_no_token(tmp_path: Path) -> None:
    path = tmp_path / TOKENS_FILE
    reader = TokenStore(path)  # keeps the WAL from being checkpointed away on close
    with TokenStore(path) as s:
        tokens = [s.create("device", device=f"dev-{i}")[0] for i in range(5)]
        tokens.append(s.create("admin")[0])
        for token in tokens:
            assert s.verify(token) is not None
        wal = Path(f"{path}-wal")
        assert wal.exists() and wal.stat().st_size > 0
        raw = path.read_bytes() + wal.read_bytes()
        for token in tokens:
            secret = token.split("_", 2)[2]
            assert secret.encode() not in raw
            assert token.encode() not in raw
            assert token.split("_")[1].encode() in raw  # the id is kept
    reader.close()
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0


def test_two_stores_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / TOKENS_FILE
    with TokenStore(path) as cli, TokenStore(path, cache_ttl_ms=60_000) as cached, \
            TokenStore(path, cache_ttl_ms=50) as short, TokenStore(path, cache_ttl_ms=0) as uncached:
        token, g = cli.create("device", device="dev-1")
        for server in (cached, short, uncached):  # a token created elsewhere is seen at once
            assert server.verify(token) == g
        assert cli.revoke(g.token_id)
        assert uncached.verify(token) is None
        assert cached.verify(token) is None  # a revocation by another process applies at once, cache or not
        assert short.verify(token) is None
        assert [x.token_id for x in short.list(include_revoked=True)] == [g.token_id]


def test_bad_options_and_closed_store(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cache_ttl_ms"):
        TokenStore(tmp_path / TOKENS_FILE, cache_ttl_ms=-1)
    s = TokenStore(tmp_path / TOKENS_FILE)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.verify("flv_0badcafe_" + "a" * 43)


# -- authorize ------------------------------------------------------------------------

ALLOWED = {
    ("admin", "ingest"), ("admin", "query"), ("admin", "admin"),
    ("read", "query"),
    ("device", "ingest"),
}
REFUSED = {
    ("read", "ingest"): "read token cannot post events",
    ("read", "admin"): "read token cannot run admin actions",
    ("device", "query"): "device token cannot query views",
    ("device", "admin"): "device token cannot run admin actions",
}


@pytest.mark.parametrize("role", ["device", "read", "admin"])
@pytest.mark.parametrize("action", ["ingest", "query", "admin"])
def test_authorize_matrix(role: str, action: str) -> None:
    g = grant(role, "dev-1" if role == "device" else None)
    devices = ["dev-1", "dev-1"] if action == "ingest" else ()
    if (role, action) in ALLOWED:
        assert authorize(g, action, devices=devices) is None  # type: ignore[arg-type]
    else:
        with pytest.raises(AuthError) as info:
            authorize(g, action, devices=devices)  # type: ignore[arg-type]
        assert info.value.status == 403
        assert REFUSED[role, action] in info.value.reason
    with pytest.raises(AuthError) as info:
        authorize(None, action)  # type: ignore[arg-type]
    assert info.value.status == 401 and "bearer token" in str(info.value)


def test_authorize_device_mismatch() -> None:
    g = grant("device", "dev-1")
    with pytest.raises(AuthError) as info:
        authorize(g, "ingest", devices=iter(["dev-1", "dev-1", "dev-1", "dev-2", "dev-3"]))
    assert info.value.status == 403
    assert info.value.reason == "device token for 'dev-1' cannot write events of device 'dev-2' (event 3)"
    authorize(g, "ingest")  # no events: nothing to refuse
    authorize(grant("admin"), "ingest", devices=["dev-7", "dev-8"])
    with pytest.raises(ConfigError, match="unknown action"):
        authorize(g, "delete")  # type: ignore[arg-type]


# -- parse_bearer ---------------------------------------------------------------------


@pytest.mark.parametrize(("header", "expected"), [
    ("Bearer flv_0badcafe_abc-_x", "flv_0badcafe_abc-_x"),
    ("bearer tok", "tok"),
    ("BEARER tok", "tok"),
    ("  Bearer   tok  ", "tok"),
    ("Bearer dG9rZW4=", "dG9rZW4="),
    (None, None),
    ("", None),
    ("Bearer", None),
    ("Bearer ", None),
    ("Basic dXNlcjpwYXNz", None),
    ("Token tok", None),
    ("Bearertok", None),
    ("Bearer tok extra", None),
    ("Bearer tok,Bearer tok2", None),
    ("Bearer t\x00k", None),
    ("Bearer tök", None),
    ("Bearer\ttok", None),
    ("Bearer " + "a" * 10_240, None),
    (b"Bearer tok", None),
])
def test_parse_bearer(header: str | None, expected: str | None) -> None:
    assert parse_bearer(header) == expected


# -- fluvial token ----------------------------------------------------------------------


def test_cli_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "new" / "home"
    assert main(["token", "create", "--device", "dev-1", "--note", "sensor 1", "--data-dir", str(home)]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert out == token + "\n"
    assert "shown only once" in err and err.count("\n") == 1
    assert main(["token", "create", "--read", "--data-dir", str(home)]) == 0
    read_token = capsys.readouterr().out.strip()

    with TokenStore(home / TOKENS_FILE) as s:
        g = s.verify(token)
        assert g is not None and (g.role, g.device, g.note) == ("device", "dev-1", "sensor 1")
        assert token.split("_")[1] in err
        assert s.verify(read_token).role == "read"  # type: ignore[union-attr]

    assert main(["token", "list", "--data-dir", str(home)]) == 0
    out = capsys.readouterr().out
    assert out.split("\n")[0].split() == ["ID", "ROLE", "DEVICE", "NOTE", "CREATED"]
    assert g.token_id in out and "dev-1" in out and "sensor 1" in out and "read" in out
    assert token.split("_", 2)[2] not in out

    assert main(["token", "revoke", g.token_id, "--data-dir", str(home)]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["token", "revoke", g.token_id, "--data-dir", str(home)]) == 0
    assert "already revoked" in capsys.readouterr().out
    assert main(["token", "revoke", "00000000", "--data-dir", str(home)]) == 1
    assert "no token with id '00000000'" in capsys.readouterr().err

    assert main(["token", "list", "--format", "json", "--data-dir", str(home)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["role"] for r in rows] == ["read"]
    assert set(rows[0]) >= {"token_id", "role", "device", "note", "created_ms"}
    assert main(["token", "list", "--all", "--format", "json", "--data-dir", str(home)]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["token", "list", "--all", "--data-dir", str(home)]) == 0
    assert "REVOKED" in capsys.readouterr().out


def test_cli_empty_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "list", "--data-dir", str(tmp_path)]) == 0
    assert "no tokens" in capsys.readouterr().out
    assert main(["token", "list", "--format", "json", "--data-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize("flags", [[], ["--read", "--admin"], ["--device", "dev-1", "--read"],
                                   ["--admin", "--device", "dev-1"]])
def test_cli_create_needs_exactly_one_role(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           flags: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["token", "create", *flags, "--data-dir", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--device" in err and ("not allowed with" in err or "required" in err)
    assert not (tmp_path / TOKENS_FILE).exists()


@pytest.mark.parametrize(("device", "why"), [("", "device id is empty"), ("a\tb", "control characters"),
                                             ("x" * 300, "at most 256")])
def test_cli_create_refuses_bad_device(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       device: str, why: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["token", "create", "--device", device, "--data-dir", str(tmp_path)])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and why in err and "--device" in err


def test_cli_help_lists_the_group(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "bearer tokens" in capsys.readouterr().out
