"""The pipelines a server runs: their code, the flow file it came from, their architecture.

A *flow file* defines pipelines; each pipeline writes views.  A server runs
every pipeline of its flow files continuously on the local stream runner
(the speed layer, :mod:`.speed`) and, for ``lambda`` flows, on the batch runner
on a schedule (:mod:`.batch`); a ``kappa`` flow has no batch layer and is
recomputed by replay (:mod:`.kappa`).  After a Kappa reprocessing switches a pipeline to new code, the
new flow file is remembered in ``DATA_DIR/flows.json`` so that a restarted
server runs the code that wrote the current views.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from fluvial.engine.plan import compile_plan
from fluvial.errors import ConfigError
from fluvial.flow.graph import Pipeline

__all__ = ["ARCHITECTURES", "FLOWS_FILE", "RAN_FILE", "FlowSet", "Registered", "load_flow_file"]

FLOWS_FILE = "flows.json"
RAN_FILE = "flows-used.json"  # the flow files last used here: offline commands fall back on them
ARCHITECTURES = ("lambda", "kappa")
_logger = logging.getLogger("fluvial.server")


@dataclass
class Registered:
    """A pipeline the server runs: its code, the file it came from and its architecture."""

    pipeline: Pipeline
    file: Path
    architecture: str
    batch_every_s: float
    views: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.pipeline.name


def load_flow_file(file: Path) -> list[Pipeline]:
    from fluvial.flowfile import load_pipelines

    return load_pipelines(str(file))


@dataclass
class FlowSet:
    """Every pipeline of the server's flow files, by name, and which pipeline writes each view."""

    data_dir: Path
    pipelines: dict[str, Registered] = field(default_factory=dict)
    # the flow files as configured (before overrides), with the names of the pipelines each defines
    entries: list[tuple[Path, str, float, tuple[str, ...]]] = field(default_factory=list)

    @classmethod
    def load(cls, data_dir: Path, flows: list[tuple[Path, str, float]]) -> FlowSet:
        """``flows``: ``(file, architecture, batch_every_s)`` per flow file."""
        out = cls(data_dir)
        overrides = out._overrides()
        for file, architecture, every in flows:
            if architecture not in ARCHITECTURES:
                raise ConfigError(f"flow {file}: architecture must be 'lambda' or 'kappa', got {architecture!r}")
            names = []
            for loaded in load_flow_file(file):
                override = overrides.get(loaded.name)
                source, code = file, loaded
                if override is not None and Path(override["file"]) != file.resolve():
                    source = Path(override["file"])
                    code = out._pipeline_from(source, loaded.name)
                out.add(code, source, architecture, every)
                names.append(loaded.name)
            out.entries.append((Path(file).resolve(), architecture, every, tuple(names)))
        return out

    @staticmethod
    def remembered(data_dir: Path) -> list[tuple[Path, str, float]]:
        """The flow files last used on ``data_dir`` (by a server, a batch run or a reprocessing)."""
        return [(f, a, e) for f, a, e, _ in FlowSet._remembered(data_dir)]

    @staticmethod
    def remembered_pipelines(data_dir: Path) -> set[str]:
        """The pipelines the flow files last used on ``data_dir`` define."""
        return {name for *_, names in FlowSet._remembered(data_dir) for name in names}

    @staticmethod
    def _remembered(data_dir: Path) -> list[tuple[Path, str, float, tuple[str, ...]]]:
        try:
            data = json.loads((data_dir / RAN_FILE).read_text())
            return [(Path(e["file"]), str(e["architecture"]), float(e["batch_every_s"]), tuple(e["pipelines"]))
                    for e in data["flows"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read {data_dir / RAN_FILE}: {exc}; give the flows with --flow FILE") from None

    def remember(self) -> None:
        """Note the flow files of this set as the ones that write the views of ``data_dir``.

        Offline commands (``fluvial rollback VIEW``, ``batch``, ``reprocess``) given no flows use them.
        Files remembered before stay, unless they are among these or define one of their pipelines.
        """
        if not self.entries or not self.data_dir.is_dir():
            return
        mine = {f for f, *_ in self.entries}
        names = {n for *_, pipelines in self.entries for n in pipelines}
        try:
            kept = [e for e in self._remembered(self.data_dir) if e[0] not in mine and not names & set(e[3])]
        except ConfigError:
            kept = []   # an unreadable file is replaced
        entries = [{"file": str(f), "architecture": a, "batch_every_s": e, "pipelines": list(p)}
                   for f, a, e, p in kept + self.entries]
        path = self.data_dir / RAN_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"flows": entries}, indent=2))
            os.replace(tmp, path)
        except OSError as exc:  # a read-only data directory: commands then need --flow
            _logger.warning("cannot remember the flow files in %s: %s", path, exc)

    def add(self, pipeline: Pipeline, file: Path, architecture: str, every: float) -> Registered:
        if pipeline.name in self.pipelines and self.pipelines[pipeline.name].file != file:
            raise ConfigError(f"two flow files define pipeline {pipeline.name!r}: "
                              f"{self.pipelines[pipeline.name].file} and {file}; pipeline names must be unique")
        views = tuple(compile_plan(pipeline).views)
        for name in views:
            other = self.pipeline_of(name, missing_ok=True)
            if other is not None and other.name != pipeline.name:
                raise ConfigError(f"view {name!r} is written by two pipelines, {other.name!r} and "
                                  f"{pipeline.name!r}: a view has one writer")
        reg = Registered(pipeline, file.resolve(), architecture, every, views)
        self.pipelines[pipeline.name] = reg
        return reg

    def pipeline_of(self, view: str, *, missing_ok: bool = False) -> Registered | None:
        """The registered pipeline that writes ``view``."""
        for reg in self.pipelines.values():
            if view in reg.views:
                return reg
        if missing_ok:
            return None
        known = sorted(v for reg in self.pipelines.values() for v in reg.views)
        raise ConfigError(f"no flow of this server writes view {view!r}; its views: {known or 'none'} "
                          "(add the flow file with --flow FILE or in fluvial.toml)")

    def replace(self, name: str, pipeline: Pipeline, file: Path) -> Registered:
        """Switch pipeline ``name`` to new code (after a reprocessing) and remember it."""
        old = self.pipelines[name]
        reg = Registered(pipeline, file.resolve(), old.architecture, old.batch_every_s,
                         tuple(compile_plan(pipeline).views))
        self.pipelines[name] = reg
        overrides = self._overrides()
        # the same file (new code in place of the old): the code before it is not known anew
        previous = old.file if old.file != reg.file else overrides.get(name, {}).get("previous")
        overrides[name] = {"file": str(reg.file), **({"previous": str(previous)} if previous else {})}
        self._save_overrides(overrides)
        return reg

    def previous_file(self, name: str) -> Path | None:
        entry = self._overrides().get(name)
        return Path(entry["previous"]) if entry and entry.get("previous") else None

    def _pipeline_from(self, file: Path, name: str) -> Pipeline:
        for pipeline in load_flow_file(file):
            if pipeline.name == name:
                return pipeline
        raise ConfigError(f"{self.data_dir / FLOWS_FILE} says pipeline {name!r} runs the code of {file}, "
                          "which no longer defines it; fix or delete that entry")

    def _overrides(self) -> dict[str, dict[str, str]]:
        path = self.data_dir / FLOWS_FILE
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}; delete it to run the configured flow files") from exc
        return data if isinstance(data, dict) else {}

    def _save_overrides(self, overrides: dict[str, dict[str, str]]) -> None:
        path = self.data_dir / FLOWS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(overrides, indent=2, sort_keys=True))
        os.replace(tmp, path)
