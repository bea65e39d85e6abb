"""`edgead export`: good images -> fitted, exported, quantized, calibrated, checksummed artifact."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from edgead_export.backbones import build_backbone, default_taps
from edgead_export.config import DEFAULT_CORESET_MAX, ExportConfig  # noqa: F401  (imported from here too)
from edgead_export.extract import extract_features, load_batches
from edgead_export.feature_graph import PatchFeatureGraph
from edgead_export.fit import fit_patchcore, padim_channel_index
from edgead_export.onnx_export import OUTPUT_NAME, export_onnx, quantize_int8
from edgead_export.parity_check import GOOD, REAL, judge_int8, parity_set, score_frames
from edgead_export.roi import propose_roi

import edgead
from edgead.artifact import ArtifactWriter, pack_tar
from edgead.fit.bank_files import (
    add_patchcore_bank,
    record_search,
    write_padim_gaussians,
)
from edgead.fit.oof import FoldSource, frr_calibration
from edgead.fit.scorers import tile_groups
from edgead.fit.threshold import choose_threshold, split_holdout
from edgead.images import list_images, read_image, resolve_train_folder
from edgead.manifest import BACKBONE_FILES, MANIFEST, bank_file, scorer_files
from edgead.model import InspectionModel
from edgead.orientations import bank_share, maps_per_image
from edgead.scorer.search.registry import HNSW_CROSSOVER
from edgead.tiling import frame_inputs

ROI_SAMPLE_IMAGES = 64        # training images --roi auto looks at


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def since(wall: float, cpu: float) -> str:
    """'W s (C s CPU)' since (time.time(), time.process_time()) readings: CPU counts every thread."""
    return f"{time.time() - wall:.0f} s ({time.process_time() - cpu:.0f} s CPU)"


def build_graph(cfg: ExportConfig, fit_paths: list[Path]) -> tuple[PatchFeatureGraph, dict]:
    taps = cfg.taps or default_taps(cfg.backbone)
    backbone = build_backbone(cfg.backbone, taps)
    with torch.no_grad():
        tap_channels = [m.shape[1] for m in backbone(torch.zeros(1, 3, *cfg.preprocess.input_size))]
    channel_index = None
    if cfg.method == "padim":
        channel_index = padim_channel_index(sum(tap_channels), cfg.padim_dim, cfg.seed)
    # SimpleNet learns on PatchCore's locally aware patch features; SPADE (as PaDiM) on the raw maps
    features = "patchcore" if cfg.method == "simplenet" else cfg.method
    graph = PatchFeatureGraph(backbone, features, tap_channels, target_dim=cfg.target_dim,
                              channel_index=channel_index).eval()
    d, h, w = graph.feature_dim(cfg.preprocess.input_size)
    info = {"name": cfg.backbone, "taps": list(taps), "tap_channels": tap_channels,
            "feature_grid": [h, w], "aggregation": 3 if features == "patchcore" else 1,
            "target_dim": cfg.target_dim, "channel_index": channel_index}
    return graph, info


def torch_reference_scores(graph: torch.nn.Module, model: InspectionModel, frames: list[np.ndarray]) -> np.ndarray:
    """Scores with torch features and the runtime scorer: checks the exported graph."""
    scores = []
    with torch.no_grad():
        for frame in frames:
            batch = frame_inputs(frame, model.preprocess_cfg, model.tiling)[0]
            feats = graph(torch.from_numpy(batch)).numpy()
            scores.append(model.score_features(feats, with_map=False)[0])
    return np.array(scores)


def write_scorer_files(cfg: ExportConfig, writer: ArtifactWriter, feats: np.ndarray, manifest: dict,
                       graph: torch.nn.Module) -> tuple[torch.nn.Module, list[FoldSource] | None]:
    """Fit the method's scorer and write its files; returns the graph to export (SimpleNet's
    discriminator is part of it) and what the out-of-fold scorers are built from, per bank (None:
    the method has no out-of-fold scoring, its threshold rests on the held-out images)."""
    if cfg.method == "simplenet":
        from edgead_export.methods.simplenet import fit_section

        return fit_section(cfg, feats, graph, manifest, log), None
    if cfg.method == "spade":
        from edgead_export.methods.spade import write_spade

        write_spade(cfg, writer, feats, manifest, log)
        return graph, None
    groups = tile_groups(feats, cfg.tiling)
    # maps of one image in a bank: every tile's (and orientation's), when all tiles share it
    per_image = maps_per_image(cfg.tiling, cfg.orientations, per_bank=True)
    if cfg.method == "patchcore":
        return graph, _write_patchcore(cfg, writer, groups, manifest, per_image)
    _write_padim(cfg, writer, groups, manifest)
    return graph, [FoldSource(features=f, map_image=np.arange(len(f)) // per_image) for _, f in groups]


def _write_patchcore(cfg: ExportConfig, writer: ArtifactWriter, groups: list, manifest: dict,
                     maps_per_image: int) -> list[FoldSource]:
    cap = None if cfg.coreset_max is None else -(-cfg.coreset_max // len(groups))
    patches = sum(f.shape[0] * f.shape[2] * f.shape[3] for _, f in groups)
    log(f"coreset: {patches} patches -> {cfg.coreset}" + (f", at most {cfg.coreset_max} rows" if cap else "")
        + (f" ({len(groups)} banks, one per tile position)" if len(groups) > 1 else ""))
    pc = manifest["patchcore"] = {
        "num_neighbors": cfg.num_neighbors, "coreset": cfg.coreset, "coreset_max": cfg.coreset_max,
        "projection_dim": cfg.proj_dim, "training_patches": patches, "covering_radius": 0.0,
        "coreset_seconds": 0.0, "bank_dtype": cfg.bank_dtype,
        "image_score": {"rule": "reweighted", "b": cfg.num_neighbors} if cfg.image_score == "reweighted"
        else {"rule": "topk_mean", "k": cfg.topk},
    }
    rows = 0
    sources = []
    for tile, feats in groups:
        fit = fit_patchcore(feats, bank_share(cfg.coreset, cfg.orientations), cfg.proj_dim, cfg.seed, progress=cfg.progress, max_size=cap)
        source = add_patchcore_bank(writer.staging, pc, fit, tile, bank_dtype=cfg.bank_dtype,
                                    num_neighbors=cfg.num_neighbors, reweighted=cfg.image_score == "reweighted",
                                    hnsw=cfg.hnsw, seed=cfg.seed, patches_per_map=feats.shape[2] * feats.shape[3],
                                    maps_per_image=maps_per_image)
        sources.append(source)
        rows += source.bank.shape[0]
        name = bank_file(cfg.bank_dtype, scorer_files("patchcore", tile)["tag"])
        log(f"memory bank{'' if tile is None else f' (tile {tile})'}: {source.bank.shape[0]} x {source.bank.shape[1]} "
            f"({writer.path(name).stat().st_size / 1e6:.2f} MB {cfg.bank_dtype}), covering radius {fit.covering_radius:.4f}, "
            f"coreset {fit.coreset_seconds:.1f} s")
    manifest["bank_size"] = int(rows)
    per_bank = rows // len(groups)
    record_search(pc, per_bank, cfg.bank_dtype)
    log(f"nearest-neighbour search (auto): {pc['search']['auto']} ({per_bank} rows per bank; hnsw above "
        f"{HNSW_CROSSOVER} rows, measured crossover)")
    return sources


def _write_padim(cfg: ExportConfig, writer: ArtifactWriter, groups: list, manifest: dict) -> None:
    padim = manifest["padim"] = write_padim_gaussians(writer.staging, groups, cfg.padim_dtype)
    positions, size = padim["positions"], padim["bytes"]
    manifest["bank_size"] = int(positions)
    log(f"PaDiM Gaussians: {positions} positions x d={padim['d']}: "
        f"{size / 1e6:.2f} MB ({cfg.padim_dtype} precision matrices; grows with positions x d^2)")


def resolve_roi(cfg: ExportConfig, fit_paths: list[Path]) -> ExportConfig:
    """--roi auto: the ROI proposed from (a sample of) the training images."""
    if not cfg.roi_auto:
        return cfg
    step = max(1, len(fit_paths) // ROI_SAMPLE_IMAGES)
    proposal = propose_roi([read_image(p) for p in fit_paths[::step][:ROI_SAMPLE_IMAGES]])
    if proposal is None:
        log("roi auto: the part fills the frame, no ROI")
        return cfg.updated(roi=None)
    box, units = proposal
    log(f"roi auto: {','.join(f'{v:g}' for v in box)} ({units})")
    return cfg.updated(roi=box)


def calibrate(cfg: ExportConfig, staging: Path, graph: torch.nn.Module, hold: list[np.ndarray],
              defects: list[np.ndarray], fit_paths: list[Path], sources: list[FoldSource] | None) -> dict:
    """Per-precision thresholds, parity report and the default precision."""
    report: dict = {"thresholds": {}, "score_stats": {}, "parity": {}}
    t_start = time.time(), time.process_time()
    frames, kind = parity_set(hold, defects, cfg.preprocess, cfg.seed)
    scored = {}
    for precision in ("fp32", "int8"):
        model = InspectionModel(staging, precision=precision, threads=cfg.threads, search="exact")
        scored[precision] = score_frames(model, frames)
        good, bad = scored[precision].scores[kind == GOOD], scored[precision].scores[kind == REAL]
        if precision == "fp32":
            ref = torch_reference_scores(graph, model, hold)
            report["parity"]["fp32_vs_torch_max_rel_diff"] = float(np.max(np.abs(good - ref) / np.maximum(np.abs(ref), 1e-12)))
        thr, report["threshold_rule"] = choose_threshold(good, bad)
        report["thresholds"][precision] = thr
        report["score_stats"][precision] = {
            "good_mean": float(good.mean()), "good_std": float(good.std()), "good_max": float(good.max()),
            **({"defect_mean": float(bad.mean()), "defect_min": float(bad.min())} if defects else {}),
        }
    log(f"parity check: {len(frames)} frames scored at both precisions in {since(*t_start)}")
    parity = report["parity"]
    parity.update(judge_int8(kind, scored["fp32"], scored["int8"], cfg.topk, cfg.seed))
    report["default_precision"] = "int8" if parity["int8_ok"] else "fp32"
    if not parity["int8_ok"]:
        log(f"WARNING: INT8 parity failed ({'; '.join(parity['failed'])}): FP32 stays the default precision")
    if cfg.target_frr is not None and sources:
        target_frr_threshold(cfg, staging, report, scored[report["default_precision"]].scores[kind == GOOD],
                             fit_paths, sources, with_defects=bool(defects))
    return report


def target_frr_threshold(cfg: ExportConfig, staging: Path, report: dict, held_out: np.ndarray,
                         fit_paths: list[Path], sources: list[FoldSource], with_defects: bool) -> None:
    """The default precision's threshold for ``cfg.target_frr`` (F1-optimal stays with
    --val-defects) and the false-reject rate to expect from it, from every good image scored by a
    model that did not see it: the training images out of fold, the held-out ones as they are.
    (The other precision keeps the held-out rule: scoring every image twice would double the cost.)"""
    precision = report["default_precision"]
    t_start = time.time(), time.process_time()
    model = InspectionModel(staging, precision=precision, threads=cfg.threads, search="exact")
    cal = frr_calibration(model, fit_paths, sources, held_out, precision, cfg.target_frr, cfg.folds,
                          cfg.fold_order, cfg.seed, report["thresholds"][precision] if with_defects else None)
    est = cal.estimate
    log(f"out-of-fold scores: {len(fit_paths)} training images in {since(*t_start)}")
    if cal.rule is not None:
        report["thresholds"][precision], report["threshold_rule"] = est.threshold, cal.rule
    report["false_rejects"] = {precision: cal.record}
    log(f"threshold {est.threshold:.4g} ({precision}): {est.rejected} of {est.good_images} out-of-sample good "
        f"scores above it, expected false-reject rate {est.expected_frr * 100:.1f} % "
        f"(<= {est.frr_upper * 100:.1f} % at {est.confidence * 100:.0f} %)")


def export_model(cfg: ExportConfig, features: np.ndarray | None = None) -> tuple[Path, dict]:
    """Run the whole export; returns (artifact dir, manifest).  ``features``: the training
    images' patch features at this configuration, already extracted (``--auto`` hands over the
    chosen candidate's), in the order of the seeded split's training images."""
    t_start = time.time()
    torch.set_num_threads(max(1, cfg.threads))
    paths = list_images(resolve_train_folder(cfg.data))
    defects = list_images(cfg.val_defects) if cfg.val_defects else []
    fit_paths, hold = split_holdout(paths, cfg.holdout, cfg.min_holdout, cfg.seed)
    log(f"{len(paths)} good images: {len(fit_paths)} to fit, {len(hold)} held out for the threshold"
        + (f", {len(defects)} validation defects" if defects else ""))
    # decoded once, up front: fails early on an unreadable file, then reused by every calibration pass
    hold_frames = [read_image(p) for p in hold]
    defect_frames = [read_image(p) for p in defects]
    roi_source = "auto" if cfg.roi_auto else ("user" if cfg.roi is not None else None)
    cfg = resolve_roi(cfg, fit_paths)
    graph, backbone_info = build_graph(cfg, fit_paths)
    if features is not None and len(features) != len(fit_paths) * cfg.maps_per_image:
        raise ValueError(f"{len(features)} feature maps handed over for {len(fit_paths)} training images "
                         f"x {cfg.maps_per_image} maps (tiles x orientations)")
    t_feats = time.time(), time.process_time()
    feats = features if features is not None else extract_features(
        graph, fit_paths, cfg.preprocess, progress=cfg.progress, desc="features", tiling=cfg.tiling,
        orientations=cfg.orientations)
    if features is None:
        log(f"features: {len(fit_paths)} training images in {since(*t_feats)}")
    d = int(feats.shape[1])
    manifest = {
        "name": cfg.name or Path(cfg.out).name,
        "edgead_version": edgead.__version__,
        "model_version": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "method": cfg.method,
        "backbone": backbone_info,
        "preprocess": cfg.preprocess.to_dict(),
        "roi_source": roi_source,
        "tiling": cfg.tiling.to_dict(),
        "feature_dim": d,
        "map_sigma": cfg.map_sigma,
        "training_images": len(fit_paths),
        "holdout_images": len(hold),
        "validation_defect_images": len(defects),
        "seed": cfg.seed,
        "threshold": 1.0,
        "export": cfg.manifest_section(),  # read back by refits (ExportConfig.from_manifest)
    }
    with ArtifactWriter(cfg.out) as writer:
        graph, sources = write_scorer_files(cfg, writer, feats, manifest, graph)
        del feats  # (PaDiM's out-of-fold refits keep their features)
        fp32, int8 = writer.path(BACKBONE_FILES["fp32"]), writer.path(BACKBONE_FILES["int8"])
        score_head = cfg.method == "simplenet"
        t0 = time.time(), time.process_time()
        export_onnx(graph, cfg.preprocess.input_size, fp32, output_name="scores" if score_head else OUTPUT_NAME)
        onnx_took, t1 = since(*t0), (time.time(), time.process_time())
        calib = list(load_batches(fit_paths[: max(1, cfg.calib_images // cfg.tiling.count)], cfg.preprocess,
                                  batch_size=1, tiling=cfg.tiling))
        manifest["quantization"] = quantize_int8(fp32, int8, calib, float_prefixes=getattr(graph, "float_nodes", ()),
                                                 float_early=cfg.int8_float_blocks)
        log(f"ONNX export {onnx_took}, INT8 quantization and calibration {since(*t1)}")
        writer.write_manifest(manifest)
        report = calibrate(cfg, writer.staging, graph, hold_frames, defect_frames, fit_paths, sources)
        manifest.update(
            thresholds=report["thresholds"], threshold=report["thresholds"][report["default_precision"]],
            threshold_rule=report["threshold_rule"], score_stats=report["score_stats"],
            parity=report["parity"], default_precision=report["default_precision"],
            **({"false_rejects": report["false_rejects"]} if "false_rejects" in report else {}),
            export_seconds=round(time.time() - t_start, 1),
        )
        if report["default_precision"] == "int8" and not cfg.keep_fp32:
            # parity is measured; what the Pi runs is INT8: the FP32 graph would double the artifact
            fp32.unlink()
            manifest["fp32_backbone"] = "dropped after the parity check (export --keep-fp32 keeps it)"
            log("INT8 passed parity: backbone.onnx (FP32) left out of the artifact (--keep-fp32 keeps it)")
        out = writer.commit(manifest)
    if cfg.tar:
        pack_tar(out, out.with_suffix(".tar"))
    return out, json.loads((out / MANIFEST).read_text())
