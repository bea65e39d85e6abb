"""`edgead` command line: export (workstation), score, eval, info, serve, bench, demo.

User mistakes (missing files, bad images, bad artifacts) print one clear line and exit 2;
no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgead.errors import EdgeadError

COMMANDS = {
    "export": "fit PatchCore/PaDiM on good images and write an artifact (workstation, needs edgead[export])",
    "score": "score image files with an artifact, one JSON line per image",
    "eval": "image/pixel AUROC, F1 and confusion on an MVTec-style category",
    "info": "summarise an artifact's manifest",
    "serve": "run the inspection daemon (camera -> score -> HTTP/GPIO/log)",
    "bench": "per-stage latency and memory figures",
    "demo": "serve the bundled demo model on generated frames (no workstation needed)",
    "teach": "fit a new model version from good frames on this device, and serve it",
    "model": "list the kept model versions, or roll back to one",
}


def _common_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=Path, help="artifact directory")
    p.add_argument("--precision", choices=["int8", "fp32"], default=None, help="default: the artifact's")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime, search and BLAS threads")
    p.add_argument("--search", choices=["auto", "int8", "exact", "hnsw"], default="auto",
                   help="nearest-neighbour search of a PatchCore bank (auto: the artifact's choice)")


def score_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgead score", description=COMMANDS["score"])
    _common_model_args(p)
    p.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, BMP, TIFF)")
    return p


def cmd_score(argv: list[str]) -> int:
    args = score_parser().parse_args(argv)
    from edgead.images import read_image
    from edgead.model import load_model

    model = load_model(args.model, args.precision, args.threads, args.search)
    failed = 0
    for path in args.images:
        try:
            image = read_image(path)
        except EdgeadError as exc:
            print(json.dumps({"image": str(path), "error": str(exc)}), flush=True)
            failed += 1
            continue
        res = model.score(image, with_map=False)
        print(json.dumps({"image": str(path), **res.to_dict(), "precision": model.precision}), flush=True)
    return 2 if failed else 0


def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgead eval", description=COMMANDS["eval"])
    _common_model_args(p)
    p.add_argument("--data", required=True, type=Path, help="MVTec-style category root (test/good, test/<defect>)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plots", type=Path, default=None, help="write roc.png and score_histogram.png here")
    p.add_argument("--scores", action="store_true", help="include per-image scores in the JSON")
    return p


def cmd_eval(argv: list[str]) -> int:
    args = eval_parser().parse_args(argv)
    from edgead.evaluate import evaluate, format_table, write_plots
    from edgead.model import load_model

    model = load_model(args.model, args.precision, args.threads, args.search)
    result = evaluate(model, args.data, progress=not args.json and sys.stderr.isatty())
    if args.plots:
        result["plots"] = [str(p) for p in write_plots(result, args.plots)]
    if not args.scores:
        result.pop("_scores")
    print(json.dumps(result) if args.json else format_table(result))
    return 0


def info_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgead info", description=COMMANDS["info"])
    p.add_argument("model", type=Path, help="artifact directory")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p


def cmd_info(argv: list[str]) -> int:
    args = info_parser().parse_args(argv)
    from edgead.model import load_model

    # "ok" means it loads: manifest validated, every checksum verified, backbone and scorer built
    model = load_model(args.model, threads=1)
    m = model.manifest
    pc = m.patchcore
    info = {
        "name": m.name, "method": m.method, "backbone": m.backbone.name, "taps": m.backbone.taps,
        "input_size": list(m.preprocess.input_size), "resize_mode": m.preprocess.resize_mode,
        "interpolation": m.preprocess.interpolation, "photometric": m.preprocess.photometric,
        "resize_dtype": m.preprocess.resize_dtype,
        "roi": list(m.preprocess.roi) if m.preprocess.roi is not None else None,
        "tiling": m.tiling.to_dict(),
        "feature_dim": m.feature_dim, "bank_size": m.bank_size,
        "bank_dtype": pc.bank_dtype if pc else None, "search": getattr(pc, "search", None),
        "image_score": pc.image_score.model_dump(exclude_none=True) if pc else None,
        "threshold": m.threshold, "thresholds": m.thresholds or None,
        "default_precision": m.default_precision, "training_images": m.training_images,
        "false_rejects": {k: v.model_dump() for k, v in m.false_rejects.items()} if m.false_rejects else None,
        "created": m.created, "edgead_version": m.edgead_version, "schema_version": m.schema_version,
        "parity": m.parity, "auto": _auto_choice(m), "files": {k: v.bytes for k, v in m.files.items()},
        "manifest_sha256": model.sha256, "checksums": "ok", "loads": f"ok ({model.precision}, {model.search_backend})",
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        info["false_rejects"] = _false_rejects_text(m, model.precision)
        info["auto"] = _auto_text(info["auto"])
        for k, v in info.items():
            print(f"{k:<18} {v}")
    return 0


def _auto_choice(m) -> dict | None:
    """What `export --auto` chose, on what, and every judged candidate's AUROC (None: no --auto)."""
    auto = getattr(m, "auto", None)
    if not isinstance(auto, dict) or "chosen" not in auto:
        return None
    return {"chosen": auto["chosen"], "proxy": str(auto.get("basis", "")).startswith("GOOD IMAGES ONLY"),
            "auroc": {c["spec"]: c["auroc"] for c in auto.get("candidates", []) if "auroc" in c}}


