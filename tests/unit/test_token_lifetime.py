"""Token expiry and immediate revocation: TokenStore, the schema upgrade, `fluvial token create --expires-in`.

The servers' side (a real ``fluvial serve`` answering 401 "token expired", and
refusing a revoked token from its very next request) is in
``tests/integration/test_serve_security.py``.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from pathlib import Path

import pytest

from fluvial.cli.main import main
from fluvial.cli.token import parse_duration_ms
from fluvial.errors import ConfigError
from fluvial.server.auth import MAX_TTL_MS, TOKENS_FILE, UNAUTHENTICATED, AuthError, TokenStore

SEED = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))
UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def test_an_expired_token_is_refused_with_its_own_reason(tmp_path: Path) -> None:
    with TokenStore(tmp_path / TOKENS_FILE) as store:
        lasting, lg = store.create("read", expires_in_ms=30 * 86_400_000)
        brief, bg = store.create("admin", expires_in_ms=1)
        forever, fg = store.create("device", device="dev-1")
        assert lg.expires_ms == lg.created_ms + 30 * 86_400_000 and fg.expires_ms is None
        while time.time_ns() // 1_000_000 <= bg.expires_ms:  # type: ignore[operator]
            time.sleep(0.001)
        assert store.verify(lasting) == lg and store.authenticate(lasting) == lg
        assert store.verify(forever) == fg
        assert store.verify(brief) is None
        with pytest.raises(AuthError) as info:
            store.authenticate(brief)
        assert info.value.status == 401
        assert info.value.reason.startswith(f"token expired: token {bg.token_id} expired at ")
        for unknown in (None, "", "flv_0badcafe_" + "A" * 43):
            with pytest.raises(AuthError) as info:
                store.authenticate(unknown)
            assert (info.value.status, info.value.reason) == (401, UNAUTHENTICATED)
        assert {g.token_id for g in store.list()} == {lg.token_id, bg.token_id, fg.token_id}  # listed until revoked


def test_a_cached_grant_expires_on_time(tmp_path: Path) -> None:
    with TokenStore(tmp_path / TOKENS_FILE, cache_ttl_ms=3_600_000) as store:
        token, grant = store.create("read", expires_in_ms=300)
        if store.verify(token) is None:  # this machine took 300 ms for one call: nothing to cache
            assert grant.expired()
        while not grant.expired():
            time.sleep(0.01)
        assert store.verify(token) is None  # the hour-long cache does not extend its life


@pytest.mark.parametrize("ttl", [0, -1, MAX_TTL_MS + 1, 1.5, True, "30d"])
def test_lifetimes_that_are_refused(tmp_path: Path, ttl: object) -> None:
    with TokenStore(tmp_path / TOKENS_FILE) as store:
        with pytest.raises(ConfigError, match="lifetime"):
            store.create("read", expires_in_ms=ttl)  # type: ignore[arg-type]
        assert store.list(include_revoked=True) == []


def test_a_revocation_by_another_process_applies_to_the_next_verify(tmp_path: Path) -> None:
    """Before the fix a server's store trusted a verified grant for 5 s after its revocation."""
    path = tmp_path / TOKENS_FILE
    rng = random.Random(SEED)
    print(f"FLUVIAL_TEST_SEED={SEED}")
    with TokenStore(path) as cli, TokenStore(path) as server:  # the default cache (5 s)
        made = [cli.create("device", device=f"dev-{i}") for i in range(20)]
        for token, grant in made:
            assert server.verify(token) == grant  # cached now
        revoked = set(rng.sample(range(len(made)), 7))
        for i in sorted(revoked):
            assert cli.revoke(made[i][1].token_id)
        for i, (token, grant) in enumerate(made):  # brute force: the revoked ones, and only them
            assert server.verify(token) == (None if i in revoked else grant), i


def test_a_version_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / TOKENS_FILE
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, token_id TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
            device TEXT, note TEXT NOT NULL, created_ms INTEGER NOT NULL, revoked_ms INTEGER) WITHOUT ROWID;
        PRAGMA user_version = 1;""")
    import hashlib

    old = "flv_0badcafe_" + "B" * 43
    conn.execute("INSERT INTO tokens VALUES (?, '0badcafe', 'read', NULL, 'from v1', 1, NULL)",
                 (hashlib.sha256(old.encode()).hexdigest(),))
    conn.commit()
    conn.close()
    with TokenStore(path) as store, TokenStore(path) as second:  # a second open finds it upgraded
        grant = store.verify(old)
        assert grant is not None and (grant.note, grant.expires_ms) == ("from v1", None)
        assert second.verify(old) == grant
        new, _ = store.create("admin", expires_in_ms=60_000)
        assert second.verify(new) is not None
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    conn.close()


def test_durations_against_a_brute_force() -> None:
    rng = random.Random(SEED)
    print(f"FLUVIAL_TEST_SEED={SEED}")
    for _ in range(300):
        parts = [(rng.randint(0, 500), rng.choice("smhdw")) for _ in range(rng.randint(1, 3))]
        text = "".join(f"{n}{u}" for n, u in parts)
        expected = sum(n * UNIT_MS[u] for n, u in parts)
        if expected == 0:
            with pytest.raises(ConfigError, match="more than 0 s"):
                parse_duration_ms(text)
        else:
            assert parse_duration_ms(text) == expected, text
    for bad in ["", "30", "d", "30 days", "1.5h", "-1d", "1y", "30d junk", "9" * 13 + "s"]:
        with pytest.raises(ConfigError, match="not a duration"):
            parse_duration_ms(bad)
    with pytest.raises(ConfigError, match="at most 100 years"):
        parse_duration_ms("5300w")


def test_cli_create_with_a_lifetime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert main(["token", "create", "--read", "--expires-in", "30d", "--data-dir", str(home)]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert "valid until " in err
    assert main(["token", "create", "--admin", "--ttl", "12h", "--data-dir", str(home)]) == 0
    capsys.readouterr()
    with TokenStore(home / TOKENS_FILE) as store:
        grant = store.verify(token)
        assert grant is not None and grant.expires_ms == grant.created_ms + 30 * 86_400_000
    assert main(["token", "list", "--data-dir", str(home)]) == 0
    listing = capsys.readouterr().out
    assert listing.split("\n")[0].split() == ["ID", "ROLE", "DEVICE", "NOTE", "CREATED", "EXPIRES"]
    assert main(["token", "list", "--format", "json", "--data-dir", str(home)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["expires_ms"] - r["created_ms"] for r in rows) == [12 * 3_600_000, 30 * 86_400_000]
    with pytest.raises(SystemExit) as info:
        main(["token", "create", "--read", "--expires-in", "soon", "--data-dir", str(home)])
    assert info.value.code == 2
    assert "'soon' is not a duration" in capsys.readouterr().err
