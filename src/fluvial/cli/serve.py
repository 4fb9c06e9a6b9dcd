"""``fluvial serve``, ``fluvial batch``, ``fluvial reprocess`` and ``fluvial rollback``."""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fluvial.cli.app import arg, subcommand
from fluvial.cli.run import _engine_args, _spark_config
from fluvial.config import DEFAULT_DATA_DIR
from fluvial.errors import ConfigError, FluvialError

ENV_CONFIG = "FLUVIAL_CONFIG"
ENV_TOKEN = "FLUVIAL_TOKEN"


def _config_arg() -> Any:
    return arg("--config", metavar="FILE", default=None,
               help=f"the config file (default: ./fluvial.toml if it exists) [env: {ENV_CONFIG}]")


def load_settings(args: argparse.Namespace, **overrides: Any) -> Any:
    """Settings from the config file, then the command line (which wins)."""
    from fluvial.settings import Settings, with_overrides

    settings = Settings.load(args.config or os.environ.get(ENV_CONFIG) or None)
    explicit_dir = args.data_dir != DEFAULT_DATA_DIR or settings.source is None
    data_dir = Path(args.data_dir) if explicit_dir else None
    return with_overrides(settings, data_dir=data_dir, log_url=args.log, store_url=args.store, **overrides)


_SERVE_DESCRIPTION = """\
Run fluvial as a service, in one process:

  ingest    POST /v1/events (JSON array, NDJSON or MessagePack; gzip); each event
            is validated, invalid ones go to the dead-letter log; an answered
            request's events are in the log; with --mqtt URL also what
            devices publish to the broker on devices/{device}/events (QoS 1,
            acknowledged once in the log)
  speed     every pipeline of the flow files runs on the stream runner, with
            its batch interval (the realtime part of its views); with
            --speed-layer workers, `fluvial worker` processes run it instead
            (give them the same --log and --store) and this server serves
            the views they write (its batch runs and reprocessing hand
            over to the workers)
  batch     lambda flows are recomputed from the whole log every batch_every_s
            (and on demand: `fluvial batch VIEW`, POST /v1/views/NAME/batch)
  queries   GET /v1/views, GET /v1/views/NAME?key=&from=&to= : batch ⊕ realtime
  ops       /healthz, /v1/metrics, /metrics (Prometheus), /openapi.json, /docs

Settings come from fluvial.toml (every one has a default) and these flags.
Auth: bearer tokens (`fluvial token create`), on by default when --host is
not a loopback address. Requests whose Host is not a name of this server, and
POST requests from web pages of other origins, are refused (403; see
[server] allowed_hosts and allowed_origins). HTTPS: --tls-cert and --tls-key
(or [server] tls_cert and tls_key). Stop with Ctrl-C or SIGTERM."""


@subcommand(
    "serve",
    summary="run HTTP ingest, the speed and batch layers, and queries in one process",
    description=_SERVE_DESCRIPTION,
    example="fluvial serve --flow examples/hashtag_top10.py --flow examples/device_stats.py\n"
            "curl -s localhost:8470/v1/views",
    args=[
        _config_arg(),
        arg("--host", default=None, help="address to bind (default 127.0.0.1)"),
        arg("--port", type=int, default=None, help="port (default 8470; 0 picks a free one)"),
        arg("--flow", action="append", default=None, metavar="FILE",
            help="a flow file to run (repeatable; adds to the config's flows, architecture lambda)"),
        arg("--kappa", action="append", default=None, metavar="FILE",
            help="a flow file to run stream-only (Kappa: no batch layer; repeatable)"),
        arg("--auth", choices=("auto", "tokens", "none"), default=None,
            help="bearer tokens: auto (on unless bound to loopback), tokens, none"),
        arg("--batch-every", type=float, default=None, metavar="S",
            help="seconds between batch-layer runs (0: only on demand)"),
        arg("--batch-interval-ms", type=int, default=None, metavar="N",
            help="speed layer: time between micro-batches (default 200)"),
        arg("--speed-layer", choices=("local", "workers"), default="local",
            help="local: a stream runner per pipeline in this process (default); workers: none here "
                 "(ingest and queries only), `fluvial worker` processes run it on the same --log and --store"),
        arg("--tls-cert", default=None, metavar="FILE",
            help="serve HTTPS with this PEM certificate (chain); needs --tls-key (default: [server] tls_cert, "
                 "else plain HTTP)"),
        arg("--tls-key", default=None, metavar="FILE",
            help="the PEM private key of --tls-cert, not encrypted (default: [server] tls_key)"),
        arg("--mqtt", default=None, metavar="URL",
            help="also take events devices publish to this MQTT broker, mqtt://[USER[:PASSWORD]@]HOST[:PORT] "
                 "(topic devices/{device}/events, QoS 1; default: [server] mqtt)"),
    ],
)
def serve(args: argparse.Namespace) -> int:
    settings = _serve_settings(args)

    def announce(url: str) -> None:
        print(f"fluvial serving on {url} (UI: {url}/ui, API docs: {url}/docs)", flush=True)

    return run_server(settings, announce=announce, speed_layer=args.speed_layer)


