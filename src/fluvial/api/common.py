"""What every route group shares: JSON responses, errors, and the guard (auth, errors, metrics)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fluvial.api import disclosure
from fluvial.errors import ConfigError, FluvialError, StoreError, ViewNotFound
from fluvial.server.auth import AuthError, authorize, parse_bearer

if TYPE_CHECKING:
    from fluvial.server.core import Server

__all__ = ["Api", "Handler", "MsgspecJSON", "error"]

_logger = logging.getLogger("fluvial.server")
_enc = msgspec.json.Encoder()

Handler = Callable[[Request], Awaitable[Response]]


class MsgspecJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _enc.encode(content)


def error(status: int, reason: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """The JSON error body every route answers with: ``{"error": reason, "status": status, ...}``."""
    return MsgspecJSON({"error": reason, "status": status, **extra}, status_code=status, headers=headers)


class Api:
    """The server behind the routes, and what every route does around its handler."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def guard(self, action: str) -> Callable[[Handler], Handler]:
        """A route that needs ``action`` (ingest, query, admin) when auth is on; its errors become
        JSON answers (no paths or error texts to callers who are not admins); counted in the metrics."""
        server = self.server

        def wrap(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                request.state.grant = None
                try:
                    if server.auth:
                        grant = server.tokens.authenticate(parse_bearer(request.headers.get("authorization")))
                        authorize(grant, action)  # type: ignore[arg-type]
                        request.state.grant = grant
                    response = await handler(request)
                except AuthError as exc:
                    response = error(exc.status, exc.reason,
                                     {"WWW-Authenticate": 'Bearer realm="fluvial"'} if exc.status == 401 else None)
                except ViewNotFound as exc:
                    response = error(404, str(exc) if self.details(request)
                                     else disclosure.unknown_view(request.path_params.get("name")))
                except (ConfigError, StoreError) as exc:
                    response = error(400 if isinstance(exc, ConfigError) else 409, self.public(request, str(exc)))
                except FluvialError as exc:
                    response = error(400, self.public(request, str(exc)))
                except Exception as exc:  # a bug: say so (the details to admins only), keep serving
                    reason, ref = disclosure.internal_error(exc, details=self.details(request))
                    _logger.exception("%s %s failed (reference %s)", request.method, request.url.path, ref)
                    response = error(500, reason)
                server.metrics.request(response.status_code)
                return response
            return endpoint
        return wrap

    def details(self, request: Request) -> bool:
        """Whether the caller may read internal details (paths, error texts): an admin, or auth off."""
        return disclosure.sees_details(request.state.grant, auth_enabled=self.server.auth)

    def public(self, request: Request, text: str) -> str:
        return text if self.details(request) else disclosure.without_paths(text)
