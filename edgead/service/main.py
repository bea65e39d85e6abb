"""``edgead serve``: parse flags, load config and model, run uvicorn, talk to systemd.

Also runnable as ``python -m edgead.service.main [flags]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from edgead.errors import ConfigError, EdgeadError

log = logging.getLogger("edgead.serve")


def build_parser(prog: str = "edgead serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run the inspection daemon (HTTP API, camera, GPIO, log).")
    p.add_argument("--config", type=Path, default=os.environ.get("EDGEAD_CONFIG") or None,
                   help="TOML config file (default: $EDGEAD_CONFIG); examples: deploy/workstation.toml, "
                        "deploy/edgead.toml (a Raspberry Pi's)")
    p.add_argument("--model", type=Path, help="artifact directory (model.path)")
    p.add_argument("--source", help="folder:<dir> | opencv:<index|url|file> | picamera2[:<n>] | none (source.spec)")
    p.add_argument("--host", help="bind address (server.host; default 127.0.0.1, 0.0.0.0 for the LAN)")
    p.add_argument("--port", type=int, help="TCP port (server.port; default 8080, 0 = any free port)")
    p.add_argument("--trigger", choices=("on_demand", "continuous", "gpio"), help="trigger.mode")
    p.add_argument("--data-dir", type=Path, help="inspection log directory (inspection.data_dir)")
    p.add_argument("--precision", choices=("auto", "int8", "fp32"), help="model.precision")
    p.add_argument("--threads", type=int, help="model.threads")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="log_level")
    p.add_argument("--check", action="store_true", help="validate config and model, print a summary, exit")
    return p


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as a nested dict of config overrides (only flags that were given)."""
    mapping = {"model": ("model", "path"), "source": ("source", "spec"), "host": ("server", "host"),
               "port": ("server", "port"), "trigger": ("trigger", "mode"), "data_dir": ("inspection", "data_dir"),
               "precision": ("model", "precision"), "threads": ("model", "threads"), "log_level": ("log_level",)}
    out: dict[str, Any] = {}
    for arg, path in mapping.items():
        value = getattr(args, arg)
        if value is None:
            continue
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def setup_logging(level: str) -> None:
    # under systemd, journald adds timestamps itself
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)


def serve_main(argv: list[str] | None = None, prog: str = "edgead serve") -> int:
    """Entry point of ``edgead serve``; returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    try:
        from edgead.service.config import load_config

        config = load_config(args.config, overrides_from_args(args))
        setup_logging(config.log_level)
        if config.model.path is None:
            raise ConfigError("no model: pass --model DIR or set [model] path in the config")
        config.token  # noqa: B018 -- a missing, empty or short token file stops the daemon here (fails closed)
        from edgead.service.preflight import log_folder, source_problem

        problem = source_problem(config)
        if problem and args.check:
            raise ConfigError(problem)
        if problem:  # a mount may still appear: the source is retried with backoff
            log.warning("%s; retrying until it appears", problem)
        # a decompression bomb must fail to decode instead of exhausting a 1 GB Pi (read at first decode)
        if not os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "").strip():  # an empty value aborts OpenCV
            os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(config.server.max_image_pixels)
        from edgead.model import load_model

        precision = None if config.model.precision == "auto" else config.model.precision
        model = load_model(config.model.path, precision=precision, threads=config.model.threads,
                           search=config.model.search, warm_up=True)
        log.info("model %s %s (%s, %s, sha256 %s), threshold %.6g", model.name, model.version, model.precision,
                 "x".join(map(str, model.input_size)), model.sha256[:12], model.threshold)
        log.info("inspection log in %s", log_folder(config))  # relative paths land where the daemon starts
        if args.check:
            print(f"config ok; model {model.name} {model.version} ({model.precision}) loads; "
                  f"would listen on {config.server.host}:{config.server.port}; "
                  f"inspection log in {log_folder(config)}")
            return 0
        from edgead.heap import freeze_long_lived_objects
        from edgead.service.app import create_app

        app = create_app(config, model=model)
        # the collector's full passes would otherwise rescan every import and the model (a stall)
        log.debug("%d long-lived objects frozen out of the garbage collector", freeze_long_lived_objects())
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except EdgeadError as exc:  # e.g. ArtifactError: names the file and the problem
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    return run_server(app, config)


def uvicorn_config(app: Any, config: Any, **extra: Any) -> Any:
    """uvicorn's settings for the daemon: bounded connections, headers and keep-alive."""
    import uvicorn

    from edgead.service.connections import guarded_h11, listen_backlog

    s = config.server
    # the connection cap lives in the protocol (shed before parsing), not in uvicorn's limit_concurrency
    return uvicorn.Config(
        app, host=s.host, port=s.port, log_config=None, access_log=s.access_log, server_header=False,
        timeout_graceful_shutdown=10, lifespan="on", http=guarded_h11(s.header_timeout_s, s.max_connections),
        backlog=listen_backlog(s.backlog, s.max_connections), timeout_keep_alive=s.keep_alive_s,
        h11_max_incomplete_event_size=16 * 1024, **extra)


def run_server(app: Any, config: Any) -> int:
    """Serve ``app`` until SIGTERM/SIGINT; READY=1 goes to systemd once the socket listens."""
    import asyncio

    import uvicorn

    from edgead.outputs import sd_notify
    from edgead.service.connections import quiet_accept_errors

    class NotifyingServer(uvicorn.Server):
        async def startup(self, sockets: list | None = None) -> None:
            quiet_accept_errors(asyncio.get_running_loop())
            await super().startup(sockets)
            if self.started:
                host, port = self.servers[0].sockets[0].getsockname()[:2]
                url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
                example = (f"curl -s {url}/score" if config.source.enabled
                           else f"curl -s -H 'Content-Type: image/png' --data-binary @part.png {url}/score")
                log.info("edgead listening on %s; try: %s", url, example)
                sd_notify.notify("READY=1", f"STATUS=serving on {host}:{port}")

        async def shutdown(self, sockets: list | None = None) -> None:
            sd_notify.notify("STOPPING=1", "STATUS=stopping")
            await super().shutdown(sockets)

    if config.server.host not in ("127.0.0.1", "::1", "localhost") and config.token is None:
        log.warning("listening on %s without server.token: anyone on the network can reload the model and change "
                    "the threshold", config.server.host)
    server = NotifyingServer(uvicorn_config(app, config))
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits on bind errors after logging them
        return int(exc.code or 1)
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(serve_main(sys.argv[1:], prog="python -m edgead.service.main"))
