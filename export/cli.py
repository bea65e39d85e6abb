"""Command line of `edgead export` (workstation only)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgead_export.cli_common import parse_roi, parse_size
from edgead.errors import ConfigError
from edgead.preprocess import INTERPOLATIONS, PHOTOMETRIC, PreprocessConfig
from edgead.tiling import BANK_LAYOUTS, MERGE_MODES, TilingConfig, parse_grid


def _roi_arg(text: str):
    return "auto" if text == "auto" else parse_roi(text)


def _grid_arg(text: str) -> tuple[int, int]:
    try:
        return parse_grid(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgead export", description="Fit PatchCore or PaDiM on good images and write an artifact.")
    p.add_argument("--data", required=True, type=Path, help="folder of good images, or an MVTec category root (train/good is used)")
    p.add_argument("--out", required=True, type=Path, help="artifact directory to write (replaced atomically)")
    p.add_argument("--method", default="patchcore", choices=["patchcore", "padim"])
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--taps", default=None, help="comma-separated feature taps (default: the stride-8 and stride-16 stages)")
    p.add_argument("--size", default="224", type=parse_size, help="input size: N or HxW, multiples of 32 (default 224)")
    p.add_argument("--resize", default="stretch", choices=["stretch", "letterbox"], help="resize mode (default stretch: nothing cut off)")
    p.add_argument("--interpolation", default="area", choices=INTERPOLATIONS,
                   help="resize filter: INTER_AREA whenever the image shrinks (default), or bilinear up to a 2x "
                        "shrink (5x faster at small factors, ~0.3 ms a frame here; 0.7 pt AUROC on magnetic_tile)")
    p.add_argument("--photometric", default="none", choices=PHOTOMETRIC,
                   help="per-frame brightness normalisation of the ROI before the backbone, the same at fit and "
                        "serve: histogram equalisation, or luminance mean/std standardised (default none; "
                        "magnetic_tile texture recipe: 0.933 -> 0.982 image AUROC with equalize; elpv_poly and boards lose)")
    p.add_argument("--roi", default=None, type=_roi_arg,
                   help="region of interest x,y,w,h in pixels, or fractions if all <= 1; 'auto': proposed from the training images")
    p.add_argument("--tiles", default="1x1", type=_grid_arg, help="score the ROI as RxC overlapping tiles at --size each (default 1x1)")
    p.add_argument("--tile-overlap", default=0.25, type=float, help="overlap of neighbouring tiles, share of a tile side (default 0.25)")
    p.add_argument("--tile-merge", default="mean", choices=MERGE_MODES, help="tile maps in overlaps: mean (default) or max")
    p.add_argument("--tile-banks", default="shared", choices=BANK_LAYOUTS, help="one memory bank for all tiles (default) or one per tile position")
    p.add_argument("--coreset", default=0.01, type=float,
                   help="coreset ratio (<= 1) or absolute size (> 1); default 0.01 (try 0.1 with under ~100 training images)")
    p.add_argument("--coreset-max", default=None, type=int,
                   help="absolute cap on memory-bank rows, all tile banks together (default 20000; 0: no cap)")
    p.add_argument("--proj-dim", default=128, type=int, help="random projection dims for the coreset selection (0: none)")
    p.add_argument("--neighbors", default=9, type=int, help="b, neighbours for the reweighted score (default 9)")
    p.add_argument("--image-score", default="reweighted", choices=["reweighted", "topk_mean"],
                   help="PatchCore image score: the paper's reweighted max (default) or the mean of the --topk largest patch distances")
    p.add_argument("--topk", default=10, type=int, help="k of --image-score topk_mean (default 10)")
    p.add_argument("--target-dim", default=None, type=int, help="reduce patch features to this dimension (adaptive channel pooling)")
    p.add_argument("--padim-dim", default=100, type=int, help="PaDiM random channel count d (default 100)")
    p.add_argument("--padim-dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--holdout", default=0.1, type=float, help="share of good images held out for the threshold (default 0.1, at least 5)")
    p.add_argument("--val-defects", default=None, type=Path, help="folder of defect images: F1-optimal threshold instead")
    p.add_argument("--hnsw", default="auto", choices=["auto", "yes", "no"], help="build an hnswlib index of the bank")
    p.add_argument("--bank-dtype", default="int8", choices=["int8", "float16", "float32"],
                   help="memory bank on disk: int8 codes + per-row scale (default; what the int8 search uses), float16 or float32")
    p.add_argument("--keep-fp32", action="store_true",
                   help="keep the FP32 backbone in the artifact when INT8 passes parity (for --precision fp32 on the Pi)")
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--threads", default=2, type=int)
    p.add_argument("--name", default=None, help="model name stored in the manifest (default: the output folder name)")
    p.add_argument("--auto", action="store_true", help="export each --candidates configuration, keep the best AUROC within --budget-ms")
    p.add_argument("--candidates", default=None,
                   help="with --auto: ';'-separated specs, e.g. 'size=224;size=320 tiles=2x2 coreset=0.01' "
                        "(keys size, resize, roi, tiles, overlap, merge, banks, coreset, coreset_max, ...)")
    p.add_argument("--budget-ms", default=None, type=float, help="with --auto: latency budget per frame on the Pi (estimate)")
    p.add_argument("--pi-factor", default=None, type=float,
                   help="with --auto: Pi one-thread time / this machine's (default 5.0, a Pi 5 estimate; measure yours with `edgead bench`)")
    p.add_argument("--tar", action="store_true", help="also write MODEL_DIR.tar")
    p.add_argument("--no-progress", action="store_true")
    return p


def export_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from edgead_export.pipeline import DEFAULT_CORESET_MAX, ExportConfig, export_model

    if not args.auto and (args.candidates or args.budget_ms is not None or args.pi_factor is not None):
        raise ConfigError("--candidates, --budget-ms and --pi-factor need --auto")
    if not args.coreset > 0:
        raise ConfigError(f"--coreset {args.coreset}: expected a ratio in (0, 1] or a row count > 1")
    if args.coreset_max is not None and args.coreset_max < 0:
        raise ConfigError(f"--coreset-max {args.coreset_max}: expected a row count (0: no cap)")
    roi, roi_units = args.roi if args.roi and args.roi != "auto" else (None, "px")
    cfg = ExportConfig(
        data=args.data, out=args.out, method=args.method, backbone=args.backbone,
        taps=[int(t) if t.isdigit() else t for t in args.taps.split(",")] if args.taps else None,
        preprocess=PreprocessConfig(input_size=args.size, resize_mode=args.resize, roi=roi, roi_units=roi_units,
                                    interpolation=args.interpolation, photometric=args.photometric),
        tiling=TilingConfig(grid=args.tiles, overlap=args.tile_overlap if args.tiles != (1, 1) else 0.0,
                            merge=args.tile_merge, banks=args.tile_banks),
        roi_auto=args.roi == "auto",
        coreset=args.coreset, coreset_max=DEFAULT_CORESET_MAX if args.coreset_max is None else (args.coreset_max or None),
        proj_dim=args.proj_dim or None, num_neighbors=args.neighbors, image_score=args.image_score, topk=args.topk,
        target_dim=args.target_dim, padim_dim=args.padim_dim, padim_dtype=args.padim_dtype,
        holdout=args.holdout, val_defects=args.val_defects, hnsw=args.hnsw, seed=args.seed,
        bank_dtype=args.bank_dtype, keep_fp32=args.keep_fp32,
        threads=args.threads, tar=args.tar, progress=not args.no_progress, name=args.name,
    )
    if args.auto:
        from edgead_export.auto import PI_CPU_FACTOR, auto_export

        candidates = [c.strip() for c in args.candidates.split(";") if c.strip()] if args.candidates else None
        out, manifest = auto_export(cfg, candidates, args.budget_ms, args.pi_factor or PI_CPU_FACTOR)
    else:
        out, manifest = export_model(cfg)
    print(json.dumps({"artifact": str(out), **summary(manifest)}, indent=2))
    return 0


def summary(manifest: dict) -> dict:
    files = manifest["files"]
    return {
        "method": manifest["method"],
        "backbone": manifest["backbone"]["name"],
        "input_size": manifest["preprocess"]["input_size"],
        "resize_mode": manifest["preprocess"].get("resize_mode"),
        "interpolation": manifest["preprocess"].get("interpolation", "area"),
        "photometric": manifest["preprocess"].get("photometric", "none"),
        "roi": manifest["preprocess"].get("roi"),
        "tiling": manifest.get("tiling"),
        **({"auto": {k: manifest["auto"][k] for k in ("chosen", "basis", "within_budget")}} if "auto" in manifest else {}),
        "bank_size": manifest.get("bank_size"),
        "feature_dim": manifest["feature_dim"],
        "threshold": manifest["threshold"],
        "thresholds": manifest.get("thresholds"),
        "default_precision": manifest.get("default_precision"),
        "parity": manifest.get("parity"),
        "bytes": {k: v["bytes"] for k, v in files.items()},
        "export_seconds": manifest.get("export_seconds"),
    }
