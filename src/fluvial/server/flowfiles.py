"""Which flow files ``POST /v1/views/NAME/reprocess`` may load into the server.

Loading a flow file runs its Python code inside the server, so a request may
only name a ``.py`` file inside the *flow directories* (``[server] flow_dirs``
in ``fluvial.toml``; by default the folders of the flows the server was
started with) or one of the flow files it serves. The decision is made on the
real path (symlinks and ``..`` resolved), and the server then loads exactly
that real path, so a link cannot lead out of the directories.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "v2.py").write_text("# flow")
    6
    >>> policy = FlowFilePolicy([root], [])
    >>> policy.check(str(root / "v2.py")) == (root / "v2.py").resolve()
    True
    >>> try:
    ...     policy.check("/etc/passwd")
    ... except AuthError as exc:
    ...     print(exc.status)
    403
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fluvial.errors import ConfigError
from fluvial.server.auth import AuthError

__all__ = ["FlowFilePolicy", "reprocess_options"]

MAX_PATH_CHARS = 4_096
_INT64_MAX = 2**63 - 1


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


class FlowFilePolicy:
    """The flow directories and flow files a reprocessing request may name.

    Args:
        dirs: Directories whose ``.py`` files (at any depth) may be loaded.
        files: Flow files that may be loaded wherever they are (the served ones).
    """

    def __init__(self, dirs: Iterable[Path], files: Iterable[Path]) -> None:
        self.dirs = tuple(dict.fromkeys(_real(Path(d)) for d in dirs))
        self.files = frozenset(_real(Path(f)) for f in files)

    @classmethod
    def of(cls, settings: Any) -> FlowFilePolicy:
        """The policy of a server's :class:`~fluvial.settings.Settings`: ``[server] flow_dirs``,
        else the folders of its flows; and its flow files."""
        files = [flow.file for flow in settings.flows]
        configured = settings.server.flow_dirs
        dirs = configured if configured is not None else [Path(f).parent for f in files]
        return cls(dirs, files)

    def check(self, given: object, *, served: Sequence[Path] = ()) -> Path:
        """The real path of the flow file ``given`` names, if a request may load it.

        Args:
            given: The ``flow`` of the request: an absolute path, or one relative to a
                flow directory (the first directory holding it wins).
            served: The flow files the server runs now (after earlier switches).

        Raises:
            ConfigError: ``given`` is not a path, or names no file inside the directories (400).
            AuthError: 403: the file is outside the flow directories (after resolving
                symlinks and ``..``) and is not a served flow file, or is not a ``.py`` file.
        """
        if not isinstance(given, str) or not given or "\x00" in given or len(given) > MAX_PATH_CHARS:
            raise ConfigError(f"flow must be the path of a flow file (.py) on the server, got {given!r:.80}")
        candidate = self._candidate(given)
        real = _real(candidate)
        if not self._allowed(real, served):
            resolved = "" if real == candidate else f" (it resolves to {real})"
            raise AuthError(403, f"flow file {given!r}{resolved} is outside the flow directories of this server "
                                 f"({self._shown_dirs()}) and is not one of its flow files: reprocessing loads "
                                 "code only from there. Put the file in one of them, or add its folder to "
                                 "[server] flow_dirs in fluvial.toml and restart the server")
        if real.suffix != ".py":
            resolved = "" if real == candidate else f" (it resolves to {real})"
            raise AuthError(403, f"flow file {given!r}{resolved} is not a Python file (.py): only .py files "
                                 "are flow files")
        if not real.is_file():
            raise ConfigError(f"no flow file at {real}: give the path of an existing .py file in the flow "
                              f"directories ({self._shown_dirs()})")
        return real

    def _candidate(self, given: str) -> Path:
        path = Path(given)
        if path.is_absolute():
            return path
        for folder in self.dirs:  # relative: to the first flow directory that holds it
            if (folder / path).exists():
                return folder / path
        return (self.dirs[0] if self.dirs else Path.cwd()) / path

    def _allowed(self, real: Path, served: Sequence[Path]) -> bool:
        if real in self.files or real in {_real(Path(f)) for f in served}:
            return True
        return any(real.is_relative_to(folder) and real != folder for folder in self.dirs)

    def _shown_dirs(self) -> str:
        return ", ".join(str(d) for d in self.dirs) or "none: only the served flow files"


_REPROCESS_KEYS = ("from", "flow", "dry_run", "keep_old", "grace_s")


def reprocess_options(body: object, policy: FlowFilePolicy, *, served: Sequence[Path] = ()) -> dict[str, Any]:
    """The keyword arguments of ``Server.start_reprocess`` from a reprocessing request's JSON body.

    Raises:
        ConfigError: A body that is not an object of known keys with values of the right
            types (400), or a flow file that does not exist (400).
        AuthError: A flow file outside the flow directories, or not a ``.py`` file (403).
    """
    if not isinstance(body, dict) or set(body) - set(_REPROCESS_KEYS):
        raise ConfigError(f"the body must be a JSON object with keys among {sorted(_REPROCESS_KEYS)}")
    start = body.get("from", "earliest")
    if type(start) is float and start.is_integer():  # JSON does not tell 5.0 from 5
        start = int(start)
    if isinstance(start, bool) or not isinstance(start, str | int) or (isinstance(start, str) and len(start) > 200) \
            or (isinstance(start, int) and not 0 <= start <= _INT64_MAX):
        raise ConfigError("from must be a string (earliest, an ISO-8601 time, P:O,...) or an offset or epoch ms "
                          f"from 0 to {_INT64_MAX}, got {start!r:.80}")
    for key in ("dry_run", "keep_old"):
        if body.get(key) is not None and not isinstance(body[key], bool):
            raise ConfigError(f"{key} must be true or false, got {body[key]!r:.80}")
    grace = body.get("grace_s")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int | float)
                              or not 0 <= grace <= 10**9):
        raise ConfigError(f"grace_s must be a number of seconds from 0 to 1e9, got {grace!r:.80}")
    flow = body.get("flow")
    return {"start": str(start), "flow_file": None if flow is None else str(policy.check(flow, served=served)),
            "dry_run": bool(body.get("dry_run", False)), "keep_old": body.get("keep_old"),
            "grace_s": None if grace is None else float(grace)}
