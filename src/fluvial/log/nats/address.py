"""``nats://HOST:PORT[,HOST:PORT...]/NAME[?replicas=N]``: where a log on NATS JetStream lives.

:func:`parse_url` checks a URL completely before anything connects, and
:class:`NatsAddress` names the streams and subjects of the log: ``NAME-meta``
(one message: the partition count) and ``NAME-p0000``, ``NAME-p0001``, ... (one
stream per partition, subjects ``fluvial.NAME.meta`` and ``fluvial.NAME.p0000``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fluvial.errors import ConfigError

__all__ = ["DEFAULT_PORT", "MAX_REPLICAS", "NatsAddress", "parse_url"]

DEFAULT_PORT = 4222
MAX_REPLICAS = 5  # JetStream's own limit
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOST_RE = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")
_EXAMPLE = "nats://127.0.0.1:4222/fluvial (or nats://h1:4222,h2:4222,h3:4222/fluvial?replicas=3)"


@dataclass(frozen=True)
class NatsAddress:
    """A parsed ``nats://`` log URL.

    Attributes:
        servers: ``nats://host:port`` of each server, in the URL's order.
        name: The log's name, the prefix of its streams (a safe stream-name token).
        replicas: Replicas of each stream this log creates (JetStream's ``num_replicas``).
    """

    servers: tuple[str, ...]
    name: str
    replicas: int = 1

    @property
    def url(self) -> str:
        hosts = ",".join(s.removeprefix("nats://") for s in self.servers)
        query = f"?replicas={self.replicas}" if self.replicas != 1 else ""
        return f"nats://{hosts}/{self.name}{query}"

    @property
    def meta_stream(self) -> str:
        return f"{self.name}-meta"

    @property
    def meta_subject(self) -> str:
        return f"fluvial.{self.name}.meta"

    def stream(self, partition: int) -> str:
        """The stream of ``partition``."""
        return f"{self.name}-p{partition:04d}"

    def subject(self, partition: int) -> str:
        """The one subject of ``partition``'s stream."""
        return f"fluvial.{self.name}.p{partition:04d}"


def parse_url(url: str, flag: str = "--log") -> NatsAddress:
    """Parse a ``nats://`` log URL.

    >>> parse_url("nats://127.0.0.1:4222,10.0.0.2/events?replicas=3")
    NatsAddress(servers=('nats://127.0.0.1:4222', 'nats://10.0.0.2:4222'), name='events', replicas=3)

    Raises:
        ConfigError: Not a ``nats://`` URL, a malformed server, a NAME that is not a
            token of letters, digits, ``-`` and ``_`` (1 to 64), or a bad ``replicas``.
    """
    if not isinstance(url, str) or not url.lower().startswith("nats://"):
        raise ConfigError(f"{flag} {url!r} is not a NATS log URL: write {_EXAMPLE}")
    rest = url[len("nats://"):]
    rest, _, query = rest.partition("?")
    hosts, slash, name = rest.partition("/")
    if not slash or not name:
        raise ConfigError(f"{flag} {url!r} names no log: add /NAME after the servers, e.g. {_EXAMPLE}")
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"{flag} {url!r}: the log name {name!r} must be 1 to 64 letters, digits, '-' "
                          "or '_' (it prefixes JetStream stream names and subjects)")
    servers = tuple(_server(h, url, flag) for h in hosts.split(","))
    replicas = 1
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != "replicas":
            raise ConfigError(f"{flag} {url!r}: unknown option {key!r} (the one option is replicas=N)")
        if not value.isdigit() or not 1 <= int(value) <= MAX_REPLICAS:
            raise ConfigError(f"{flag} {url!r}: replicas must be a number from 1 to {MAX_REPLICAS}, "
                              f"got {value!r}")
        replicas = int(value)
    return NatsAddress(servers, name, replicas)


def _server(hostport: str, url: str, flag: str) -> str:
    if "@" in hostport:
        raise ConfigError(f"{flag} {url!r}: credentials in the URL are not supported")
    host, port = hostport, str(DEFAULT_PORT)
    if hostport.startswith("["):
        host, _, tail = hostport.partition("]")
        host += "]"
        if tail:
            if not tail.startswith(":"):
                raise ConfigError(f"{flag} {url!r}: malformed server {hostport!r}")
            port = tail[1:]
    elif ":" in hostport:
        host, port = hostport.rsplit(":", 1)
    if not host or not _HOST_RE.fullmatch(host):
        raise ConfigError(f"{flag} {url!r}: malformed server {hostport!r}; write HOST:PORT, e.g. {_EXAMPLE}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{flag} {url!r}: server {hostport!r} has no valid port (1 to 65535)")
    return f"nats://{host}:{int(port)}"