def _serve_settings(args: argparse.Namespace) -> Any:
    import dataclasses

    from fluvial.settings import FlowSettings

    settings = load_settings(args, host=args.host, port=args.port, auth=args.auth)
    settings = _tls_settings(settings, args)
    if args.mqtt is not None:
        from fluvial.server.mqtt import parse_mqtt_url

        parse_mqtt_url(args.mqtt)   # a bad URL is refused before anything starts
        settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, mqtt=args.mqtt))
    flows = list(settings.flows)
    for file, architecture in [*((f, "lambda") for f in args.flow or ()), *((f, "kappa") for f in args.kappa or ())]:
        path = Path(file).resolve()
        if not path.is_file():
            raise ConfigError(f"--flow {file}: no such file")
        if all(f.file != path for f in flows):
            flows.append(FlowSettings(file=path, architecture=architecture, batch_every_s=None))
    settings = dataclasses.replace(settings, flows=tuple(flows))
    if args.batch_every is not None:
        if args.batch_every < 0:
            raise ConfigError(f"--batch-every must be >= 0, got {args.batch_every}")
        settings = dataclasses.replace(settings, batch=dataclasses.replace(settings.batch, every_s=args.batch_every))
    if args.batch_interval_ms is not None:
        from fluvial.config import StreamConfig

        settings = dataclasses.replace(settings, stream=StreamConfig(
            batch_interval_ms=args.batch_interval_ms, max_batch_records=settings.stream.max_batch_records))
    return settings


def _tls_settings(settings: Any, args: argparse.Namespace) -> Any:
    """``settings`` with ``--tls-cert``/``--tls-key`` (relative to the current directory) applied."""
    import dataclasses

    server = settings.server
    if args.tls_cert is None and args.tls_key is None:
        if server.tls_cert is not None and server.tls_key is not None:  # from the config file
            where = f"{settings.source}: [server]." if settings.source is not None else ""
            check_tls(server.tls_cert, server.tls_key, cert_name=f"{where}tls_cert", key_name=f"{where}tls_key")
        return settings
    cert = Path(args.tls_cert).absolute() if args.tls_cert is not None else server.tls_cert
    key = Path(args.tls_key).absolute() if args.tls_key is not None else server.tls_key
    if cert is None or key is None:
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        raise ConfigError(f"{given} needs {missing}: HTTPS needs the certificate and its private key")
    check_tls(cert, key, cert_name="--tls-cert" if args.tls_cert is not None else "tls_cert",
              key_name="--tls-key" if args.tls_key is not None else "tls_key")
    return dataclasses.replace(settings, server=dataclasses.replace(server, tls_cert=cert, tls_key=key))


