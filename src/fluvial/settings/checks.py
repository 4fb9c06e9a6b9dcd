"""The checks of setting values, with messages that say what was found.

A failed check raises :class:`~fluvial.errors.ConfigError` naming the key
(``port must be between 0 (any free port) and 65535, got -1 (an integer)``); reading
a file prefixes it with the file and the section (:mod:`fluvial.settings.load`).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from fluvial.errors import ConfigError

if TYPE_CHECKING:
    from fluvial.settings.model import ServerSettings

__all__ = ["check_choice", "check_positive", "check_seconds", "check_security", "existing_file", "fail",
           "is_host_pattern", "is_loopback", "is_origin", "require", "show"]


def show(value: object) -> str:
    """``value`` for a message: its kind, and its repr when short (never a deep repr)."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"an array of {len(value)} item(s)"
    kind = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}.get(type(value), "a date/time")
    text = repr(value)
    return f"{text[:60]}... ({kind})" if len(text) > 64 else f"{text} ({kind})"


def require(ok: bool, key: str, allowed: str, got: object) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {allowed}, got {show(got)}")


def check_positive(key: str, value: int) -> None:
    require(value > 0, key, "> 0", value)


def check_seconds(key: str, value: float) -> None:
    require(math.isfinite(value) and value >= 0, key, "a finite number >= 0", value)


def check_choice(key: str, value: str, allowed: Sequence[str]) -> None:
    require(value in allowed, key, "one of " + ", ".join(allowed), value)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost``, ``127.0.0.0/8``, ``::1``).

    Example:
        >>> is_loopback("127.0.0.2"), is_loopback("::1"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    name = host.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # another name: it may resolve to anything
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


_HOST_NAME = re.compile(r"\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?", re.ASCII)
_ORIGIN = re.compile(r"https?://([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?", re.ASCII)


def is_host_pattern(value: str) -> bool:
    """``*``, a host name (``.example.com``: and its subdomains) or an IP address, without a port."""
    if value == "*" or _HOST_NAME.fullmatch(value):
        return True
    try:
        ipaddress.ip_address(value.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


def is_origin(value: str) -> bool:
    """``scheme://host[:port]`` as browsers send it in ``Origin`` (no path, no trailing slash)."""
    match = _ORIGIN.fullmatch(value)
    return match is not None and (match.group(3) is None or 0 < int(match.group(3)[1:]) <= 65535)


def check_security(server: ServerSettings) -> None:
    """The flow directories, Host names, origins and TLS files of ``[server]``."""
    for i, folder in enumerate(server.flow_dirs or ()):
        require(isinstance(folder, Path) and folder.is_dir(), f"flow_dirs[{i}]", "an existing directory",
                os.fspath(folder))
    for i, host in enumerate(server.allowed_hosts):
        require(isinstance(host, str) and is_host_pattern(host), f"allowed_hosts[{i}]",
                'a host name without port (fluvial.example.com, .example.com for its subdomains, "*")', host)
    for i, origin in enumerate(server.allowed_origins):
        require(isinstance(origin, str) and is_origin(origin), f"allowed_origins[{i}]",
                "an origin as browsers send it: scheme://host[:port], no path (https://dash.example.com)", origin)
    if (server.tls_cert is None) != (server.tls_key is None):
        given, missing = ("tls_cert", "tls_key") if server.tls_key is None else ("tls_key", "tls_cert")
        raise ConfigError(f"{given} is set but {missing} is not: HTTPS needs both the certificate "
                          "(tls_cert) and its private key (tls_key)")


def fail(name: str, message: str) -> NoReturn:
    raise ConfigError(f"{name}: {message}")


def existing_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise ConfigError(f"{what} does not exist (looked for {path})")
    if not path.is_file():
        raise ConfigError(f"{what} is not a file ({path})")
    return path.resolve()
