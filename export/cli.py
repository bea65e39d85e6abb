"""Command line of `edgead export` (workstation only).

The options of the export settings are generated from :class:`edgead_export.config.ExportConfig`;
only the ``--auto`` search adds its own.
"""

from __future__ import annotations

import argparse
import json

from edgead.errors import ConfigError
from edgead.manifest import Manifest
from edgead_export.config import add_options, from_args, spec_key, stored_fields


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgead export", description="Fit PatchCore or PaDiM on good images and write an artifact.")
    add_options(p)
    p.add_argument("--auto", action="store_true", help="judge the --candidates on shared features (one backbone pass per input geometry) against "
                        "--val-defects or proxy defects, export the chosen one")
    p.add_argument("--candidates", default=None,
                   help="with --auto: ';'-separated specs of key=value settings over the options above, e.g. "
                        f"'size=224;size=320 tiles=2x2 coreset=0.01' (keys: {', '.join(map(spec_key, stored_fields()))})")
    p.add_argument("--budget-ms", default=None, type=float, help="with --auto: latency budget per frame on the Pi (estimate; default 150); "
                        "candidates over it are left out")
    p.add_argument("--pi-factor", default=None, type=float,
                   help="with --auto: Pi one-thread time / this machine's (default: a Pi 5 estimate; measure yours with `edgead bench`)")
    return p


def export_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not args.auto and (args.candidates or args.budget_ms is not None or args.pi_factor is not None):
        raise ConfigError("--candidates, --budget-ms and --pi-factor need --auto")
    cfg = from_args(args)
    from edgead.artifact import read_manifest
    from edgead_export.pipeline import export_model

    if args.auto:
        from edgead_export.auto import PI_CPU_FACTOR, auto_export

        candidates = [c.strip() for c in args.candidates.split(";") if c.strip()] if args.candidates else None
        out, _ = auto_export(cfg, candidates, args.budget_ms, args.pi_factor or PI_CPU_FACTOR)
    else:
        out, _ = export_model(cfg)
    print(json.dumps({"artifact": str(out), **summary(read_manifest(out))}, indent=2))
    return 0


def summary(m: Manifest) -> dict:
    pre = m.preprocess
    return {
        "method": m.method,
        "backbone": m.backbone.name,
        "input_size": list(pre.input_size),
        "resize_mode": pre.resize_mode,
        "interpolation": pre.interpolation,
        "photometric": pre.photometric,
        "resize_dtype": pre.resize_dtype,
        "roi": list(pre.roi) if pre.roi is not None else None,
        "tiling": m.tiling.to_dict(),
        **({"auto": {k: m.auto[k] for k in ("chosen", "basis", "within_budget")}} if getattr(m, "auto", None) else {}),
        "bank_size": m.bank_size,
        "feature_dim": m.feature_dim,
        "threshold": m.threshold,
        "thresholds": m.thresholds,
        "default_precision": m.default_precision,
        "parity": m.parity,
        "bytes": {k: v.bytes for k, v in m.files.items()},
        "export_seconds": getattr(m, "export_seconds", None),
    }
