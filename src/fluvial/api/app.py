"""The HTTP API of ``fluvial serve`` (Starlette on uvicorn): the routes of every group in one application.

======  ================================  =======================================================
POST    /v1/events                        ingest events (JSON array, NDJSON, MessagePack; gzip)
GET     /v1/views                         every view: version, batch cut-off, realtime lag, late events
GET     /v1/views/{name}                  rows, always batch ⊕ realtime (filters: key, from, to)
POST    /v1/views/{name}/batch            run the batch layer now (202 + job)
POST    /v1/views/{name}/reprocess        Kappa reprocessing into a new version (202 + job)
POST    /v1/views/{name}/rollback         switch the alias back to the previous version
GET     /v1/jobs, /v1/jobs/{id}           batch runs, reprocessings
GET     /v1/metrics, /metrics             metrics as JSON, and in Prometheus text format
GET     /healthz                          liveness and readiness
GET     /v1/pipelines                     the served pipelines and their lineage
GET     /v1/devices                       devices: last seen, late, future-stamped, backlogs, quiet
GET     /ui                               the web UI: live views, runner metrics, lineage
GET     /openapi.json, /docs              the API description
======  ================================  =======================================================
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from fluvial.api import admin, devices, ingest, ops, pipelines, views
from fluvial.api.common import Api, error

if TYPE_CHECKING:
    from fluvial.server.core import Server

__all__ = ["build_app"]


def build_app(server: Server) -> Starlette:
    """The ASGI application of ``server``."""
    api = Api(server)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await server.start_background()
        yield
        await server.stop()

    routes = [*ops.routes(api), *ingest.routes(api), *views.routes(api), *admin.routes(api), *pipelines.routes(api),
              *devices.routes(api)]
    return Starlette(routes=routes, lifespan=lifespan, middleware=[_same_origin(server)],
                     exception_handlers={404: _not_found, 405: _not_allowed})


def _same_origin(server: Server) -> Middleware:
    """The Host and Origin checks (:mod:`fluvial.api.origin`) of ``server``'s settings."""
    from fluvial.api.origin import OriginPolicy, SameOriginMiddleware

    limits = server.settings.server
    policy = OriginPolicy(bind_host=limits.host, allowed_hosts=limits.allowed_hosts,
                          allowed_origins=limits.allowed_origins)
    return Middleware(SameOriginMiddleware, policy=policy, on_refused=server.metrics.request)


async def _not_found(request: Request, exc: Exception) -> Response:
    return error(404, f"no such endpoint {request.method} {request.url.path[:200]}: see /docs")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    headers = dict(exc.headers) if isinstance(exc, HTTPException) and exc.headers else None
    return error(405, f"{request.method} is not allowed on {request.url.path[:200]}: see /docs", headers)
