"""The OpenAPI 3.1 document of ``fluvial serve`` and a self-contained ``/docs`` page."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["docs_html", "document"]

_ROW = {"type": "object", "required": ["key", "window", "value"], "properties": {
    "key": {"description": "the key (string, number, bool, null or an array of them)"},
    "window": {"oneOf": [{"type": "null"}, {"type": "array", "items": {"type": "integer"}, "minItems": 2,
                                                   "maxItems": 2}],
               "description": "[start_ms, end_ms) in event time, or null"},
    "value": {"description": "the aggregate (number, object, list...)"}}}
_EVENT = {"type": "object", "required": ["device", "kind", "ts", "seq", "payload"], "additionalProperties": False,
          "properties": {"device": {"type": "string", "minLength": 1},
                         "kind": {"type": "string", "description": "a registered schema (`fluvial schema list`)"},
                         "ts": {"type": "integer", "description": "event time, epoch ms"},
                         "seq": {"type": "integer", "minimum": 0,
                                 "description": "the device's counter: (device, seq) identifies a retry"},
                         "payload": {"type": "object"}}}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}}
_JOB = {"type": "object", "properties": {
    "id": {"type": "string"}, "kind": {"type": "string", "enum": ["batch", "reprocess"]},
    "view": {"type": "string"}, "pipeline": {"type": "string"},
    "status": {"type": "string", "enum": ["running", "done", "failed"]},
    "result": {"type": ["object", "null"]}, "error": {"type": ["string", "null"]}}}


def _err(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def document() -> dict[str, Any]:
    """The OpenAPI description of every endpoint."""
    from fluvial import __version__

    view_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    auth = {"401": _err("missing or invalid bearer token (when auth is on)"),
            "403": _err("the token's role may not do this")}
    ingest_result = {"type": "object", "properties": {
        "accepted": {"type": "integer"}, "duplicates": {"type": "integer"},
        "rejected": {"type": "array", "items": {"type": "object", "properties": {
            "index": {"type": "integer"}, "reason": {"type": "string"}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "fluvial", "version": __version__,
                 "description": "Ingest IoT events into an immutable log; query views merged from the "
                                "batch and speed layers (batch ⊕ realtime)."},
        "components": {
            "schemas": {"Event": _EVENT, "Row": _ROW, "Error": _ERROR, "Job": _JOB},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "`fluvial token create --device ID | --read | --admin`"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/events": {"post": {
                "summary": "Ingest events",
                "description": "Many events per request: a JSON array (or NDJSON, or MessagePack), optionally "
                               "gzip (`Content-Encoding: gzip`). Each event is validated against its kind's "
                               "schema; invalid ones are listed with their index and reason and kept in the "
                               "dead-letter log. A 200 means the accepted events are in the log. Duplicates by "
                               "(device, seq) are acknowledged and stored once, so retrying is safe.",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "application/msgpack": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {"200": _json("written (some events may be rejected: see `rejected`)", ingest_result),
                              "400": _err("the body is not readable (malformed JSON/MessagePack, invalid gzip)"),
                              "413": _err("the body or the event count is over the server's limit"),
                              "415": _err("unsupported Content-Type or Content-Encoding"),
                              "422": _json("no event of the body is valid", ingest_result),
                              "429": _err("ingest is behind: retry after `Retry-After` seconds"),
                              "503": _err("the speed layer is behind: retry after `Retry-After` seconds"),
                              **auth}}},
            "/v1/views": {"get": {"summary": "List the views", "responses": {"200": _json(
                "name, version, batch cut-off, realtime lag, late-event count of every view",
                {"type": "object"}), **auth}}},
            "/v1/views/{name}": {"get": {
                "summary": "Query a view (batch ⊕ realtime)",
                "parameters": [view_name,
                               {"name": "key", "in": "query", "schema": {"type": "string"},
                                "description": "only this key; JSON if it parses (42, [\"dev-1\",\"temperature\"]), "
                                               "else a string"},
                               {"name": "from", "in": "query", "schema": {"type": "string"},
                                "description": "windows starting at or after (epoch ms or ISO-8601)"},
                               {"name": "to", "in": "query", "schema": {"type": "string"},
                                "description": "windows starting before (epoch ms or ISO-8601)"},
                               {"name": "version", "in": "query", "schema": {"type": "integer"},
                                "description": "read this batch version alone (no realtime part)"}],
                "responses": {"200": _json("the rows", {"type": "object", "properties": {
                    "view": {"type": "string"}, "version": {"type": ["integer", "null"]},
                    "rows": {"type": "array", "items": {"$ref": "#/components/schemas/Row"}}}}),
                    "404": _err("no such view"), **auth}}},
            "/v1/views/{name}/batch": {"post": {
                "summary": "Run the batch layer of the view's pipeline now (admin)", "parameters": [view_name],
                "responses": {"202": _json("started", {"$ref": "#/components/schemas/Job"}), **auth}}},
            "/v1/views/{name}/reprocess": {"post": {
                "summary": "Kappa reprocessing into a new version (admin)", "parameters": [view_name],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                    "from": {"type": "string", "description": "earliest | offset | P:O,... | epoch ms | ISO time"},
                    "flow": {"type": "string", "description": "path of the new flow file (on the server)"},
                    "dry_run": {"type": "boolean"}, "keep_old": {"type": "boolean"},
                    "grace_s": {"type": "number"}}}}}},
                "responses": {"202": _json("started", {"$ref": "#/components/schemas/Job"}), **auth}}},
            "/v1/views/{name}/rollback": {"post": {
                "summary": "Switch back to the previous version (admin)", "parameters": [view_name],
                "responses": {"200": _json("the versions now current", {"type": "object"}),
                              "409": _err("no previous version"), **auth}}},
            "/v1/jobs": {"get": {"summary": "Batch runs and reprocessings", "responses": {
                "200": _json("jobs", {"type": "object"}), **auth}}},
            "/v1/jobs/{id}": {"get": {"summary": "One job", "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json("the job", {"$ref": "#/components/schemas/Job"}),
                              "404": _err("no such job"), **auth}}},
            "/v1/pipelines": {"get": {"summary": "The served pipelines: file, architecture, views, lineage",
                                      "responses": {"200": _json("pipelines", {"type": "object"}), **auth}}},
            "/ui": {"get": {"summary": "The web UI: live views, runner metrics, lineage", "responses": {
                "200": {"description": "text/html"}, **auth}}},
            "/v1/metrics": {"get": {"summary": "Metrics (JSON)", "responses": {
                "200": _json("events in/s, per-runner batch duration, lag, late events, dead letters",
                             {"type": "object"}), **auth}}},
            "/metrics": {"get": {"summary": "Metrics (Prometheus text format)", "responses": {
                "200": {"description": "text/plain; version=0.0.4"}, **auth}}},
            "/healthz": {"get": {"summary": "Health", "security": [], "responses": {
                "200": _json("ok", {"type": "object"}), "503": _json("degraded", {"type": "object"})}}},
        },
    }


def docs_html() -> str:
    """A readable page of the API, without assets from the internet."""
    doc = document()
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>fluvial API</title><style>"
             "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
             "code{background:#f3f3f3;padding:0 .2rem}.m{font-weight:bold;display:inline-block;width:4rem}"
             "li{margin:.2rem 0}</style></head><body>",
             f"<h1>fluvial API {html.escape(doc['info']['version'])}</h1>",
             f"<p>{html.escape(doc['info']['description'])}</p>",
             "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>. Auth: "
             "<code>Authorization: Bearer TOKEN</code> when the server runs with tokens.</p>"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            parts.append(f"<h3><span class='m'>{method.upper()}</span><code>{html.escape(path)}</code> — "
                         f"{html.escape(op['summary'])}</h3>")
            if op.get("description"):
                parts.append(f"<p>{html.escape(op['description'])}</p>")
            params = op.get("parameters", [])
            if params:
                parts.append("<ul>" + "".join(
                    f"<li><code>{html.escape(p['name'])}</code> ({p['in']}) "
                    f"{html.escape(p.get('description', ''))}</li>"
                    for p in params) + "</ul>")
            parts.append("<ul>" + "".join(f"<li><b>{code}</b> {html.escape(r['description'])}</li>"
                                          for code, r in op["responses"].items()) + "</ul>")
    parts.append("</body></html>")
    return "".join(parts)
