"""The HTTP API of ``fluvial serve`` (Starlette on uvicorn).

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
GET     /ui                               the web UI: live views, runner metrics, lineage
GET     /openapi.json, /docs              the API description
======  ================================  =======================================================
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from fluvial.errors import ConfigError, FluvialError, StoreError, ViewNotFound
from fluvial.events.diagnose import json_problem
from fluvial.server import disclosure
from fluvial.server.auth import AuthError, authorize, parse_bearer
from fluvial.server.core import Server
from fluvial.server.ingest import AllRejected, IngestError, decompress, parse_body

__all__ = ["build_app"]

_logger = logging.getLogger("fluvial.server")

_enc = msgspec.json.Encoder()


class MsgspecJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _enc.encode(content)


def _error(status: int, reason: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    return MsgspecJSON({"error": reason, "status": status, **extra}, status_code=status, headers=headers)


def build_app(server: Server) -> Starlette:
    """The ASGI application of ``server``."""
    from fluvial.server.flowfiles import FlowFilePolicy

    flow_files = FlowFilePolicy.of(server.settings)  # what reprocessing may load

    def guard(action: str) -> Callable[[Callable[[Request], Awaitable[Response]]],
                                       Callable[[Request], Awaitable[Response]]]:
        def wrap(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                request.state.grant = None
                try:
                    if server.auth:
                        grant = server.tokens.authenticate(parse_bearer(request.headers.get("authorization")))
                        authorize(grant, action)  # type: ignore[arg-type]
                        request.state.grant = grant
                    response = await handler(request)
                except AuthError as exc:
                    response = _error(exc.status, exc.reason,
                                      {"WWW-Authenticate": 'Bearer realm="fluvial"'} if exc.status == 401 else None)
                except ViewNotFound as exc:
                    response = _error(404, str(exc) if _details(request)
                                      else disclosure.unknown_view(request.path_params.get("name")))
                except (ConfigError, StoreError) as exc:
                    response = _error(400 if isinstance(exc, ConfigError) else 409, _public(request, str(exc)))
                except FluvialError as exc:
                    response = _error(400, _public(request, str(exc)))
                except Exception as exc:  # a bug: say so (the details to admins only), keep serving
                    reason, ref = disclosure.internal_error(exc, details=_details(request))
                    _logger.exception("%s %s failed (reference %s)", request.method, request.url.path, ref)
                    response = _error(500, reason)
                server.metrics.request(response.status_code)
                return response
            return endpoint
        return wrap

    def _details(request: Request) -> bool:
        """Whether the caller may read internal details (paths, error texts): an admin, or auth off."""
        return disclosure.sees_details(request.state.grant, auth_enabled=server.auth)

    def _public(request: Request, text: str) -> str:
        return text if _details(request) else disclosure.without_paths(text)

    # -- ingest -------------------------------------------------------------------------------
    @guard("ingest")
    async def post_events(request: Request) -> Response:
        from fluvial.server.limits import BodyTimeout, ClientGone, Shed, read_body

        limits = server.settings.server
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
            if not length.isdigit():
                return _error(400, f"invalid Content-Length {length[:40]!r}")
            return _error(413, f"the body is {length} bytes; the server takes at most {limits.max_body_bytes} "
                               "(max_body_bytes): send fewer events per request")
        unavailable = server.writer.unavailable()
        if unavailable is not None:  # the log writer is failing: answer at once, without reading the body
            return _unavailable(unavailable)
        key = server.limits.key_of(request.state.grant, request.client.host if request.client else None)
        try:  # before a byte of the body is read: the pending budget, the queue, memory, the device's rates
            ticket = server.limits.admit(None if length is None else int(length), key, lagging=server.overloaded())
        except Shed as exc:
            return _shed(exc)
        try:  # (the body is not kept in this frame: _ingest lets it go once decoded)
            return await _ingest(request, ticket, await read_body(
                request.receive, ticket, max_bytes=limits.max_body_bytes,
                timeout_s=server.settings.limits.body_timeout_s))
        except Shed as exc:
            return _shed(exc)
        except BodyTimeout as exc:
            return _error(408, exc.reason, {"Connection": "close"})
        except (ClientGone, IngestError) as exc:
            return _error(exc.status, exc.reason)
        finally:
            ticket.release()

    async def _ingest(request: Request, ticket: Any, body: bytearray) -> Response:
        limits = server.settings.server
        grant = request.state.grant
        server.metrics.bytes_in += len(body)
        try:
            data = decompress(body, request.headers.get("content-encoding"), limits.max_body_bytes)
            if data is not body:
                ticket.hold(len(data))  # the inflated bytes count against the budget too
            parsed = parse_body(data, request.headers.get("content-type"), server.schemas,
                                max_events=limits.max_events_per_request)
            del body, data  # decoded: the bytes are not needed while the events wait for the log writer
        except AllRejected as exc:
            parsed = exc.parsed
            if grant is not None and grant.role == "device":
                _check_devices(grant, parsed)
            ticket.events(parsed.total)
            if not _may_keep(ticket, parsed.letters):
                raise _quota_refusal(ticket, exc.reason, parsed) from None
            failed = await _write([], parsed.letters)
            if failed is not None:
                return failed
            server.metrics.events_rejected += len(parsed.rejected)
            server.metrics.dead_letters += len(parsed.letters)
            return MsgspecJSON({"error": exc.reason, "status": 422, "accepted": 0, "duplicates": 0,
                                "rejected": [{"index": i, "reason": r} for i, r in parsed.rejected]},
                               status_code=422)
        except IngestError as exc:
            if exc.raw is not None:
                return await _keep_unreadable(request, exc, ticket)
            return _error(exc.status, exc.reason)
        if grant is not None and grant.role == "device":
            _check_devices(grant, parsed)
        ticket.events(parsed.total)
        letters = parsed.letters if _may_keep(ticket, parsed.letters) else []
        future = server.writer.submit(parsed.events, letters)
        failed = await _write(parsed.events, letters, future)
        if failed is not None:
            return failed
        appended = future.result()
        server.metrics.accepted(appended.accepted)
        server.metrics.events_duplicate += appended.duplicates
        server.metrics.events_rejected += len(parsed.rejected)
        server.metrics.dead_letters += len(letters)
        answer = {"accepted": appended.accepted, "duplicates": appended.duplicates,
                  "rejected": [{"index": i, "reason": r} for i, r in parsed.rejected]}
        if len(letters) < len(parsed.letters):
            answer["warning"] = (f"the rejected events were NOT kept in the dead-letter log: {ticket.key} is over "
                                 "its dead-letter quota ([limits] dead_letter_bytes); fix what the device sends")
        return MsgspecJSON(answer)

    async def _keep_unreadable(request: Request, exc: IngestError, ticket: Any) -> Response:
        """Dead-letter a body refused as a whole (as received), within its device's quota."""
        from fluvial.log.deadletter import DeadLetter

        grant = request.state.grant
        assert exc.raw is not None
        source = "http" if grant is None else f"http:{grant.role}:{grant.device or grant.token_id}"
        letter = DeadLetter(reason=f"{exc.status}: {exc.reason}", source=source, line=None,
                            raw=exc.raw, at_ms=time.time_ns() // 1_000_000)
        if not _may_keep(ticket, [letter]):
            raise _quota_refusal(ticket, f"{exc.status}: {exc.reason}")
        failed = await _write([], [letter])
        if failed is not None:
            return failed
        server.metrics.dead_letters += 1
        return _error(exc.status, exc.reason)

    def _may_keep(ticket: Any, letters: Any) -> bool:
        """Whether the dead letters fit the quota of the ticket's device (or client address)."""
        return not letters or server.limits.keep_dead_letters(ticket.key, sum(len(x.raw) for x in letters))

    def _quota_refusal(ticket: Any, what: str, parsed: Any = None) -> Exception:
        shed = server.limits.quota_refusal(ticket.key, what)
        if parsed is not None:  # every event of the body was invalid: say which, as a 422 would
            shed.rejected = [{"index": i, "reason": r} for i, r in parsed.rejected]
            server.metrics.events_rejected += len(parsed.rejected)
        return shed

    def _shed(exc: Any) -> Response:
        server.metrics.throttled += 1
        extra = {} if exc.rejected is None else {"accepted": 0, "duplicates": 0, "rejected": exc.rejected}
        return _error(exc.status, exc.reason, {"Retry-After": str(exc.retry_after_s)}, **extra)

    async def _write(events: Any, letters: Any, future: Any = None) -> Response | None:
        """Hand events and dead letters to the log writer; the answer to give if that failed."""
        from fluvial.errors import ValidationError
        from fluvial.server.writer import LogUnavailable

        try:
            await asyncio.wrap_future(future if future is not None else server.writer.submit(events, letters))
        except LogUnavailable as exc:
            return _unavailable(exc)
        except ValidationError as exc:  # ingest let through what the log refuses: a bug, but this request's only
            return _error(422, f"the log cannot store these events: {exc}; nothing of this request was stored")
        return None

    def _unavailable(exc: Any) -> Response:
        server.metrics.throttled += 1
        server.limits.refused("log_unavailable")
        return _error(507 if exc.disk_full else 503, exc.reason, {"Retry-After": str(exc.retry_after_s)})

    def _check_devices(grant: Any, parsed: Any) -> None:
        from fluvial.server.ingest import devices_of

        for index, device in devices_of(parsed):
            if device != grant.device:
                raise AuthError(403, f"device token for {grant.device!r} cannot write events of device "
                                     f"{device!r} (event {index}); nothing was written")

    # -- queries --------------------------------------------------------------------------------
    @guard("query")
    async def list_views(request: Request) -> Response:
        infos = await server.in_query_pool(server.view_infos)
        return MsgspecJSON({"views": infos if _details(request) else disclosure.public_view_infos(infos)})

    @guard("query")
    async def get_view(request: Request) -> Response:
        from fluvial.serving.base import UNSET

        name = request.path_params["name"]
        params = request.query_params
        unknown = set(params) - {"key", "from", "to", "version"}
        if unknown:
            return _error(400, f"unknown query parameters {sorted(unknown)}; use key, from, to, version")
        try:
            key = _key_param(params["key"]) if "key" in params else UNSET
            from_ms = _time_param("from", params["from"]) if "from" in params else None
            to_ms = _time_param("to", params["to"]) if "to" in params else None
            version = _version_param(params["version"]) if "version" in params else None
        except (ValueError, TypeError) as exc:
            return _error(400, f"bad query parameter: {exc}")
        filters: dict[str, Any] = {"key": key, "from_ms": from_ms, "to_ms": to_ms}
        if version is not None:
            filters.update(version=version, realtime=False)
        try:
            store_version, rows = await server.in_query_pool(
                lambda: server.store().query_with_version(name, **filters))
        except ConfigError:  # (the view has no windows for from/to, ...) or no such version: 404
            if version is None or version in await server.in_query_pool(lambda: server.store().view(name).versions):
                raise
            return _error(404, f"view {name!r} has no version {version}: GET /v1/views lists its versions")
        return MsgspecJSON({"view": name, "version": store_version, "rows": rows})

    # -- admin ------------------------------------------------------------------------------------
    @guard("admin")
    async def batch_view(request: Request) -> Response:
        name = request.path_params["name"]
        await server.in_query_pool(_known_view, name)
        job = server.start_batch(name)
        return MsgspecJSON(_job(job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @guard("admin")
    async def reprocess_view(request: Request) -> Response:
        from fluvial.layers.kappa import parse_start
        from fluvial.server.flowfiles import reprocess_options

        name = request.path_params["name"]
        await server.in_query_pool(_known_view, name)
        options = reprocess_options(await _json_body(request), flow_files,
                                    served=[reg.file for reg in server.flows.pipelines.values()])
        await server.in_query_pool(parse_start, options["start"], server.log)  # a bad `from` is a 400 now
        job = server.start_reprocess(name, **options)
        return MsgspecJSON(_job(job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @guard("admin")
    async def rollback_view(request: Request) -> Response:
        name = request.path_params["name"]
        await server.in_query_pool(_known_view, name)
        versions = await asyncio.get_running_loop().run_in_executor(None, server.rollback, name)
        return MsgspecJSON({"view": name, "versions": versions})

    def _known_view(name: str) -> None:
        """404 for a view no served flow writes and the store does not hold (400 when only the store has it)."""
        if server.flows.pipeline_of(name, missing_ok=True) is None:
            server.store().view(name)  # ViewNotFound: 404
            server.flows.pipeline_of(name)  # ConfigError: no flow of this server writes it (400)

    @guard("query")
    async def list_jobs(request: Request) -> Response:
        return MsgspecJSON({"jobs": [_job(j, _details(request)) for j in list(server.jobs.values())]})

    @guard("query")
    async def get_job(request: Request) -> Response:
        job = server.jobs.get(request.path_params["id"])
        if job is None:
            return _error(404, f"no job {request.path_params['id'][:100]!r} (jobs are kept until the server "
                               "restarts)")
        return MsgspecJSON(_job(job, _details(request)))

    # -- operations ---------------------------------------------------------------------------------
    @guard("query")
    async def metrics_json(request: Request) -> Response:
        return MsgspecJSON(_metrics(server))

    @guard("query")
    async def metrics_prometheus(request: Request) -> Response:
        return Response(_prometheus(_metrics(server)), media_type="text/plain; version=0.0.4")

    async def healthz(request: Request) -> Response:
        details = _admin_caller(request)
        problems = []
        if server.writer.failed:
            problems.append(f"log writer: {server.writer.failed}")
        for name, runner in server.speed.items():
            if not runner.alive:
                problems.append(f"speed layer {name}: stopped")
            elif time.time() - runner.last_error_at < 30:  # failing now: restarts from its checkpoint
                last = runner.last_error if details else disclosure.LAST_ERROR_HIDDEN
                problems.append(f"speed layer {name}: {runner.errors} failures, last: {last}")
        problems += server.log_health.problems()  # damaged batches on disk, batch runs failing on them
        if not details:  # no file paths for callers who are not admins
            problems = [disclosure.without_paths(p) for p in problems]
        body = {"status": "ok" if not problems else "degraded", "problems": problems,
                "uptime_s": round(time.time() - server.metrics.started, 1)}
        return MsgspecJSON(body, status_code=200 if not problems else 503)

    def _admin_caller(request: Request) -> bool:
        """For routes without a guard: auth off, or a valid admin token in the request."""
        if not server.auth:
            return True
        try:
            grant = server.tokens.verify(parse_bearer(request.headers.get("authorization")) or "")
        except StoreError:
            return False
        return disclosure.sees_details(grant, auth_enabled=True)

    async def openapi(request: Request) -> Response:
        from fluvial.server.openapi import document

        return MsgspecJSON(document(server.schemas))

    async def docs(request: Request) -> Response:
        from fluvial.server.openapi import docs_html

        return HTMLResponse(docs_html())

    @guard("query")
    async def ui(request: Request) -> Response:
        from fluvial.server.ui import HEADERS, page

        return HTMLResponse(page(), headers=HEADERS)

    @guard("query")
    async def pipelines(request: Request) -> Response:
        found = [{"name": reg.name, "file": str(reg.file), "architecture": reg.architecture, "views": list(reg.views),
                  "batch_every_s": reg.batch_every_s, "lineage": reg.pipeline.explain()}
                 for reg in server.flows.pipelines.values()]
        return MsgspecJSON({"pipelines": found if _details(request) else
                            [disclosure.public_pipeline(p) for p in found]})

    async def index(request: Request) -> Response:
        return MsgspecJSON({"service": "fluvial", "ui": "/ui", "docs": "/docs", "openapi": "/openapi.json",
                            "views": "/v1/views", "events": "/v1/events", "metrics": "/v1/metrics",
                            "health": "/healthz"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await server.start_background()
        yield
        await server.stop()

    routes = [
        Route("/", index), Route("/healthz", healthz), Route("/openapi.json", openapi), Route("/docs", docs),
        Route("/v1/events", post_events, methods=["POST"]),
        Route("/v1/views", list_views), Route("/v1/views/{name}", get_view),
        Route("/v1/views/{name}/batch", batch_view, methods=["POST"]),
        Route("/v1/views/{name}/reprocess", reprocess_view, methods=["POST"]),
        Route("/v1/views/{name}/rollback", rollback_view, methods=["POST"]),
        Route("/v1/jobs", list_jobs), Route("/v1/jobs/{id}", get_job), Route("/v1/pipelines", pipelines),
        Route("/ui", ui),
        Route("/v1/metrics", metrics_json), Route("/metrics", metrics_prometheus),
    ]
    return Starlette(routes=routes, lifespan=lifespan, middleware=[_same_origin(server)],
                     exception_handlers={404: _not_found, 405: _not_allowed})


def _same_origin(server: Server) -> Middleware:
    """The Host and Origin checks (:mod:`fluvial.server.origin`) of ``server``'s settings."""
    from fluvial.server.origin import OriginPolicy, SameOriginMiddleware

    limits = server.settings.server
    policy = OriginPolicy(bind_host=limits.host, allowed_hosts=limits.allowed_hosts,
                          allowed_origins=limits.allowed_origins)
    return Middleware(SameOriginMiddleware, policy=policy, on_refused=server.metrics.request)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(404, f"no such endpoint {request.method} {request.url.path[:200]}: see /docs")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    headers = dict(exc.headers) if isinstance(exc, HTTPException) and exc.headers else None
    return _error(405, f"{request.method} is not allowed on {request.url.path[:200]}: see /docs", headers)


_INT64 = (-(2**63), 2**63 - 1)
_INTEGER = re.compile(r"-?[0-9]{1,19}")  # ASCII digits (int() would take spaces, '_', other scripts' digits)


def _time_param(name: str, text: str) -> int:
    """``from``/``to``: epoch ms or ISO-8601, within the 64-bit times the views hold."""
    if _INTEGER.fullmatch(text):
        value = int(text)
    elif text.lstrip("-").isdigit():  # digits past 64 bits (or not ASCII): not converted
        value = None
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{_shown(text)!r} is not an ISO-8601 time (like 2016-01-06T12:00:00Z) nor epoch ms"
                             ) from None
        value = int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)
    if value is None or not _INT64[0] <= value <= _INT64[1]:
        raise ValueError(f"{name}={_shown(text)} is not a time the views hold: epoch milliseconds go from "
                         f"{_INT64[0]} to {_INT64[1]}")
    return value


def _version_param(text: str) -> int:
    """``version``: a batch version number, 1 to 2**63 - 1."""
    value = int(text) if _INTEGER.fullmatch(text) else None
    if value is None and not text.lstrip("-").isdigit():  # not digits at all (the wording it had)
        raise ValueError(f"invalid literal for int() with base 10: {_shown(text)!r}")
    if value is None or not 1 <= value <= _INT64[1]:
        raise ValueError(f"version={_shown(text)} is not a version: versions go from 1 to {_INT64[1]}")
    return value


def _shown(text: str) -> str:
    return text if len(text) <= 30 else text[:30] + "..."


def _key_param(text: str) -> Any:
    """``key``: the value its JSON spells when a view key can be that value, else the text itself.

    Strict JSON (``NaN`` and ``Infinity`` are text, as is ``1e400``); an object, or an array
    holding one, cannot be a key, but its text can (a string key).
    """
    from fluvial.serving.keys import encode_key

    try:
        value = json.loads(text, parse_constant=_not_json)
        encode_key(value)
    except (ValueError, ConfigError):
        return text
    except RecursionError:
        raise ValueError("key is nested too deeply: a view key is a value or a short array of values") from None
    return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > 1 << 20:
        raise ConfigError("the request body is larger than 1 MiB")
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise ConfigError(f"the body is not JSON: {json_problem(raw)}") from None
    except RecursionError:
        raise ConfigError("the body is not a JSON object of options: it is nested too deeply") from None


def _job(job: Any, details: bool = True) -> dict[str, Any]:
    out = job.to_dict()
    out["progress"] = {k: v for k, v in out["progress"].items() if not k.startswith("_")}
    return out if details else disclosure.public_job(out)


def _metrics(server: Server) -> dict[str, Any]:
    m = server.metrics
    runners = {}
    for name, runner in server.speed.items():
        p = runner.progress
        runners[name] = {"micro_batches": p.get("micro_batches", 0), "records": p.get("records", 0),
                         "last_batch_ms": round(p.get("last_batch_ms", 0.0), 3),
                         "lag_events": server.lag.get(name), "late_events": p.get("late_events", 0),
                         "errors": runner.errors}
    return {
        "uptime_s": round(time.time() - m.started, 1),
        "events": {"accepted": m.events_accepted, "duplicates": m.events_duplicate,
                   "rejected": m.events_rejected, "per_second": round(m.rate(), 1)},
        "dead_letters": m.dead_letters, "bytes_in": m.bytes_in, "throttled": m.throttled,
        "requests": {str(k): v for k, v in sorted(m.requests.items())},
        "log_appends": server.writer.appends, "pending_bytes": server.limits.pending_bytes,
        "limits": server.limits.snapshot(),
        "speed_layer": runners, "batch_layer": server.batch.stats,
    }


def _prometheus(m: dict[str, Any]) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], Any]]) -> None:
        lines.append(f"# HELP fluvial_{name} {help_}")
        lines.append(f"# TYPE fluvial_{name} {kind}")
        for labels, value in samples:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"fluvial_{name}{{{text}}} {value}" if text else f"fluvial_{name} {value}")

    ev = m["events"]
    metric("events_accepted_total", "counter", "Events appended to the log.", [({}, ev["accepted"])])
    metric("events_duplicate_total", "counter", "Events acknowledged as duplicates (device, seq).",
           [({}, ev["duplicates"])])
    metric("events_rejected_total", "counter", "Events refused by validation.", [({}, ev["rejected"])])
    metric("events_per_second", "gauge", "Accepted events per second over the last 10 s.", [({}, ev["per_second"])])
    metric("dead_letters_total", "counter", "Records written to the dead-letter log.", [({}, m["dead_letters"])])
    metric("ingest_bytes_total", "counter", "Request body bytes received.", [({}, m["bytes_in"])])
    metric("throttled_total", "counter", "Ingest requests answered 429/503.", [({}, m["throttled"])])
    from fluvial.server.limits import prometheus_metrics

    for name, kind, help_, samples in prometheus_metrics(m["limits"]):
        metric(name, kind, help_, samples)
    metric("http_requests_total", "counter", "HTTP requests by status.",
           [({"status": s}, n) for s, n in m["requests"].items()])
    sl = m["speed_layer"]
    metric("speed_micro_batches_total", "counter", "Micro-batches committed.",
           [({"pipeline": p}, r["micro_batches"]) for p, r in sl.items()])
    metric("speed_batch_duration_ms", "gauge", "Duration of the last micro-batch.",
           [({"pipeline": p}, r["last_batch_ms"]) for p, r in sl.items()])
    metric("speed_lag_events", "gauge", "Events in the log the speed layer has not processed.",
           [({"pipeline": p}, r["lag_events"]) for p, r in sl.items()])
    metric("speed_late_events_total", "counter", "Events later than the allowed lateness.",
           [({"pipeline": p}, r["late_events"]) for p, r in sl.items()])
    bl = m["batch_layer"]
    metric("batch_runs_total", "counter", "Batch-layer runs.", [({"pipeline": p}, r["runs"]) for p, r in bl.items()])
    metric("batch_duration_seconds", "gauge", "Duration of the last batch-layer run.",
           [({"pipeline": p}, r.get("last_duration_s")) for p, r in bl.items()])
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
