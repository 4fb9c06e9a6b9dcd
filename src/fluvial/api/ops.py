"""Operations: health, metrics (JSON and Prometheus), the API description, the web UI, the index."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from fluvial.api import disclosure
from fluvial.api.common import Api, MsgspecJSON
from fluvial.errors import StoreError
from fluvial.server.auth import parse_bearer

if TYPE_CHECKING:
    from fluvial.server.core import Server

__all__ = ["metrics", "prometheus", "routes"]


def routes(api: Api) -> list[Route]:
    server = api.server

    @api.guard("query")
    async def metrics_json(request: Request) -> Response:
        return MsgspecJSON(metrics(server))

    @api.guard("query")
    async def metrics_prometheus(request: Request) -> Response:
        return Response(prometheus(metrics(server)), media_type="text/plain; version=0.0.4")

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
        from fluvial.api.openapi import document

        return MsgspecJSON(document(server.schemas))

    async def docs(request: Request) -> Response:
        from fluvial.api.openapi import docs_html

        return HTMLResponse(docs_html())

    @api.guard("query")
    async def ui(request: Request) -> Response:
        from fluvial.api.ui import HEADERS, page

        return HTMLResponse(page(), headers=HEADERS)

    async def index(request: Request) -> Response:
        return MsgspecJSON({"service": "fluvial", "ui": "/ui", "docs": "/docs", "openapi": "/openapi.json",
                            "views": "/v1/views", "events": "/v1/events", "metrics": "/v1/metrics",
                            "health": "/healthz"})

    return [Route("/", index), Route("/healthz", healthz), Route("/openapi.json", openapi), Route("/docs", docs),
            Route("/ui", ui), Route("/v1/metrics", metrics_json), Route("/metrics", metrics_prometheus)]


def metrics(server: Server) -> dict[str, Any]:
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
        "devices": server.devices.summary(),
    }


def prometheus(m: dict[str, Any]) -> str:
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
    dv = m["devices"]
    metric("devices", "gauge", f"Devices that wrote to the log, by state (quiet: nothing stored from them for "
           f"{dv['quiet_after_ms'] // 1000} s).",
           [({"state": "quiet"}, dv["quiet"]), ({"state": "active"}, dv["known"] - dv["quiet"])])
    metric("device_late_events_total", "counter", "Events stamped behind their own device by more than 30 s.",
           [({}, dv["late_events"])])
    metric("device_future_events_total", "counter", "Events stamped more than 5 min after the log stored them.",
           [({}, dv["future_events"])])
    metric("device_backlog_flushes_total", "counter", "Backlogs devices flushed (back from offline).",
           [({}, dv["backlog_flushes"])])
    bl = m["batch_layer"]
    metric("batch_runs_total", "counter", "Batch-layer runs.", [({"pipeline": p}, r["runs"]) for p, r in bl.items()])
    metric("batch_duration_seconds", "gauge", "Duration of the last batch-layer run.",
           [({"pipeline": p}, r.get("last_duration_s")) for p, r in bl.items()])
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
