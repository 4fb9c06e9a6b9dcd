"""The served pipelines and their lineage (``/v1/pipelines``), and the jobs (``/v1/jobs``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fluvial.api import disclosure
from fluvial.api.common import Api, MsgspecJSON, error

__all__ = ["job_body", "routes"]


def routes(api: Api) -> list[Route]:
    server = api.server

    @api.guard("query")
    async def list_jobs(request: Request) -> Response:
        return MsgspecJSON({"jobs": [job_body(j, api.details(request)) for j in list(server.jobs.values())]})

    @api.guard("query")
    async def get_job(request: Request) -> Response:
        job = server.jobs.get(request.path_params["id"])
        if job is None:
            return error(404, f"no job {request.path_params['id'][:100]!r} (jobs are kept until the server "
                               "restarts)")
        return MsgspecJSON(job_body(job, api.details(request)))

    @api.guard("query")
    async def pipelines(request: Request) -> Response:
        found = [{"name": reg.name, "file": str(reg.file), "architecture": reg.architecture, "views": list(reg.views),
                  "batch_every_s": reg.batch_every_s, "lineage": reg.pipeline.explain()}
                 for reg in server.flows.pipelines.values()]
        return MsgspecJSON({"pipelines": found if api.details(request) else
                            [disclosure.public_pipeline(p) for p in found]})

    return [Route("/v1/jobs", list_jobs), Route("/v1/jobs/{id}", get_job), Route("/v1/pipelines", pipelines)]


def job_body(job: Any, details: bool = True) -> dict[str, Any]:
    out = job.to_dict()
    out["progress"] = {k: v for k, v in out["progress"].items() if not k.startswith("_")}
    return out if details else disclosure.public_job(out)
