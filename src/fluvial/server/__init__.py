"""``fluvial serve``: HTTP ingest, the speed and batch layers together, merged queries.

Imported only by the ``serve``/``demo`` commands: ``import fluvial`` does not
import Starlette or uvicorn.
"""
