"""Admin routes: run the batch layer now, Kappa reprocessing, rollback (each a job)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fluvial.api.common import Api, MsgspecJSON
from fluvial.api.pipelines import job_body
from fluvial.errors import ConfigError
from fluvial.events.diagnose import json_problem
from fluvial.server.flowfiles import FlowFilePolicy

__all__ = ["routes"]


def routes(api: Api) -> list[Route]:
    server = api.server
    flow_files = FlowFilePolicy.of(server.settings)  # what reprocessing may load

    @api.guard("admin")
    async def batch_view(request: Request) -> Response:
        name = request.path_params["name"]
        await server.in_query_pool(_known_view, name)
        job = server.start_batch(name)
        return MsgspecJSON(job_body(job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @api.guard("admin")
    async def reprocess_view(request: Request) -> Response:
        from fluvial.layers.kappa import parse_start
        from fluvial.server.flowfiles import reprocess_options

        name = request.path_params["name"]
        await server.in_query_pool(_known_view, name)
        options = reprocess_options(await _json_body(request), flow_files,
                                    served=[reg.file for reg in server.flows.pipelines.values()])
        await server.in_query_pool(parse_start, options["start"], server.log)  # a bad `from` is a 400 now
        job = server.start_reprocess(name, **options)
        return MsgspecJSON(job_body(job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @api.guard("admin")
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

    return [Route("/v1/views/{name}/batch", batch_view, methods=["POST"]),
            Route("/v1/views/{name}/reprocess", reprocess_view, methods=["POST"]),
            Route("/v1/views/{name}/rollback", rollback_view, methods=["POST"])]


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
