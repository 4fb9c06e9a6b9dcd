"""The OpenAPI 3.1 document of ``fluvial serve`` and a self-contained ``/docs`` page."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from fluvial.log.limits import MAX_TS_MS, MIN_TS_MS

if TYPE_CHECKING:
    from fluvial.events.schema import Schema, SchemaRegistry

__all__ = ["docs_html", "document"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1
VIEW_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
"""What a view name may be (:data:`fluvial.serving.keys.VIEW_NAME`); other names are 404."""

_ROW = {"type": "object", "required": ["key", "window", "value"], "properties": {
    "key": {"description": "the key (string, number, bool, null or an array of them)"},
    "window": {"oneOf": [{"type": "null"}, {"type": "array", "items": {"type": "integer"}, "minItems": 2,
                                                   "maxItems": 2}],
               "description": "[start_ms, end_ms) in event time, or null"},
    "value": {"description": "the aggregate (number, object, list...)"}}}
_DEVICE = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f]+$",
           "description": "the device's id: 1 to 256 characters, no control characters"}
_TS = {"type": "integer", "minimum": MIN_TS_MS, "maximum": MAX_TS_MS,
       "description": "event time, epoch ms of a date in the years 1 to 9999"}
_SEQ = {"type": "integer", "minimum": 0, "maximum": _INT64_MAX,
        "description": "the device's counter: (device, seq) identifies a retry"}
_EVENT: dict[str, Any] = {
    "type": "object", "required": ["device", "kind", "ts", "seq", "payload"], "additionalProperties": False,
    "properties": {"device": _DEVICE,
                   "kind": {"type": "string", "minLength": 1,
                            "description": "a registered schema (`fluvial schema list`); not empty"},
                   "ts": _TS, "seq": _SEQ,
                   "payload": {"type": "object", "description": "matches the kind's schema; integers within 64 "
                                                                "bits, nested at most 256 levels"}}}
_REF = "#/components/schemas/"
_INTEGER = {"type": "integer", "minimum": _INT64_MIN, "maximum": _UINT64_MAX,
            "description": "an integer the log can store: -2**63 to 2**64 - 1"}
_NUMBER = {"type": "number", "description": "a number; written as an integer (no fraction, no exponent), it must "
                                            "fit in 64 bits (-2**63 to 2**64 - 1): send larger ones as strings"}
_VALUE = {"type": ["null", "boolean", "string", "number", "array", "object"], "items": {"$ref": _REF + "Value"},
          "additionalProperties": {"$ref": _REF + "Value"},
          "description": "any JSON value whose integers fit in 64 bits, nested at most 256 levels"}
_FIELD_TYPES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"}, "int": {"$ref": _REF + "Integer"}, "float": _NUMBER,
    "bool": {"type": "boolean"}, "any": {"$ref": _REF + "Value"},
    "list": {"type": "array", "items": {"$ref": _REF + "Value"}},
    "object": {"type": "object", "additionalProperties": {"$ref": _REF + "Value"}}}


def _payload(schema: Schema) -> dict[str, Any]:
    """The JSON Schema of a kind's payload: its fields (``?``: optional, may be null), others kept."""
    fields = {name: _FIELD_TYPES[spec] for name, spec in schema.required().items()}
    fields.update({name: {"anyOf": [{"type": "null"}, _FIELD_TYPES[spec]]}
                   for name, spec in schema.optional().items()})
    return {"type": "object", "required": sorted(schema.required()), "properties": fields,
            "additionalProperties": {"$ref": _REF + "Value"},
            "description": f"schema {schema.kind!r} v{schema.version}; fields it does not name are kept"}


def _event(registry: SchemaRegistry | None) -> dict[str, Any]:
    """An event of one of the registered kinds (the envelope alone without a registry)."""
    if registry is None:
        return _EVENT
    kinds = [registry.get(kind) for kind in registry.kinds()]
    if not kinds:
        return {"not": {}, "description": "no kind is registered (`fluvial schema add`): no event is accepted"}
    return {"oneOf": [{**_EVENT, "properties": {**_EVENT["properties"], "kind": {"const": schema.kind},
                                                "payload": _payload(schema)}} for schema in kinds],
            "description": "an event of a registered kind (`fluvial schema list`): " + ", ".join(
                repr(schema.kind) for schema in kinds)}


_ERROR = {"type": "object", "required": ["error", "status"], "properties": {
    "error": {"type": "string", "description": "what failed and how to fix it"},
    "status": {"type": "integer", "description": "the HTTP status, again"}}}
