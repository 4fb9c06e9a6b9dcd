"""``GET /v1/devices``: what the log says about each device (see :mod:`fluvial.layers.devices`).

Parameters: ``quiet=true`` (only devices quiet now), ``quiet_after`` (ms a device may send
nothing before it is quiet; default 10 min), ``prefix`` (devices whose id starts with it),
``limit`` (at most this many, default 1000, at most 100000) and ``after`` (devices whose id
sorts after it: the next page starts after the last device of this one).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fluvial.api.common import Api, MsgspecJSON, error

__all__ = ["routes"]

_MAX_LIMIT = 100_000


def routes(api: Api) -> list[Route]:
    server = api.server

    @api.guard("query")
    async def list_all(request: Request) -> Response:
        from fluvial.layers.devices import DEFAULT_QUIET_AFTER_MS, list_devices

        params = request.query_params
        unknown = set(params) - {"quiet", "quiet_after", "prefix", "limit", "after"}
        if unknown:
            return error(400, f"unknown query parameters {sorted(unknown)}; use quiet, quiet_after, prefix, "
                              "limit, after")
        quiet = params.get("quiet", "false").lower()
        if quiet not in ("true", "false", "1", "0"):
            return error(400, f"bad query parameter quiet={params['quiet']!r}: write true or false")
        try:
            quiet_after = _count("quiet_after", params.get("quiet_after"), DEFAULT_QUIET_AFTER_MS, 2**62)
            limit = _count("limit", params.get("limit"), 1000, _MAX_LIMIT)
        except ValueError as exc:
            return error(400, f"bad query parameter: {exc}")
        prefix, after = params.get("prefix", ""), params.get("after")
        rows = await server.in_query_pool(lambda: list_devices(server.store(), quiet_after_ms=quiet_after))
        picked = [r for r in rows if r["device"].startswith(prefix) and (after is None or r["device"] > after)
                  and (quiet in ("false", "0") or r["quiet"])]
        page = picked[:limit]
        return MsgspecJSON({"devices": page, "quiet_after_ms": quiet_after, "more": len(picked) > limit})

    return [Route("/v1/devices", list_all)]


def _count(name: str, text: str | None, default: int, most: int) -> int:
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19 or not 0 < int(text) <= most:
        raise ValueError(f"{name}={text[:40]!r} must be a whole number from 1 to {most}")
    return int(text)