def _auto_text(choice: dict | None) -> str | None:
    """"chose 'tiles=2x2' on proxy defects (good images only): (default) 0.708, tiles=2x2 0.843"."""
    if choice is None:
        return None
    basis = "proxy defects (good images only)" if choice["proxy"] else "--val-defects"
    judged = ", ".join(f"{spec} {auroc:.3f}" for spec, auroc in choice["auroc"].items())
    return f"chose {choice['chosen']!r} on {basis}: AUROC {judged}"


def _false_rejects_text(m, precision: str) -> str | None:
    """'1.2 % expected (<= 2.3 % at 95 %), 5 of 500 good images above the threshold' or None."""
    fr = (m.false_rejects or {}).get(precision)
    if fr is None:
        return None
    return (f"{fr.expected_frr * 100:.1f} % expected (<= {fr.frr_upper * 100:.1f} % at {fr.confidence * 100:.0f} %), "
            f"target {fr.target_frr * 100:g} %: {fr.rejected} of {fr.good_images} out-of-sample good images "
            f"above the {precision} threshold")


def _delegate(module: str, func: str, argv: list[str]) -> int:
    import importlib

    return int(getattr(importlib.import_module(module), func)(argv) or 0)


def _workstation(name: str, argv: list[str]) -> int:
    from edgead.workstation import feature

    return int(feature(name)(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: edgead COMMAND [options]\n\ncommands:")
        for name, text in COMMANDS.items():
            print(f"  {name:<8} {text}")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        import edgead

        print(edgead.__version__)
        return 0
    command, rest = argv[0], argv[1:]
    handlers = {
        "score": lambda: cmd_score(rest),
        "eval": lambda: cmd_eval(rest),
        "info": lambda: cmd_info(rest),
        "export": lambda: _workstation("export", rest),
        "serve": lambda: _delegate("edgead.service.main", "serve_main", rest),
        "bench": lambda: _delegate("edgead.bench", "bench_main", rest),
        "demo": lambda: _delegate("edgead.demo", "demo_main", rest),
        "teach": lambda: _delegate("edgead.teach.cli", "teach_main", rest),
        "model": lambda: _delegate("edgead.teach.cli", "model_main", rest),
    }
    if command not in handlers:
        print(f"edgead: unknown command {command!r} (one of {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    try:
        return handlers[command]()
    except EdgeadError as exc:
        print(f"edgead {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