_JOB = {"type": "object", "required": ["id", "kind", "view", "pipeline", "status"], "properties": {
    "id": {"type": "string"}, "kind": {"type": "string", "enum": ["batch", "reprocess"]},
    "view": {"type": "string"}, "pipeline": {"type": "string"},
    "status": {"type": "string", "enum": ["running", "done", "failed"]},
    "started_ms": {"type": "integer"}, "finished_ms": {"type": ["integer", "null"]},
    "result": {"type": ["object", "null"]},
    "error": {"type": ["string", "null"], "description": "why it failed (admins only; others see a pointer to "
                                                         "the server log)"},
    "progress": {"type": "object"}}}
_INGEST_RESULT = {"type": "object", "required": ["accepted", "duplicates", "rejected"], "properties": {
    "accepted": {"type": "integer", "minimum": 0}, "duplicates": {"type": "integer", "minimum": 0},
    "rejected": {"type": "array", "items": {"type": "object", "required": ["index", "reason"], "properties": {
        "index": {"type": "integer", "minimum": 0}, "reason": {"type": "string"}}}},
    "warning": {"type": "string", "description": "the rejected events were not kept in the dead-letter log (the "
                                                 "device is over its dead-letter quota)"},
    "error": {"type": "string"}, "status": {"type": "integer"}}}
_DATE_TIME = [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}]
_EPOCH_MS_OR_TIME = {"anyOf": [{"type": "integer", "minimum": _INT64_MIN, "maximum": _INT64_MAX}, *_DATE_TIME]}
_REPROCESS_BODY = {"type": "object", "additionalProperties": False, "properties": {
    "from": {"anyOf": [{"type": "string", "enum": ["earliest", "beginning", "start"]},
                       {"type": "integer", "minimum": 0, "maximum": _INT64_MAX},
                       {"type": "string", "pattern": "^[0-9]{1,18}$"},
                       {"type": "string", "maxLength": 200,
                        "pattern": "^[0-9]{1,9}:[0-9]{1,18}(,[0-9]{1,9}:[0-9]{1,18})*$"},
                       *_DATE_TIME],
             "description": "earliest (the default) | an offset of every partition (below 10^12) | "
                            "PARTITION:OFFSET,... within the log | epoch ms (from 10^12) | an ISO-8601 time"},
    "flow": {"type": ["string", "null"], "minLength": 1,
             "description": "the new flow file (.py) on the server: inside its flow directories ([server] "
                            "flow_dirs) or one of its flow files, absolute or relative to a flow directory "
                            "(null or absent: the flow the server runs now)"},
    "dry_run": {"type": ["boolean", "null"]}, "keep_old": {"type": ["boolean", "null"]},
    "grace_s": {"type": ["number", "null"], "minimum": 0, "maximum": 1e9}}}
_RETRY = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def _err(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if headers:
        out["headers"] = headers
    return out


def _json(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _text(description: str, media_type: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


_REFUSED = "a Host that is not a name of this server ([server] allowed_hosts), or a state-changing request " \
           "from another web origin ([server] allowed_origins)"
_PUBLIC = {"403": _err(_REFUSED)}
_AUTH = {"401": _err("missing, invalid, revoked or expired bearer token (when auth is on)",
                     {"WWW-Authenticate": {"schema": {"type": "string"}}}),
         "403": _err("the token's role may not do this; or " + _REFUSED)}
_STORE = {"409": _err("the view store refused (e.g. busy, or no previous version to roll back to)")}


def _view_name() -> dict[str, Any]:
    return {"name": "name", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": VIEW_NAME_PATTERN, "examples": ["device_stats"]},
            "description": "a view: 1 to 128 letters, digits, '_', '.', '-' (other names: 404)"}


def _events(description: str, *, min_items: int = 0) -> dict[str, Any]:
    return {"anyOf": [{"type": "array", "items": {"$ref": _REF + "Event"}, "minItems": min_items},
                      {"$ref": _REF + "Event"}], "description": description}


def _ingest() -> dict[str, Any]:
    return {"post": {
        "summary": "Ingest events",
        "description": "Many events per request: a JSON array (or NDJSON, or MessagePack), optionally gzip "
                       "(`Content-Encoding: gzip`; other encodings: 415). Each event is validated against its "
                       "kind's schema; invalid ones are listed with their index and reason and kept in the "
                       "dead-letter log. A 200 means the accepted events are in the log. Duplicates by (device, "
                       "seq) are acknowledged and stored once, so retrying is safe.",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _events("an array of Events, or one Event")},
            "application/x-ndjson": {"schema": _events("the Events, one JSON object per line (an empty body is "
                                                       "refused)", min_items=1)},
            "application/msgpack": {"schema": _events("an array of Events, or Events one after another")}}},
        "responses": {"200": _json("written (some events may be rejected: see `rejected`)", _INGEST_RESULT),
                      "400": _err("the body is not readable (empty, malformed JSON/MessagePack, invalid gzip, "
                                  "a bad Content-Length)"),
                      "408": _err("the body did not arrive within [limits] body_timeout_s (the connection is "
                                  "closed)"),
                      "413": _err("the body or the event count is over the server's limit"),
                      "415": _err("unsupported Content-Type or Content-Encoding"),
                      "422": _json("no event of the body is valid (each one's reason in `rejected`)", _INGEST_RESULT),
                      "429": _err("over a limit of this client: the request bytes in flight (max_pending_bytes), "
                                  "the device's events or bytes per second, or its dead-letter quota (the bad body "
                                  "was not kept); retry after `Retry-After` seconds", _RETRY),
                      "503": _err("the server sheds load (requests wait too long, too many events queued, memory "
                                  "over its bound, the speed layer behind, too many connections) or the log cannot "
                                  "be written now: retry after `Retry-After` seconds", _RETRY),
                      "507": _err("the disk of the log is full: retry after `Retry-After` seconds", _RETRY),
                      **_AUTH}}}


