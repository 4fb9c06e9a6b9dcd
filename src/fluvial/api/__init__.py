"""The HTTP API of ``fluvial serve``: a Starlette application, routes split by group.

* :mod:`.ingest` -- ``POST /v1/events``
* :mod:`.views` -- ``GET /v1/views``, ``GET /v1/views/{name}``
* :mod:`.admin` -- batch, reprocess, rollback
* :mod:`.pipelines` -- ``/v1/pipelines``, ``/v1/jobs``
* :mod:`.ops` -- health, metrics, ``/openapi.json``, ``/docs``, ``/ui``
* :mod:`.app` -- :func:`~fluvial.api.app.build_app`, the application of a :class:`~fluvial.server.core.Server`

The server process (log writer, speed and batch layers, limits, auth) is :mod:`fluvial.server`.
"""
