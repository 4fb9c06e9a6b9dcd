"""The URL of a Cassandra view store: ``cassandra://HOST[,HOST...][:PORT]/KEYSPACE[?OPTIONS]``.

Options (query parameters):

- ``replication_factor=N`` (default 1): the keyspace's ``SimpleStrategy`` replication
  factor, used only when the keyspace is created;
- ``consistency=LEVEL`` (default ``QUORUM``): the consistency of every read and write
  (``ONE``, ``TWO``, ``THREE``, ``QUORUM``, ``LOCAL_QUORUM``, ``LOCAL_ONE``, ``ALL``).
  Lightweight transactions use ``SERIAL`` (``LOCAL_SERIAL`` with a ``LOCAL_*`` level).

Reads and writes at ``QUORUM`` (or ``ALL``) see each other: that is what the commit
protocol of :mod:`fluvial.serving.cassandra` relies on with a replication factor over 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fluvial.errors import ConfigError

__all__ = ["CONSISTENCY_LEVELS", "DEFAULT_PORT", "CassTarget", "parse_url"]

DEFAULT_PORT = 9042
EXAMPLE = "cassandra://127.0.0.1:9042/fluvial?replication_factor=1&consistency=QUORUM"
KEYSPACE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")
HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
CONSISTENCY_LEVELS = ("ONE", "TWO", "THREE", "QUORUM", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE", "ALL")
OPTIONS = {"replication_factor": "the keyspace's replication factor when it is created (an integer >= 1)",
           "consistency": f"the consistency of reads and writes ({', '.join(CONSISTENCY_LEVELS)})"}


@dataclass(frozen=True)
class CassTarget:
    """Where a store lives: what its URL says."""

    hosts: tuple[str, ...]
    port: int
    keyspace: str
    replication_factor: int = 1
    consistency: str = "QUORUM"

    def where(self) -> str:
        """``cassandra://HOSTS:PORT/KEYSPACE``, for messages."""
        return f"cassandra://{','.join(self.hosts)}:{self.port}/{self.keyspace}"


def _bad(url: str, why: str) -> ConfigError:
    return ConfigError(f"--store {url!r}: {why}; write it as {EXAMPLE}")


def _hosts_and_port(url: str, netloc: str) -> tuple[tuple[str, ...], int]:
    if "@" in netloc:
        raise _bad(url, "user names and passwords are not supported in a cassandra:// URL")
    port = DEFAULT_PORT
    head, sep, tail = netloc.rpartition(":")
    if sep:
        if not tail.isdigit() or not 0 < int(tail) < 65536:
            raise _bad(url, f"port {tail!r} is not a number between 1 and 65535")
        netloc, port = head, int(tail)
    hosts = tuple(netloc.split(","))
    for host in hosts:
        if ":" in host:
            raise _bad(url, "give one port for every host, after the last one (HOST,HOST:PORT)")
        if not HOST.fullmatch(host):
            raise _bad(url, f"{host!r} is not a host name or IPv4 address" if host else "it names no host")
    return hosts, port


def parse_url(url: str) -> CassTarget:
    """The target of a ``cassandra://`` store URL.

    Raises:
        ConfigError: No host, a bad port, no keyspace or one that is not a valid name, an
            unknown option or a bad option value (the message says what to write).
    """
    if not isinstance(url, str) or not url.lower().startswith("cassandra://"):
        raise _bad(str(url), "not a cassandra:// URL")
    rest = url[len("cassandra://"):]
    if "#" in rest:
        raise _bad(url, "a store URL has no '#' part")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    if not netloc:
        raise _bad(url, "it names no host")
    hosts, port = _hosts_and_port(url, netloc)
    if not slash or not path:
        raise _bad(url, "it names no keyspace (one path segment after the hosts)")
    if not KEYSPACE.fullmatch(path) or path.lower().startswith("system"):
        raise _bad(url, f"keyspace {path!r} is not a valid keyspace name: a letter followed by up to 47 "
                        "letters, digits or '_' (not starting with 'system')")
    target: dict[str, int | str] = {"replication_factor": 1, "consistency": "QUORUM"}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in OPTIONS:
            raise _bad(url, f"unknown option {name!r}; the options are "
                            + "; ".join(f"{k}: {v}" for k, v in OPTIONS.items()))
        if name == "replication_factor":
            if not value.isdigit() or int(value) < 1:
                raise _bad(url, f"replication_factor={value!r} is not an integer >= 1")
            target[name] = int(value)
        else:
            if value.upper() not in CONSISTENCY_LEVELS:
                raise _bad(url, f"consistency={value!r} is not one of {', '.join(CONSISTENCY_LEVELS)}")
            target[name] = value.upper()
    return CassTarget(hosts, port, path.lower(), int(str(target["replication_factor"])), str(target["consistency"]))