def _query_view() -> dict[str, Any]:
    return {"get": {
        "summary": "Query a view (batch ⊕ realtime)",
        "parameters": [_view_name(),
                       {"name": "key", "in": "query", "schema": {"type": "string"},
                        "description": "only this key: the value its JSON spells (42, [\"dev-1\",\"temperature\"]; "
                                       "strict JSON) when a view key can be that value, else the text itself"},
                       {"name": "from", "in": "query", "schema": _EPOCH_MS_OR_TIME,
                        "description": "windows starting at or after (epoch ms or ISO-8601; within 64 bits)"},
                       {"name": "to", "in": "query", "schema": _EPOCH_MS_OR_TIME,
                        "description": "windows starting before (epoch ms or ISO-8601; within 64 bits)"},
                       {"name": "version", "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": _INT64_MAX},
                        "description": "read this batch version alone (no realtime part)"}],
        "responses": {"200": _json("the rows", {"type": "object", "required": ["view", "version", "rows"],
                                                "properties": {
            "view": {"type": "string"}, "version": {"type": ["integer", "null"]},
            "rows": {"type": "array", "items": {"$ref": "#/components/schemas/Row"}}}}),
            "400": _err("a bad or unknown query parameter, from/to on a view without windows, or a key "
                        "nested too deeply"),
            "404": _err("no such view, or no such version of it"), **_STORE, **_AUTH}}}


def _admin_paths() -> dict[str, Any]:
    started = _json("started (or the run already going)", {"$ref": "#/components/schemas/Job"},
                    {"Location": {"description": "the job: /v1/jobs/{id}", "schema": {"type": "string"}}})
    return {
        "/v1/views/{name}/batch": {"post": {
            "summary": "Run the batch layer of the view's pipeline now (admin)", "parameters": [_view_name()],
            "responses": {"202": started,
                          "400": _err("the view belongs to a kappa flow (no batch layer) or to no served flow"),
                          "404": _err("no such view"), **_STORE, **_AUTH}}},
        "/v1/views/{name}/reprocess": {"post": {
            "summary": "Kappa reprocessing into a new version (admin)", "parameters": [_view_name()],
            "requestBody": {"required": False, "content": {"application/json": {"schema": _REPROCESS_BODY}}},
            "responses": {"202": started,
                          "400": _err("a body that is not these options, no flow of this server writes the view, "
                                      "or no such flow file"),
                          "401": _AUTH["401"],
                          "403": _err("the token's role may not do this; the flow file is outside the flow "
                                      "directories or not .py; or " + _REFUSED),
                          "404": _err("no such view"), **_STORE}}},
        "/v1/views/{name}/rollback": {"post": {
            "summary": "Switch back to the previous version (admin)", "parameters": [_view_name()],
            "responses": {"200": _json("the versions now current", {
                "type": "object", "required": ["view", "versions"], "properties": {
                    "view": {"type": "string"},
                    "versions": {"type": "object", "additionalProperties": {"type": "integer"}}}}),
                          "400": _err("no flow of this server writes the view"),
                          "404": _err("no such view"),
                          "409": _err("no previous version to roll back to"), **_AUTH}}},
    }