def check_tls(cert: Path, key: Path, *, cert_name: str = "--tls-cert", key_name: str = "--tls-key") -> None:
    """Refuse, before anything binds, TLS files that are missing, unreadable, not PEM, encrypted or mismatched.

    Raises:
        ConfigError: What is wrong with which file (named by ``cert_name``/``key_name``) and how to fix it.
    """
    import ssl

    for name, path in ((cert_name, cert), (key_name, key)):
        if not path.is_file():
            raise ConfigError(f"{name} {path}: {'not a file' if path.exists() else 'no such file'}")
        try:
            with path.open("rb") as f:
                f.read(1)
        except OSError as exc:
            raise ConfigError(f"{name} {path}: cannot be read: {exc.strerror} (the server needs to read it)") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=str(cert))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"{cert_name} {cert}: not a PEM certificate ({exc}); give the certificate file "
                          "(-----BEGIN CERTIFICATE-----)") from None

    class _Encrypted(Exception):
        pass

    def no_password() -> bytes:
        raise _Encrypted()

    try:
        context.load_cert_chain(str(cert), str(key), password=no_password)
    except _Encrypted:
        raise ConfigError(f"{key_name} {key}: the key is encrypted; give an unencrypted key "
                          "(e.g. openssl pkey -in KEY -out KEY.plain), readable by the server only") from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise ConfigError(f"{key_name} {key} is not the private key of the certificate {cert_name} {cert}: "
                              "give the key the certificate was made for") from None
        raise ConfigError(f"{key_name} {key}: not a PEM private key (-----BEGIN PRIVATE KEY-----) for the "
                          f"certificate {cert} (OpenSSL: {exc.reason or exc})") from None


def run_server(settings: Any, *, announce: Any = None, on_started: Any = None, speed_layer: str = "local") -> int:
    """Serve until SIGINT/SIGTERM (uvicorn's handlers stop it cleanly); ``speed_layer="workers"``
    leaves the speed layer to ``fluvial worker`` processes."""
    import uvicorn

    from fluvial.api.app import build_app
    from fluvial.server.connections import raise_open_files_limit
    from fluvial.server.core import Server

    open_files = raise_open_files_limit()  # the soft RLIMIT_NOFILE up to the hard limit; connections stay below
    cert, key = settings.server.tls_cert, settings.server.tls_key
    if cert is not None and key is not None:
        check_tls(cert, key, cert_name="tls_cert", key_name="tls_key")  # before anything binds
    host, port = settings.server.host, settings.server.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
                          "(or stop the process using it)") from None
    port = sock.getsockname()[1]
    server = Server(settings, speed_layer=speed_layer)
    server.start()
    shown = f"[{host}]" if ":" in host else host
    url = f"{'https' if cert is not None else 'http'}://{shown}:{port}"
    server.announce(url)
    if settings.server.auth_enabled and not server.tokens.list():
        print("auth is on and no token exists yet: create one with `fluvial token create --admin` "
              "(or --read, --device ID)", file=sys.stderr)
    if announce is not None:
        announce(url)
    server.limits.connections.fit(open_files)
    server.limits.connections.listeners = [sock]
    config = uvicorn.Config(build_app(server), log_level="warning", access_log=False,
                            http=server.limits.connections.protocol(),  # header/body timeouts, connection limit
                            timeout_keep_alive=max(1, math.ceil(settings.limits.keep_alive_s)),
                            timeout_graceful_shutdown=10,
                            ssl_certfile=None if cert is None else str(cert),
                            ssl_keyfile=None if key is None else str(key))
    uv = uvicorn.Server(config)
    if on_started is not None:
        on_started(server, uv)
    try:
        uv.run(sockets=[sock])
    finally:
        if not server._stopping:  # startup failed before the lifespan ran
            server.close()
        sock.close()
    return 0


def _remote_args() -> list[Any]:
    return [
        arg("--url", default=None, help="the server to ask (default: the one serving this data directory, "
                                        "if any; else the work is done here, offline)"),
        arg("--token", default=None, help=f"an admin token when the server has auth on [env: {ENV_TOKEN}]"),
    ]


