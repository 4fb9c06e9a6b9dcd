"""What ``fluvial serve`` tells callers who are not admins: no internal paths, no error texts.

Admins (an admin token; with auth off, every caller, since every caller may
run admin actions) see the details: file paths, exception types and messages,
the last error of a failing speed layer. Everybody else (a device or read
token, or no token at ``/healthz``) gets a generic reason that says what to do,
and the details stay in the server's log, found by a reference where useful.

Example:
    >>> without_paths("cannot open '/srv/fluvial/views.db': locked; see /v1/views")
    "cannot open '<path>': locked; see /v1/views"
"""

from __future__ import annotations

import re
import uuid
from typing import Any

__all__ = ["LAST_ERROR_HIDDEN", "internal_error", "public_job", "public_pipeline", "public_view_infos",
           "sees_details", "unknown_view", "without_paths"]

LAST_ERROR_HIDDEN = "see the server log (an admin token shows the error here)"
"""What stands for an error text a caller may not read."""
_PATH = re.compile(r"(?<![\w.])(?:/[^\s'\":,;()]+)+")
_API = ("/v1/", "/healthz", "/metrics", "/openapi.json", "/docs", "/ui")


def sees_details(grant: Any, *, auth_enabled: bool) -> bool:
    """Whether a caller with ``grant`` (None: no valid token) may read internal details."""
    return not auth_enabled or (grant is not None and grant.role == "admin")


def without_paths(text: str) -> str:
    """``text`` with file system paths replaced by ``<path>`` (API paths such as ``/v1/views`` kept)."""
    def replace(match: re.Match[str]) -> str:
        found = match.group(0)
        return found if found.startswith(_API) or found in ("/v1", "/") else "<path>"

    return _PATH.sub(replace, text)


def unknown_view(name: object) -> str:
    """The 404 reason for a view that does not exist, without the store's location."""
    return f"no view named {str(name)[:200]!r}: GET /v1/views lists the views"


def internal_error(exc: BaseException, *, details: bool) -> tuple[str, str]:
    """``(reason for the 500 answer, reference)``: log the exception with the reference."""
    ref = uuid.uuid4().hex[:12]
    if details:
        return f"internal error: {type(exc).__name__}: {exc} (reference {ref} in the server log)", ref
    return f"internal error (reference {ref}): the server log has the details; please report it", ref


def public_view_infos(infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``GET /v1/views`` entries without the speed layers' error texts."""
    out = []
    for info in infos:
        speed = info.get("speed_layer")
        if isinstance(speed, dict) and speed.get("last_error") is not None:
            out.append({**info, "speed_layer": {**speed, "last_error": LAST_ERROR_HIDDEN}})
        else:
            out.append(info)
    return out


def public_job(job: dict[str, Any]) -> dict[str, Any]:
    """A job without its error text (a failed child's last line may name files)."""
    if job.get("error") is None:
        return job
    return {**job, "error": f"the {job.get('kind', 'job')} failed; {LAST_ERROR_HIDDEN}"}


def public_pipeline(pipeline: dict[str, Any]) -> dict[str, Any]:
    """A ``GET /v1/pipelines`` entry with its flow file's name instead of its path."""
    file = pipeline.get("file")
    return pipeline if not isinstance(file, str) else {**pipeline, "file": file.rsplit("/", 1)[-1]}