def _read_paths() -> dict[str, Any]:
    def plain(summary: str, ok: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"summary": summary, "responses": {"200": ok, **_AUTH}}}

    return {
        "/v1/views": plain("List the views", _json(
            "name, version, batch cut-off, realtime lag, late-event count of every view",
            {"type": "object", "required": ["views"], "properties": {"views": {"type": "array"}}})),
        "/v1/jobs": plain("Batch runs and reprocessings", _json("jobs", {
            "type": "object", "required": ["jobs"],
            "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}}})),
        "/v1/jobs/{id}": {"get": {"summary": "One job", "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json("the job", {"$ref": "#/components/schemas/Job"}),
                          "404": _err("no such job (jobs are kept until the server restarts)"), **_AUTH}}},
        "/v1/pipelines": plain("The served pipelines: flow file (its name only for callers who are not admins), "
                               "architecture, views, lineage", _json("pipelines", {
                                   "type": "object", "required": ["pipelines"],
                                   "properties": {"pipelines": {"type": "array"}}})),
        "/v1/devices": {"get": {
            "summary": "The devices that wrote to the log: events, last seen, last event time, late and "
                       "future-stamped counts, backlog flushes, quiet now",
            "parameters": [
                {"name": "quiet", "in": "query", "schema": {"type": "boolean"}, "description": "only quiet devices"},
                {"name": "quiet_after", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                   "maximum": 10**15},
                 "description": "ms a device may send nothing before it is quiet (default 600000)"},
                {"name": "prefix", "in": "query", "schema": {"type": "string"}},
                {"name": "after", "in": "query", "schema": {"type": "string"},
                 "description": "devices whose id sorts after this one (the next page)"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100000}}],
            "responses": {"200": _json("devices, sorted by id", {
                "type": "object", "required": ["devices", "quiet_after_ms", "more", "caught_up"],
                "properties": {"devices": {"type": "array"}, "quiet_after_ms": {"type": "integer"},
                               "more": {"type": "boolean"}, "caught_up": {"type": "boolean"}}}),
                "400": _err("a bad query parameter"), **_AUTH}}},
        "/ui": plain("The web UI: live views, runner metrics, lineage", _text("the page", "text/html")),
        "/v1/metrics": plain("Metrics (JSON)", _json(
            "events in/s, per-runner batch duration, lag, late events, dead letters", {"type": "object"})),
        "/metrics": plain("Metrics (Prometheus text format)", _text("the metrics", "text/plain")),
    }


def _public_paths() -> dict[str, Any]:
    health = {"type": "object", "required": ["status", "problems", "uptime_s"], "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "problems": {"type": "array", "items": {"type": "string"},
                     "description": "what is wrong and what to do; internal paths and error texts for admins "
                                    "only (send an admin token to see them)"},
        "uptime_s": {"type": "number"}}}
    return {
        "/": {"get": {"summary": "Where things are", "security": [], "responses": {
            "200": _json("links", {"type": "object"}), **_PUBLIC}}},
        "/healthz": {"get": {"summary": "Health", "security": [], "responses": {
            "200": _json("ok", health), "503": _json("degraded", health), **_PUBLIC}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {
            "200": _json("OpenAPI 3.1", {"type": "object"}), **_PUBLIC}}},
        "/docs": {"get": {"summary": "This document, readable", "security": [], "responses": {
            "200": _text("the page", "text/html"), **_PUBLIC}}},
    }


def document(registry: SchemaRegistry | None = None) -> dict[str, Any]:
    """The OpenAPI description of every endpoint; with ``registry``, the events of its kinds."""
    from fluvial import __version__

    return {
        "openapi": "3.1.0",
        "info": {"title": "fluvial", "version": __version__,
                 "description": "Ingest IoT events into an immutable log; query views merged from the "
                                "batch and speed layers (batch ⊕ realtime). Every error is a JSON "
                                "`{\"error\", \"status\"}`."},
        "components": {
            "schemas": {"Event": _event(registry), "Integer": _INTEGER, "Value": _VALUE,
                        "Row": _ROW, "Error": _ERROR, "Job": _JOB},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "`fluvial token create --device ID | --read | --admin "
                                                          "[--expires-in 30d]`; not needed when the server runs "
                                                          "with auth off (the default on loopback)"}}},
        "security": [{"bearer": []}],
        "paths": {"/v1/events": _ingest(), "/v1/views/{name}": _query_view(), **_admin_paths(), **_read_paths(),
                  **_public_paths()},
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
