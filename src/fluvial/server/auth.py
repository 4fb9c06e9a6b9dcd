"""Bearer tokens of ``fluvial serve``: who may ingest, query or administer.

A token is ``flv_<id>_<secret>``: ``id`` is 8 hex characters that name it in
listings and revocations, ``secret`` 32 random bytes (``secrets.token_urlsafe``).
The :class:`TokenStore` keeps only ``sha256(token)`` with the id, role, device,
note and times, in one SQLite file (``DATA_DIR/tokens.db``, WAL) that the CLI
writes while the server reads it. A token may expire (``expires_in_ms``); a
revocation or expiry applies to the very next request of a running server.

Roles:

* ``device``: may only post events whose envelope ``device`` is the device the
  token was issued for;
* ``read``: may only query (views, metrics);
* ``admin``: everything, including batch runs, reprocessing and rollbacks.

Example:
    >>> with TokenStore(":memory:") as store:
    ...     token, grant = store.create("device", device="dev-1", note="greenhouse")
    ...     store.verify(token) == grant, store.verify(token + "x")
    (True, None)
    >>> authorize(Grant(token_id="0badcafe", role="read", device=None, note="", created_ms=0), "query")
    >>> try:
    ...     authorize(Grant(token_id="0badcafe", role="device", device="dev-1", note="", created_ms=0),
    ...               "ingest", devices=["dev-1", "dev-2"])
    ... except AuthError as exc:
    ...     print(exc.status, exc.reason)
    403 device token for 'dev-1' cannot write events of device 'dev-2' (event 1)
"""

from __future__ import annotations

import builtins
import hashlib
import os
import re
import secrets
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable
from os import PathLike
from typing import Literal, Self, get_args

import msgspec

from fluvial.errors import ConfigError, FluvialError, StoreError

__all__ = [
    "DEFAULT_CACHE_TTL_MS",
    "MAX_DEVICE_CHARS",
    "MAX_TOKEN_CHARS",
    "MAX_TTL_MS",
    "TOKENS_FILE",
    "UNAUTHENTICATED",
    "Action",
    "AuthError",
    "Grant",
    "Role",
    "TokenStore",
    "authorize",
    "check_device_id",
    "parse_bearer",
]

Role = Literal["device", "read", "admin"]
Action = Literal["ingest", "query", "admin"]

TOKENS_FILE = "tokens.db"
"""Name of the token store inside the data directory."""
DEFAULT_CACHE_TTL_MS = 5_000
"""How long :meth:`TokenStore.verify` keeps a grant it read. Changes to the store by any process
(a revocation) empty the cache at the next verify, so they apply at once whatever this is."""
DEFAULT_BUSY_TIMEOUT_MS = 10_000
MAX_TOKEN_CHARS = 200
"""Longer strings are not tokens: :meth:`TokenStore.verify` rejects them before hashing."""
MAX_DEVICE_CHARS = 256
MAX_NOTE_CHARS = 1_000
MAX_TTL_MS = 100 * 366 * 86_400_000
"""The longest lifetime a token can be created with (100 years)."""
SECRET_BYTES = 32
SCHEMA_VERSION = 2
UNAUTHENTICATED = ("missing or invalid bearer token: send 'Authorization: Bearer <token>' "
                   "with a token from `fluvial token create`")
"""The reason of a 401 without a valid token."""

_ROLES: tuple[str, ...] = get_args(Role)
_TOKEN = re.compile(r"flv_([0-9a-f]{8})_[A-Za-z0-9_-]+", re.ASCII)
_TOKEN_ID = re.compile(r"[0-9a-f]{8}", re.ASCII)
# RFC 6750: "Bearer" 1*SP b64token; the scheme is case-insensitive (RFC 9110).
_BEARER = re.compile(r"\s*bearer +([A-Za-z0-9\-._~+/]+=*)\s*", re.ASCII | re.IGNORECASE)
_MAX_HEADER_CHARS = 1_024
_CACHE_MAX = 4_096
_SCHEMA = """CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    token_id TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    device TEXT,
    note TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER,
    expires_ms INTEGER) WITHOUT ROWID"""
_MIGRATIONS = {1: "ALTER TABLE tokens ADD COLUMN expires_ms INTEGER"}  # from schema version N to N + 1
_COLUMNS = "token_id, role, device, note, created_ms, revoked_ms, expires_ms"


