"""``edgead teach`` and ``edgead model``: teach a new version on the device, list and roll back."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from edgead.errors import EdgeadError
from edgead.teach import versions

TEACH = "fit a new model version from good frames on this device, and serve it"
MODEL = "list the kept model versions, or roll back to one"


def _ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected result ids like 17,18") from None


def teach_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgead teach", description=TEACH)
    p.add_argument("--config", type=Path, help="the daemon's config: model path, source, inspection log, teach settings")
    p.add_argument("--model", type=Path, help="the served artifact directory (default: the config's model.path)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--folder", type=Path, help="a folder of good images")
    src.add_argument("--frames", type=int, help="capture this many frames from the configured source (--source)")
    src.add_argument("--results", type=_ids, help="mark these logged results good (ids, comma separated): "
                     "their frames join the memory bank")
    p.add_argument("--source", help="frame source spec for --frames (default: the config's source.spec)")
    p.add_argument("--rate", type=float, default=2.0, help="frames per second for --frames")
    p.add_argument("--mode", choices=["new", "add"], help="new: refit from the frames (default for --folder "
                   "and --frames); add: join the frames to the bank (default for --results)")
    p.add_argument("--precision", choices=["int8", "fp32"], default=None, help="backbone for the features")
    p.add_argument("--threads", type=int, default=None, help="threads for the features and the coreset "
                   "(default: the config's teach.threads)")
    p.add_argument("--memory-mb", type=float, default=None, help="features beyond this go to a scratch file")
    p.add_argument("--keep", type=int, default=None, help="versions kept")
    p.add_argument("--no-install", action="store_true", help="keep the new version without serving it")
    p.add_argument("--request", default=None, help="recorded in the version's lineage")
    p.add_argument("--added", default=None, help="what was added, in words (default: where the frames came from)")
    p.add_argument("--result-ids", type=_ids, default=None, help="recorded in the version's lineage")
    p.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by this much first")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    return p


def teach_main(argv: list[str]) -> int:
    a = teach_parser().parse_args(argv)
    if a.nice > 0:
        os.nice(a.nice)   # before any thread pool starts: every thread inherits it
    from edgead.teach.refit import teach
    from edgead.teach.settings import TeachConfig

    cfg = _config(a.config)
    tc: TeachConfig = cfg.teach if cfg is not None else TeachConfig()
    model = a.model or (cfg.model.path if cfg is not None else None)
    if model is None:
        raise EdgeadError("name the model: --model DIR or --config with model.path")
    with tempfile.TemporaryDirectory(prefix=".teach-frames-", dir=versions.store_dir(model).parent) as tmp:
        images, added, mode = _frames(a, cfg, Path(tmp))
        res = teach(model, images, mode=a.mode or mode, added=a.added or added,
                    result_ids=a.results or a.result_ids or [],
                    request=a.request or "cli", precision=a.precision, threads=a.threads or tc.threads,
                    memory_budget_mb=a.memory_mb or tc.memory_budget_mb, keep=a.keep or tc.keep_versions)
    if not a.no_install:
        with versions.locked(model):
            versions.install(model, res.version)
    out = {"version": res.version, "parent": res.parent, "mode": res.mode, "frames": res.frames,
           "bank_size": res.bank_size, "threshold": res.threshold, "seconds": round(res.seconds, 2),
           "installed": not a.no_install}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"version {res.version} ({res.mode}, {res.frames} frames, bank {res.bank_size} rows, threshold "
              f"{res.threshold:.6g}, {res.seconds:.1f} s) from {res.parent}"
              + ("" if a.no_install else f"; now in {Path(model)} (a running daemon: POST /model/reload)"))
    return 0


def _config(path: Path | None):
    if path is None:
        return None
    from edgead.service.config import load_config

    return load_config(path)


def _frames(a: argparse.Namespace, cfg, tmp: Path) -> tuple[list[Path], str, str]:
    from edgead.teach import frames

    if a.folder is not None:
        return frames.folder_frames(a.folder), f"{a.folder}", "new"
    if a.results is not None:
        if cfg is None:
            raise EdgeadError("--results needs --config (the inspection log's data_dir)")
        from edgead.outputs.inspection_log import InspectionLog

        log = InspectionLog(cfg.inspection.data_dir)
        try:
            return frames.result_frames(log, a.results), "results " + ", ".join(map(str, a.results)) + " marked good", "add"
        finally:
            log.close()
    from edgead.capture.base import SourceOptions
    from edgead.capture.registry import parse_source

    spec = a.source or (cfg.source.spec if cfg is not None else None)
    if not spec or spec == "none":
        raise EdgeadError("--frames needs a source: --source SPEC or the config's source.spec")
    source = parse_source(spec, SourceOptions())
    source.open()
    try:
        return frames.capture_frames(lambda: source.read().image, a.frames, a.rate, tmp), \
            f"{a.frames} frames from {spec} at {a.rate:g}/s", "new"
    finally:
        source.close()


def model_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgead model", description=MODEL)
    p.add_argument("action", choices=["list", "rollback"])
    p.add_argument("--model", type=Path, required=True, help="the served artifact directory")
    p.add_argument("--to", default=None, help="rollback: this version (default: the served one's parent)")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def model_main(argv: list[str]) -> int:
    a = model_parser().parse_args(argv)
    if not (a.model / "manifest.json").is_file():
        raise EdgeadError(f"{a.model}: not a model directory (no manifest.json)")
    if a.action == "rollback":
        done = versions.rollback(a.model, a.to)
        print(json.dumps({"version": done}) if a.json else
              f"now serving {done} from {a.model} (a running daemon: POST /model/reload)")
        return 0
    with versions.locked(a.model):
        versions.archive_current(a.model)
    rows = [v.to_dict() for v in versions.list_versions(a.model)]
    if a.json:
        print(json.dumps(rows))
    else:
        for v in rows:
            print(f"{'*' if v['current'] else ' '} {v['version']:<28} {v['created'] or '':<21} "
                  f"parent {v['parent'] or '-':<28} {v['added'] or 'exported'}", file=sys.stdout)
    return 0