# -- batch ----------------------------------------------------------------------------------------

@subcommand(
    "batch",
    summary="run the batch layer of views now (a new version of each, from the whole log)",
    description="Recompute views from the whole log up to its cut-off (the speed layer's checkpoint), "
                "write them as new versions name@vN+1, switch their aliases atomically and drop the "
                "realtime part the new versions cover. VIEW selects the pipelines that write it (all of "
                "the flows when none is given). Safe while `fluvial serve` runs: one batch run per "
                "pipeline at a time; realtime rows committed meanwhile are kept. With a server running "
                "on the data directory (and no --flow) the server runs it.",
    example="fluvial batch device_stats\nfluvial batch --flow examples/word_count.py",
    args=[
        arg("views", nargs="*", metavar="VIEW", help="views to recompute (default: every view of the flows)"),
        _config_arg(),
        arg("--flow", action="append", default=None, metavar="FILE",
            help="a flow file (repeatable; default: the flows of the config file)"),
        arg("--pipeline", default=None, help="only the pipeline of this name"),
        arg("--workers", type=int, default=None, metavar="N", help="worker processes (default: the CPUs)"),
        arg("--format", choices=("text", "json"), default="text", help="output format (default: text)"),
        *_engine_args(), *_remote_args(),
    ],
)
def batch(args: argparse.Namespace) -> int:
    from fluvial.layers.pipelines import FlowSet
    from fluvial.workspace import open as open_workspace

    settings = load_settings(args)
    url = args.url or (None if args.flow else _running_server(Path(settings.data_dir)))
    if url is not None:
        if not args.views:
            raise ConfigError("name the views to recompute (`fluvial batch VIEW`) when asking the server")
        for view in args.views:
            job = _call(url, "POST", f"/v1/views/{view}/batch", args)
            while job["status"] == "running":
                time.sleep(0.2)
                job = _call(url, "GET", f"/v1/jobs/{job['id']}", args)
            if job["status"] == "failed":
                raise FluvialError(f"batch run of {view} failed on the server: {job['error']}")
            result = job["result"]
            if args.format == "json":
                print(json.dumps(result), flush=True)
            else:
                views = ", ".join(f"{n}@v{v}" for n, v in result["views"].items())
                print(f"{result['pipeline']}: {result['records']} records in {result['seconds']:.2f} s; "
                      f"views: {views or 'none'}")
        return 0
    flows = _flow_set(settings, args.flow)
    selected = list(flows.pipelines.values())
    if args.pipeline:
        selected = [r for r in selected if r.name == args.pipeline]
        if not selected:
            raise ConfigError(f"no pipeline named {args.pipeline!r} in the flows; pipelines: {sorted(flows.pipelines)}")
    if args.views:
        wanted = {flows.pipeline_of(v).name for v in args.views}  # type: ignore[union-attr]
        selected = [r for r in selected if r.name in wanted]
    for reg in selected:
        if reg.architecture == "kappa":
            raise ConfigError(f"pipeline {reg.name!r} is a kappa flow: it has no batch layer; recompute its "
                              f"views with `fluvial reprocess VIEW --from earliest`")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    assert isinstance(flows, FlowSet)
    with open_workspace(settings.data_dir, log=settings.log_url, store=settings.store_url) as ws:
        if args.engine == "spark":
            from fluvial.engine.spark.batch import SparkBatchRunner

            runner: Any = SparkBatchRunner(log=ws._lazy_log, store=ws.store, spark=_spark_config(args))
        else:
            runner = ws.batch_runner(**({} if args.workers is None else {"workers": args.workers}))
        flows.remember()
        for reg in selected:
            stats = runner.run(reg.pipeline)
            if args.format == "json":
                print(json.dumps({"pipeline": reg.name, "views": stats.views, "records": stats.records_in,
                                  "seconds": round(stats.seconds, 3), "engine": args.engine}), flush=True)
            else:
                views = ", ".join(f"{n}@v{v}" for n, v in stats.views.items())
                print(f"{reg.name}: {stats.records_in} records in {stats.seconds:.2f} s; views: {views or 'none'}")
    return 0