class AuthError(FluvialError):
    """A request may not do what it asks.

    Attributes:
        status: The HTTP status to answer: 401 (no valid token) or 403 (a
            valid token whose role or device does not allow the action).
        reason: What was refused and why, for the response body.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Grant(msgspec.Struct, frozen=True):
    """What a token allows: its role and, for a ``device`` token, the device.

    Attributes:
        token_id: The token's public id (8 hex characters).
        role: ``"device"``, ``"read"`` or ``"admin"``.
        device: The device a ``device`` token may write for; None otherwise.
        note: Free text given at creation (who or what holds the token).
        created_ms: Creation time, epoch milliseconds.
        revoked_ms: When it was revoked; None while valid (always None in what
            :meth:`TokenStore.verify` returns).
        expires_ms: When it stops being valid, epoch milliseconds; None: never.
    """

    token_id: str
    role: Role
    device: str | None
    note: str
    created_ms: int
    revoked_ms: int | None = None
    expires_ms: int | None = None

    def expired(self, now_ms: int | None = None) -> bool:
        """Whether the token is past its expiry time (at ``now_ms``, default: now)."""
        return self.expires_ms is not None and self.expires_ms <= (_now_ms() if now_ms is None else now_ms)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _control_chars(text: str) -> list[str]:
    return [f"U+{ord(c):04X}" for c in text if unicodedata.category(c) == "Cc"]


def check_device_id(device: str) -> str:
    """The device id itself when a device token may be issued for it, else :class:`ConfigError`.

    A device id is what devices write in the ``device`` field of their events:
    not empty, at most 256 characters, no control characters.
    """
    if not isinstance(device, str):
        raise ConfigError(f"a device id is a string, got {type(device).__name__}")
    if not device:
        raise ConfigError("the device id is empty: give the id the device writes in the "
                          "'device' field of its events (e.g. dev-1)")
    if len(device) > MAX_DEVICE_CHARS:
        raise ConfigError(f"the device id has {len(device)} characters; at most {MAX_DEVICE_CHARS} "
                          "are allowed")
    bad = _control_chars(device)
    if bad:
        raise ConfigError(f"the device id {device!r} contains control characters ({', '.join(bad)}): "
                          "remove them")
    return device


def _check_note(note: str) -> str:
    if not isinstance(note, str):
        raise ConfigError(f"a token note is a string, got {type(note).__name__}")
    if len(note) > MAX_NOTE_CHARS:
        raise ConfigError(f"the note has {len(note)} characters; at most {MAX_NOTE_CHARS} are allowed")
    bad = _control_chars(note)
    if bad:
        raise ConfigError(f"the note contains control characters ({', '.join(bad)}): remove them")
    return note


class TokenStore:
    """The bearer tokens of one data directory, in a SQLite file.

    Several processes may open the same file: writes run in ``BEGIN
    IMMEDIATE`` transactions and readers never wait for them (WAL). One object
    may be shared by the threads of a process (a lock guards its connection).

    Args:
        path: The database file (created if missing, readable by its owner
            only), or ``":memory:"``; normally ``DATA_DIR / TOKENS_FILE``.
        cache_ttl_ms: How long :meth:`verify` keeps a grant it has read
            without looking it up again. 0 disables the cache. Whatever it is,
            a change to the store by any process (a revocation) empties the
            cache at the next :meth:`verify` (``PRAGMA data_version``, a
            cheap check of the WAL index), and expiry times are checked on
            every call, so both apply to the very next request.
        busy_timeout_ms: How long a writer waits for another writer's lock.

    Only ``sha256(token)`` is stored, never the token: the token is returned
    once by :meth:`create`, and a lost token is revoked and replaced.
    """

    def __init__(self, path: str | PathLike[str], *, cache_ttl_ms: int = DEFAULT_CACHE_TTL_MS,
                 busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        for name, value in (("cache_ttl_ms", cache_ttl_ms), ("busy_timeout_ms", busy_timeout_ms)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        self.path = os.fspath(path)
        self.cache_ttl_ms = cache_ttl_ms
        self._cache: dict[str, tuple[Grant, int]] = {}
        self._data_version: int | None = None  # PRAGMA data_version when the cache was last valid
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:" and not os.path.exists(self.path):
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))  # -wal, -shm inherit it
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                         timeout=busy_timeout_ms / 1000)
            self._conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._init_schema()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the token store {self.path!r}: {exc}") from exc

    def _init_schema(self) -> None:
        """Create the table, or bring an older one up to :data:`SCHEMA_VERSION` (version 1 had no expiry)."""
        if self._schema_version() == SCHEMA_VERSION:
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            current = self._schema_version()  # again: another process may have upgraded it meanwhile
            if current == 0:
                self._conn.execute(_SCHEMA)  # the latest schema: nothing to migrate
            for version in range(current or SCHEMA_VERSION, SCHEMA_VERSION):
                self._conn.execute(_MIGRATIONS[version])
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _schema_version(self) -> int:
        (current,) = self._conn.execute("PRAGMA user_version").fetchone()
        if current > SCHEMA_VERSION:
            raise StoreError(f"{self.path!r} has token store schema {current}; this fluvial knows "
                             f"{SCHEMA_VERSION}: upgrade fluvial")
        return int(current)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database; the store cannot be used afterwards (closing twice is fine)."""
        with self._lock:
            self._cache.clear()
            self._conn.close()

    def create(self, role: Role, *, device: str | None = None, note: str = "",
               expires_in_ms: int | None = None) -> tuple[str, Grant]:
        """Issue a token; returns it (the only time it is available) and its grant.

        Args:
            role: ``"device"``, ``"read"`` or ``"admin"``.
            device: The device a ``"device"`` token may write events for;
                required for that role, refused for the others.
            note: Who or what holds the token (shown by ``fluvial token list``).
            expires_in_ms: The token's lifetime from now (1 ms to
                :data:`MAX_TTL_MS`); None: it never expires.

        Raises:
            ConfigError: A role, device, note or lifetime that is not allowed.
            StoreError: The database cannot be written.
        """
        if role not in _ROLES:
            raise ConfigError(f"unknown token role {role!r}: use one of {', '.join(_ROLES)}")
        if role == "device":
            if device is None:
                raise ConfigError("a device token needs the id of its device: "
                                  "create('device', device='dev-1')")
            check_device_id(device)
        elif device is not None:
            raise ConfigError(f"a {role} token is not tied to a device: leave device out, "
                              "or create a 'device' token")
        _check_note(note)
        _check_lifetime(expires_in_ms)
        for _ in range(8):  # 8 hex characters: a clash of ids is rare, and retried
            token_id = secrets.token_hex(4)
            token = f"flv_{token_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
            created_ms = _now_ms()
            expires_ms = None if expires_in_ms is None else created_ms + expires_in_ms
            grant = Grant(token_id=token_id, role=role, device=device, note=note, created_ms=created_ms,
                          expires_ms=expires_ms)
            try:
                with self._lock:
                    self._conn.execute(
                        f"INSERT INTO tokens (token_hash, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                        (_digest(token), token_id, role, device, note, created_ms, expires_ms))
            except sqlite3.IntegrityError:
                continue
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write the token store {self.path!r}: {exc}") from exc
            return token, grant
        raise StoreError(f"cannot find a free token id in {self.path!r}")  # pragma: no cover

    def verify(self, token: str) -> Grant | None:
        """The grant of a valid token; None for an unknown, revoked, expired or malformed one.

        The token is looked up by its SHA-256, so the time this takes says
        nothing about how much of a guessed secret is right. A grant read from
        the database is kept for ``cache_ttl_ms``, unless the store changed.

        Raises:
            StoreError: The database cannot be read (the request must fail,
                not pass).
        """
        grant = self._lookup(token)
        return None if grant is None or grant.expired() else grant

    def authenticate(self, token: str | None) -> Grant:
        """The grant of the token a request carries, or the :class:`AuthError` (401) to answer.

        Args:
            token: What :func:`parse_bearer` found in the request (None: no token).

        Raises:
            AuthError: 401 with :data:`UNAUTHENTICATED` for no token or an unknown,
                revoked or malformed one; 401 ``token expired ...`` for an expired one.
            StoreError: The database cannot be read.
        """
        grant = self._lookup(token) if token is not None else None
        if grant is None:
            raise AuthError(401, UNAUTHENTICATED)
        if grant.expired():
            raise AuthError(401, f"token expired: token {grant.token_id} expired at {_iso(grant.expires_ms)}; "
                                 "ask for a new one (`fluvial token create`)")
        return grant

    def _lookup(self, token: object) -> Grant | None:
        """The grant stored for ``token`` (expired or not); None if unknown, revoked or malformed."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or _TOKEN.fullmatch(token) is None:
            return None
        digest = _digest(token)
        now = _monotonic_ms()
        with self._lock:
            if self.cache_ttl_ms:
                self._forget_if_changed()
            cached = self._cache.get(digest)
            if cached is not None and cached[1] > now:
                return cached[0]
            try:
                row = self._conn.execute(
                    f"SELECT {_COLUMNS} FROM tokens WHERE token_hash = ? AND revoked_ms IS NULL",
                    (digest,)).fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the token store {self.path!r}: {exc}") from exc
            if row is None:
                self._cache.pop(digest, None)
                return None
            grant = Grant(*row)  # type: ignore[arg-type]
            if self.cache_ttl_ms:
                if len(self._cache) >= _CACHE_MAX:
                    self._cache = {d: c for d, c in self._cache.items() if c[1] > now}
                    if len(self._cache) >= _CACHE_MAX:
                        self._cache.clear()
                self._cache[digest] = (grant, now + self.cache_ttl_ms)
            return grant

    def _forget_if_changed(self) -> None:
        """Empty the cache if any connection changed the store since it was filled (call with the lock)."""
        try:
            (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the token store {self.path!r}: {exc}") from exc
        if version != self._data_version:
            self._cache.clear()
            self._data_version = version

    def list(self, *, include_revoked: bool = False) -> builtins.list[Grant]:
        """The tokens, oldest first: the valid ones, or all with ``include_revoked``."""
        where = "" if include_revoked else "WHERE revoked_ms IS NULL "
        try:
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT {_COLUMNS} FROM tokens {where}ORDER BY created_ms, token_id").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the token store {self.path!r}: {exc}") from exc
        return [Grant(*row) for row in rows]

    def revoke(self, token_id: str) -> bool:
        """Revoke a token by its id; False if no valid token has that id.

        Every :class:`TokenStore` on the file (this process or another) refuses
        the token from its next :meth:`verify` on.
        """
        if not isinstance(token_id, str) or _TOKEN_ID.fullmatch(token_id) is None:
            return False
        try:
            with self._lock:
                cursor = self._conn.execute(
                    "UPDATE tokens SET revoked_ms = ? WHERE token_id = ? AND revoked_ms IS NULL",
                    (_now_ms(), token_id))
                self._cache = {d: c for d, c in self._cache.items() if c[0].token_id != token_id}
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the token store {self.path!r}: {exc}") from exc
        return cursor.rowcount == 1


def _check_lifetime(expires_in_ms: int | None) -> None:
    if expires_in_ms is None:
        return
    if not isinstance(expires_in_ms, int) or isinstance(expires_in_ms, bool):
        raise ConfigError(f"a token lifetime is an integer number of milliseconds, got {expires_in_ms!r}")
    if not 0 < expires_in_ms <= MAX_TTL_MS:
        raise ConfigError(f"a token lifetime must be between 1 ms and 100 years, got {expires_in_ms} ms")


def _iso(ms: int | None) -> str:
    if ms is None:
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


def authorize(grant: Grant | None, action: Action, *, devices: Iterable[str] = ()) -> None:
    """Return if ``grant`` allows ``action``; else raise :class:`AuthError`.

    Args:
        grant: What :meth:`TokenStore.verify` returned for the request's token
            (None: no token, or not a valid one -> 401).
        action: ``"ingest"`` (post events), ``"query"`` (views, metrics) or
            ``"admin"`` (batch runs, reprocessing, rollbacks...).
        devices: For ``"ingest"``, the envelope ``device`` of each event of the
            request, in order: a device token may only write its own.

    Raises:
        AuthError: 401 without a valid grant, 403 when its role or device does
            not allow the action (the reason names the event's 0-based index).
        ConfigError: ``action`` is not one of the three.
    """
    if action not in ("ingest", "query", "admin"):
        raise ConfigError(f"unknown action {action!r}: use 'ingest', 'query' or 'admin'")
    if grant is None:
        raise AuthError(401, UNAUTHENTICATED)
    role = grant.role
    if role == "admin":
        return
    if action == "ingest":
        if role != "device":
            raise AuthError(403, f"{role} token cannot post events")
        for index, device in enumerate(devices):
            if device != grant.device:
                raise AuthError(403, f"device token for {grant.device!r} cannot write events of device "
                                     f"{device!r} (event {index})")
        return
    if action == "query":
        if role != "read":
            raise AuthError(403, f"{role} token cannot query views")
        return
    raise AuthError(403, f"{role} token cannot run admin actions (batch, reprocess, rollback): "
                         "use an admin token")


def parse_bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value; None for anything else.

    Example:
        >>> parse_bearer("bearer flv_0badcafe_s3cret"), parse_bearer("Basic dXNlcjpwdw==")
        ('flv_0badcafe_s3cret', None)
    """
    if not isinstance(header, str) or len(header) > _MAX_HEADER_CHARS:
        return None
    match = _BEARER.fullmatch(header)
    return match.group(1) if match else None
