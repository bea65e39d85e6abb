"""Command line of `edgead export` (workstation only)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgead.cli_common import parse_roi, parse_size
from edgead.preprocess import PreprocessConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgead export", description="Fit PatchCore or PaDiM on good images and write an artifact.")
    p.add_argument("--data", required=True, type=Path, help="folder of good images, or an MVTec category root (train/good is used)")
    p.add_argument("--out", required=True, type=Path, help="artifact directory to write (replaced atomically)")
    p.add_argument("--method", default="patchcore", choices=["patchcore", "padim"])
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--taps", default=None, help="comma-separated feature taps (default: the stride-8 and stride-16 stages)")
    p.add_argument("--size", default="224", type=parse_size, help="input size: N or HxW, multiples of 32 (default 224)")
    p.add_argument("--resize", default="stretch", choices=["stretch", "letterbox"], help="resize mode (default stretch: nothing cut off)")
    p.add_argument("--roi", default=None, type=parse_roi, help="region of interest x,y,w,h in pixels, or fractions if all <= 1")
    p.add_argument("--coreset", default=0.1, type=float, help="coreset ratio (<= 1) or absolute size (> 1); default 0.1")
    p.add_argument("--proj-dim", default=128, type=int, help="random projection dims for the coreset selection (0: none)")
    p.add_argument("--neighbors", default=9, type=int, help="b, neighbours for the reweighted score (default 9)")
    p.add_argument("--target-dim", default=None, type=int, help="reduce patch features to this dimension (adaptive channel pooling)")
    p.add_argument("--padim-dim", default=100, type=int, help="PaDiM random channel count d (default 100)")
    p.add_argument("--padim-dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--holdout", default=0.1, type=float, help="share of good images held out for the threshold (default 0.1, at least 5)")
    p.add_argument("--val-defects", default=None, type=Path, help="folder of defect images: F1-optimal threshold instead")
    p.add_argument("--hnsw", default="auto", choices=["auto", "yes", "no"], help="build an hnswlib index of the bank")
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--threads", default=2, type=int)
    p.add_argument("--name", default=None, help="model name stored in the manifest (default: the output folder name)")
    p.add_argument("--tar", action="store_true", help="also write MODEL_DIR.tar")
    p.add_argument("--no-progress", action="store_true")
    return p


def export_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from export.pipeline import ExportConfig, export_model

    roi, roi_units = args.roi if args.roi else (None, "px")
    cfg = ExportConfig(
        data=args.data, out=args.out, method=args.method, backbone=args.backbone,
        taps=[int(t) if t.isdigit() else t for t in args.taps.split(",")] if args.taps else None,
        preprocess=PreprocessConfig(input_size=args.size, resize_mode=args.resize, roi=roi, roi_units=roi_units),
        coreset=args.coreset, proj_dim=args.proj_dim or None, num_neighbors=args.neighbors,
        target_dim=args.target_dim, padim_dim=args.padim_dim, padim_dtype=args.padim_dtype,
        holdout=args.holdout, val_defects=args.val_defects, hnsw=args.hnsw, seed=args.seed,
        threads=args.threads, tar=args.tar, progress=not args.no_progress, name=args.name,
    )
    out, manifest = export_model(cfg)
    print(json.dumps({"artifact": str(out), **summary(manifest)}, indent=2))
    return 0


def summary(manifest: dict) -> dict:
    files = manifest["files"]
    return {
        "method": manifest["method"],
        "backbone": manifest["backbone"]["name"],
        "input_size": manifest["preprocess"]["input_size"],
        "bank_size": manifest.get("bank_size"),
        "feature_dim": manifest["feature_dim"],
        "threshold": manifest["threshold"],
        "thresholds": manifest.get("thresholds"),
        "default_precision": manifest.get("default_precision"),
        "parity": manifest.get("parity"),
        "bytes": {k: v["bytes"] for k, v in files.items()},
        "export_seconds": manifest.get("export_seconds"),
    }