def _flow_set(settings: Any, files: list[str] | None) -> Any:
    from fluvial.layers.pipelines import FlowSet

    entries = [(f.file, f.architecture, f.batch_every_s or 0.0) for f in settings.flows]
    for file in files or ():
        path = Path(file).resolve()
        if not path.is_file():
            raise ConfigError(f"--flow {file}: no such file")
        if all(e[0] != path for e in entries):
            entries.append((path, "lambda", 0.0))
    if not entries:
        entries = FlowSet.remembered(Path(settings.data_dir))
    if not entries:
        raise ConfigError("no flows: give --flow FILE, or list them in fluvial.toml ([[flows]] file = ...); "
                          f"no flow has run on {settings.data_dir} yet")
    return FlowSet.load(Path(settings.data_dir), entries)


# -- reprocess and rollback -------------------------------------------------------------------------

@subcommand(
    "reprocess",
    summary="replay the log through (new) flow code into VIEW@vN+1, then switch (Kappa)",
    description="A second stream runner replays the log from --from with the flow code of --flow (default: "
                "the current code) into new versions of the views of VIEW's pipeline, while the current "
                "versions keep serving. Once it has caught up with the head of the log, it prints the diff "
                "(rows added, removed, changed) and switches the aliases atomically; the old versions are "
                "dropped after the grace period (--keep-old keeps them; `fluvial rollback VIEW` switches "
                "back while they exist). --dry-run stops at the diff.\n\n"
                "--from: earliest | an offset N of every partition | P:O,P:O | epoch ms | ISO-8601 time.\n"
                "With a server running on the data directory the server does it (its live runner is "
                "stopped at the switch and restarted with the new code); otherwise it runs here.",
    example="fluvial reprocess device_stats --from earliest --flow flows/device_stats_v2.py --dry-run\n"
            "fluvial reprocess device_stats --from 2026-11-24T00:00:00Z --flow flows/device_stats_v2.py",
    args=[
        arg("view", metavar="VIEW"),
        arg("--from", dest="start", default="earliest", help="where the replay starts (default: earliest)"),
        arg("--flow", default=None, metavar="FILE", help="the new flow code (default: the current code)"),
        arg("--dry-run", action="store_true", help="stop after the diff; drop the new versions"),
        arg("--keep-old", action="store_true", help="keep the old versions after the switch"),
        arg("--grace", type=float, default=None, metavar="S",
            help="seconds the old versions stay after the switch (default: the config's, 60)"),
        _config_arg(), *_remote_args(),
    ],
)
def reprocess(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    url = args.url or _running_server(Path(settings.data_dir))
    if url is not None:
        body = {"from": args.start, "dry_run": args.dry_run, "keep_old": args.keep_old or None,
                "grace_s": args.grace}
        if args.flow:
            body["flow"] = str(Path(args.flow).resolve())
        job = _call(url, "POST", f"/v1/views/{args.view}/reprocess", args, {k: v for k, v in body.items()
                                                                            if v is not None})
        while job["status"] == "running":
            time.sleep(0.5)
            job = _call(url, "GET", f"/v1/jobs/{job['id']}", args)
        if job["status"] == "failed":
            raise FluvialError(f"reprocessing failed on the server: {job['error']}")
        _print_result(job["result"])
        return 0
    from fluvial.layers.kappa import drop_old
    from fluvial.layers.kappa import reprocess as run_reprocess
    from fluvial.layers.pipelines import load_flow_file
    from fluvial.workspace import open as open_workspace

    try:  # the flows configured or last run here; a first run may name only the new code
        flows = _flow_set(settings, None)
    except ConfigError:
        if not args.flow:
            raise
        flows = _flow_set(settings, [args.flow])
    pipeline = None
    file = None
    if args.flow:
        file = Path(args.flow).resolve()
        reg = flows.pipeline_of(args.view)
        pipeline = next((p for p in load_flow_file(file) if p.name == reg.name), None)
        if pipeline is None:
            raise ConfigError(f"{args.flow} defines no pipeline named {reg.name!r} (the writer of {args.view!r})")
    with open_workspace(settings.data_dir, log=settings.log_url, store=settings.store_url) as ws:
        result = run_reprocess(ws, flows, args.view, start=args.start, pipeline=pipeline, flow_file=file,
                               dry_run=args.dry_run, max_batch_records=settings.stream.max_batch_records)
        flows.remember()
        if result.switched and not args.keep_old and not settings.reprocess.keep_old:
            drop_old(ws, result)   # offline nobody reads the old version: no grace period to wait
    _print_result(result.to_dict())
    return 0


@subcommand(
    "rollback",
    summary="switch the views of VIEW's pipeline back to their previous versions",
    description="Switch the alias of every view of VIEW's pipeline back to its previous version (kept after "
                "a batch publish, or after a reprocessing until the grace period ends), with the code that "
                "wrote it. The speed layer restarts from that version's cut-off, so nothing is lost.",
    example="fluvial rollback device_stats",
    args=[arg("view", metavar="VIEW"), _config_arg(), *_remote_args(),
          arg("--flow", action="append", default=None, metavar="FILE",
              help="offline: the flow file writing VIEW (default: the config's flows)")],
)
def rollback(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    url = args.url or _running_server(Path(settings.data_dir))
    if url is not None:
        out = _call(url, "POST", f"/v1/views/{args.view}/rollback", args)
        versions = out["versions"]
    else:
        from fluvial.layers.kappa import rollback as run_rollback
        from fluvial.workspace import open as open_workspace

        flows = _flow_set(settings, args.flow)
        with open_workspace(settings.data_dir, log=settings.log_url, store=settings.store_url) as ws:
            versions = run_rollback(ws, flows, args.view)
    print("rolled back: " + ", ".join(f"{n}@v{v}" for n, v in sorted(versions.items())))
    return 0


def _running_server(data_dir: Path) -> str | None:
    from fluvial.server.core import SERVER_FILE

    try:
        info = json.loads((data_dir / SERVER_FILE).read_text())
        os.kill(int(info["pid"]), 0)
        return str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _call(url: str, method: str, path: str, args: argparse.Namespace, body: Any = None) -> Any:
    token = args.token or os.environ.get(ENV_TOKEN)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error")
        except ValueError:
            reason = exc.reason
        raise FluvialError(f"{method} {url}{path}: {exc.code} {reason}") from None
    except urllib.error.URLError as exc:
        import ssl

        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise FluvialError(f"cannot trust the certificate of {url}: {exc.reason.verify_message}; for a "
                               "self-signed one, run with SSL_CERT_FILE=CERT.pem (its --tls-cert)") from None
        raise FluvialError(f"cannot reach the server at {url}: {exc.reason} (is `fluvial serve` running?)") from None


def _print_result(result: dict[str, Any]) -> None:
    start = result.get("start")
    print(f"reprocessed pipeline {result['pipeline']} from offsets {start}: {result['records']} events in "
          f"{result['micro_batches']} micro-batches, {result['seconds']:.2f} s")
    for name, diff in sorted(result["diff"].items()):
        old, new = result["old_versions"].get(name), result["new_versions"].get(name)
        print(f"  {name}: v{old} -> v{new}: {diff['old_rows']} -> {diff['new_rows']} rows; "
              f"+{diff['added']} added, -{diff['removed']} removed, ~{diff['changed']} changed")
        for what in ("added", "removed", "changed"):
            for example in diff["examples"][what][:3]:
                print(f"      {what}: {json.dumps(example, default=str)}")
    if result.get("dry_run"):
        print("dry run: nothing switched, the new versions were dropped")
    elif result.get("switched"):
        kept = "dropped" if result.get("dropped_old") else "kept until the grace period ends (or --keep-old)"
        print(f"switched; old versions {kept}")
