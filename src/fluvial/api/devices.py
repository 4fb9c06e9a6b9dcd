"""``GET /v1/devices``: what the log says about each device (see :mod:`fluvial.layers.devices`).

Parameters: ``quiet=true`` (only devices quiet now), ``quiet_after`` (ms a device may send
nothing before it is quiet; default 10 min), ``prefix`` (devices whose id starts with it),
``limit`` (at most this many, default 1000, at most 100000) and ``after`` (devices whose id
sorts after it: the next page starts after the last device of this one).

The answer covers every event the log held when the request came (it waits up to 10 s for the
server's device table to catch up; ``caught_up`` says whether it did).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fluvial.api.common import Api, MsgspecJSON, error

__all__ = ["routes"]

_MAX_LIMIT = 100_000
MAX_QUIET_AFTER_MS = 10**15   # 31,000 years


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
        quiet = params.get("quiet", "false")
        if quiet not in ("true", "false"):
            return error(400, f"bad query parameter quiet={params['quiet']!r}: write true or false")
        try:
            quiet_after = _count("quiet_after", params.get("quiet_after"), DEFAULT_QUIET_AFTER_MS, MAX_QUIET_AFTER_MS)
            limit = _count("limit", params.get("limit"), 1000, _MAX_LIMIT)
        except ValueError as exc:
            return error(400, f"bad query parameter: {exc}")
        prefix, after = params.get("prefix", ""), params.get("after")

        def read() -> tuple[bool, list[dict[str, Any]]]:   # every event acknowledged before this request
            caught_up = server.devices.wait_for(server.store(), server.log.end_offsets())
            return caught_up, list_devices(server.store(), quiet_after_ms=quiet_after)

        caught_up, rows = await server.in_query_pool(read)
        picked = [r for r in rows if r["device"].startswith(prefix) and (after is None or r["device"] > after)
                  and (quiet == "false" or r["quiet"])]
        page = picked[:limit]
        return MsgspecJSON({"devices": page, "quiet_after_ms": quiet_after, "more": len(picked) > limit,
                            "caught_up": caught_up})

    return [Route("/v1/devices", list_all)]


def _count(name: str, text: str | None, default: int, most: int) -> int:
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19 or not 0 < int(text) <= most:
        raise ValueError(f"{name}={text[:40]!r} must be a whole number from 1 to {most}")
    return int(text)
