"""``GET /v1/views`` and ``GET /v1/views/{name}``: views, always batch ⊕ realtime.

A query reads one store snapshot (on the server's query pool), so it sees a
whole version switch or none of it. Parameters are checked strictly: ``key``
is strict JSON (else the text itself), ``from``/``to`` epoch ms or ISO-8601
within 64 bits, ``version`` a batch version number.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fluvial.api import disclosure
from fluvial.api.common import Api, MsgspecJSON, error
from fluvial.errors import ConfigError

__all__ = ["routes"]


def routes(api: Api) -> list[Route]:
    server = api.server

    @api.guard("query")
    async def list_views(request: Request) -> Response:
        infos = await server.in_query_pool(server.view_infos)
        return MsgspecJSON({"views": infos if api.details(request) else disclosure.public_view_infos(infos)})

    @api.guard("query")
    async def get_view(request: Request) -> Response:
        from fluvial.serving.base import UNSET

        name = request.path_params["name"]
        params = request.query_params
        unknown = set(params) - {"key", "from", "to", "version"}
        if unknown:
            return error(400, f"unknown query parameters {sorted(unknown)}; use key, from, to, version")
        try:
            key = _key_param(params["key"]) if "key" in params else UNSET
            from_ms = _time_param("from", params["from"]) if "from" in params else None
            to_ms = _time_param("to", params["to"]) if "to" in params else None
            version = _version_param(params["version"]) if "version" in params else None
        except (ValueError, TypeError) as exc:
            return error(400, f"bad query parameter: {exc}")
        filters: dict[str, Any] = {"key": key, "from_ms": from_ms, "to_ms": to_ms}
        if version is not None:
            filters.update(version=version, realtime=False)
        try:
            store_version, rows = await server.in_query_pool(
                lambda: server.store().query_with_version(name, **filters))
        except ConfigError:  # (the view has no windows for from/to, ...) or no such version: 404
            if version is None or version in await server.in_query_pool(lambda: server.store().view(name).versions):
                raise
            return error(404, f"view {name!r} has no version {version}: GET /v1/views lists its versions")
        return MsgspecJSON({"view": name, "version": store_version, "rows": rows})

    return [Route("/v1/views", list_views), Route("/v1/views/{name}", get_view)]


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
