"""Host and Origin checks of ``fluvial serve``: no DNS rebinding, no cross-site requests.

With auth off (the default on loopback) any program on the machine may use the
API, and so could any web page the machine's browser opens, two ways:

* **DNS rebinding**: a page of ``evil.example`` makes its name resolve to
  127.0.0.1 and reads the API as "same origin". Its requests carry
  ``Host: evil.example``, so every request whose ``Host`` is not a name of this
  server is refused. Accepted: IP addresses (a rebinding needs a name),
  ``localhost`` and ``*.localhost``, the bound host, this machine's name, and
  ``[server] allowed_hosts``.
* **Cross-site requests (CSRF)**: a page posts events or starts a batch run
  with a form or ``fetch`` (without reading the answer). Browsers say where
  such a request comes from, so a state-changing request (POST, PUT, PATCH,
  DELETE) with an ``Origin`` that is not the server's own (scheme, host, port)
  nor in ``[server] allowed_origins``, or marked ``Sec-Fetch-Site: cross-site``
  or ``same-site`` without an allowed ``Origin``, is refused. Requests without
  these headers (curl, devices, the CLI) are not from a browser and pass.

Refusals are ``403`` with a JSON body that says what to configure.

Example:
    >>> policy = OriginPolicy(bind_host="127.0.0.1")
    >>> policy.refusal("POST", "http", {"host": "127.0.0.1:8470", "origin": "http://127.0.0.1:8470"}) is None
    True
    >>> policy.refusal("GET", "http", {"host": "evil.example:8470"})[:31]
    "Host 'evil.example:8470' is not"
    >>> policy.refusal("POST", "http", {"host": "localhost:8470", "origin": "https://evil.example"})[:28]
    'cross-site request refused: '
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

__all__ = ["OriginPolicy", "SameOriginMiddleware"]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_CROSS = frozenset({"cross-site", "same-site"})
_HOW_HOSTS = "a host listed in [server] allowed_hosts of fluvial.toml"
_HOW_ORIGINS = "[server] allowed_origins in fluvial.toml"


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``Host`` -> (lower-case name without trailing dot, port); None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    elif value.count(":") > 1:  # a bare IPv6 address
        name, port_text = value, None
    else:
        name, _, port_text = value.partition(":") if ":" in value else (value, "", None)
    if not name or (port_text is not None and (not port_text.isdigit() or len(port_text) > 5)):
        return None
    return name.rstrip("."), int(port_text) if port_text is not None else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _origin_key(origin: str) -> tuple[str, str, int] | None:
    """``https://Example.com`` -> ("https", "example.com", 443); None when it is not an origin."""
    scheme, sep, rest = origin.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS or "/" in rest or "?" in rest or "#" in rest or "@" in rest:
        return None
    host = _split_host(rest)
    if host is None:
        return None
    name, port = host
    return scheme, name, port if port is not None else _DEFAULT_PORTS[scheme]


class OriginPolicy:
    """Which ``Host`` names and ``Origin`` s a server accepts; see the module docstring.

    Args:
        bind_host: The address or name the server listens on.
        allowed_hosts: ``[server] allowed_hosts``: names, ``.example.com`` for a
            domain and its subdomains, ``*`` for any.
        allowed_origins: ``[server] allowed_origins``: ``scheme://host[:port]``.
    """

    def __init__(self, *, bind_host: str, allowed_hosts: Sequence[str] = (),
                 allowed_origins: Sequence[str] = ()) -> None:
        hosts = [h.strip().lower().rstrip(".") for h in allowed_hosts]
        self.any_host = "*" in hosts
        self.suffixes = tuple(h for h in hosts if h.startswith("."))
        bound = bind_host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
        self.names = frozenset({"localhost", bound, socket.gethostname().lower().rstrip(".")}
                               | {h.removeprefix("[").removesuffix("]") for h in hosts if not h.startswith(".")})
        self.origins = frozenset(k for o in allowed_origins if (k := _origin_key(o)) is not None)

    def host_allowed(self, name: str) -> bool:
        """Whether a ``Host`` name (lower case, no port) is one of this server's."""
        return (self.any_host or _is_ip(name) or name in self.names or name.endswith(".localhost")
                or any(name.endswith(s) or name == s[1:] for s in self.suffixes))

    def refusal(self, method: str, scheme: str, headers: Mapping[str, str | None]) -> str | None:
        """Why a request is refused (None: it is not).

        Args:
            method: The HTTP method.
            scheme: ``http`` or ``https``, as the server received it.
            headers: ``host``, ``origin`` and ``sec-fetch-site`` (lower-case keys; absent: None).
        """
        host_header = headers.get("host")
        own: tuple[str, str, int] | None = None
        if host_header is not None:
            host = _split_host(host_header)
            if host is None or not self.host_allowed(host[0]):
                return (f"Host {host_header[:100]!r} is not a name of this server: use its address, a loopback "
                        f"name or {_HOW_HOSTS} (names that are not are refused: DNS rebinding)")
            own = (scheme, host[0], host[1] if host[1] is not None else _DEFAULT_PORTS.get(scheme, 80))
        if method.upper() not in STATE_CHANGING:
            return None
        return self._cross_site(method.upper(), own, headers.get("origin"), headers.get("sec-fetch-site"))

    def _cross_site(self, method: str, own: tuple[str, str, int] | None, origin: str | None,
                    fetch_site: str | None) -> str | None:
        if origin is not None:
            key = _origin_key(origin)
            if key is not None and (key == own or key in self.origins):
                return None
            shown = f"{own[0]}://{own[1]}:{own[2]}" if own is not None else "unknown: the request has no Host"
            return (f"cross-site request refused: a page from {origin[:100]!r} may not send {method} requests to "
                    f"this server (its origin is {shown}); if it should, add its origin to {_HOW_ORIGINS}")
        if fetch_site is not None and fetch_site.strip().lower() in _CROSS:
            return (f"cross-site request refused: the browser marked this {method} request "
                    f"'Sec-Fetch-Site: {fetch_site[:20]}' and it has no Origin listed in {_HOW_ORIGINS}")
        return None


class SameOriginMiddleware:
    """ASGI middleware applying an :class:`OriginPolicy` to every HTTP request.

    Args:
        app: The ASGI application.
        policy: The policy.
        on_refused: Called with the status of each refusal (metrics).
    """

    def __init__(self, app: Any, *, policy: OriginPolicy, on_refused: Callable[[int], None] | None = None) -> None:
        self.app = app
        self.policy = policy
        self.on_refused = on_refused

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            reason = self._check(scope)
            if reason is not None:
                if self.on_refused is not None:
                    self.on_refused(403)
                await _refuse(send, reason)
                return
        await self.app(scope, receive, send)

    def _check(self, scope: Any) -> str | None:
        found: dict[str, str | None] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            if name in ("host", "origin", "sec-fetch-site"):
                if name in found:
                    return f"the request has two {name} headers"
                found[name] = raw_value.decode("latin-1")
        return self.policy.refusal(scope.get("method", "GET"), scope.get("scheme", "http"), found)


async def _refuse(send: Any, reason: str) -> None:
    body = msgspec.json.encode({"error": reason, "status": 403})
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
