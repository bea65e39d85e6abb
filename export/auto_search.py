"""`--auto` candidates judged on shared features: one backbone pass per input geometry.

PatchCore candidates share a geometry's features; a PaDiM candidate has its own (the random
channel subset of the raw maps) and is judged with the Gaussians the export would fit.

Candidates that differ only in what is fitted on the patch features (coreset, image score, k,
bank layout, ...) see the same features; those are extracted once per *geometry* (backbone,
taps, input size, tiles, preprocessing) for the training, held-out and proxy-defect images
together, every bank of the geometry is fitted on them, and each candidate's scores come from
the runtime's own PatchCore scorer (exact search) on the cached features.  Nothing is exported
here: only the winner goes through the full export (ONNX, INT8, calibration), with its
geometry's training features handed over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgead.fit.scorers import padim_scorer, tile_groups
from edgead.metrics_math import auroc
from edgead.orientations import bank_share
from edgead.scorer.patchcore import PatchCoreScorer
from edgead.scorer.patchcore_bank import PatchCoreBank, topk_mean
from edgead_export.config import ExportConfig
from edgead_export.extract import extract_features
from edgead_export.fit import fit_patchcore

# settings fitted on the features, not part of them: candidates differing only here share a pass
SCORER_FIELDS = frozenset({
    "coreset", "coreset_max", "proj_dim", "num_neighbors", "image_score", "topk", "bank_dtype", "hnsw",
    "tile_merge", "tile_banks", "map_sigma", "target_frr", "folds", "fold_order", "calib_images",
    "int8_float_blocks", "keep_fp32", "threads", "tar", "progress", "name", "out", "val_defects",
})
BANK_FIELDS = ("coreset", "coreset_max", "proj_dim", "seed", "tile_banks")


def geometry_key(cfg: ExportConfig) -> str:
    """What the patch features depend on (every setting not in SCORER_FIELDS)."""
    return repr(sorted((k, v) for k, v in cfg.model_dump().items() if k not in SCORER_FIELDS))


def bank_key(cfg: ExportConfig) -> tuple:
    return tuple(getattr(cfg, f) for f in BANK_FIELDS)


@dataclass
class GeometryFeatures:
    """Features of one geometry: (images x tiles, D, h, w) float32 each (the training images' also
    x orientations: ``ExportConfig.maps_per_image`` maps each)."""

    fit: np.ndarray
    hold: np.ndarray
    defects: np.ndarray
    tiles: int

    def frames(self, which: str) -> list[np.ndarray]:
        feats = getattr(self, which)
        return [feats[i:i + self.tiles] for i in range(0, len(feats), self.tiles)]


@dataclass
class PassLog:
    """Backbone passes of an --auto run: (geometry spec, images) per pass."""

    passes: list[tuple[str, int]] = field(default_factory=list)


def extract_geometry(graph, cfg: ExportConfig, fit_paths: list, hold: list[np.ndarray],
                     defects: list[np.ndarray], log: PassLog, spec: str) -> GeometryFeatures:
    """One backbone pass over the training files, the held-out frames and the defect frames."""
    t, judged = cfg.tiling.count, list(hold) + list(defects)
    run = dict(progress=cfg.progress, desc=f"features {spec}", tiling=cfg.tiling)
    if cfg.orientations == "fixed":  # one backbone pass over everything
        feats = extract_features(graph, list(fit_paths) + judged, cfg.preprocess, **run)
        fit, feats = feats[:len(fit_paths) * t], feats[len(fit_paths) * t:]
    else:  # the training images turned; the judged frames as the Pi scores a frame, as they are
        fit = extract_features(graph, list(fit_paths), cfg.preprocess, orientations=cfg.orientations, **run)
        feats = extract_features(graph, judged, cfg.preprocess, **run) if judged else fit[:0]
    log.passes.append((spec, len(fit_paths) + len(judged)))
    return GeometryFeatures(fit, feats[:len(hold) * t], feats[len(hold) * t:], t)


def fit_banks(cfg: ExportConfig, fit: np.ndarray) -> list[np.ndarray]:
    """The export's banks (one shared, or one per tile position) from the training features."""
    groups = tile_groups(fit, cfg.tiling)
    cap = None if cfg.coreset_max is None else -(-cfg.coreset_max // len(groups))
    return [fit_patchcore(f, bank_share(cfg.coreset, cfg.orientations), cfg.proj_dim, cfg.seed, max_size=cap).bank for _, f in groups]


def frame_scores(cfgs: list[ExportConfig], banks: list[np.ndarray], frames: list[np.ndarray]) -> np.ndarray:
    """(candidates, frames) image scores of candidates sharing ``banks``: each frame's patches are
    searched once; every candidate's image score rule is applied to the same distances."""
    first = cfgs[0]
    searches = [PatchCoreBank(b, num_neighbors=first.num_neighbors, backend="exact") for b in banks]
    scorer = PatchCoreScorer(searches, first.preprocess.input_size, first.map_sigma)
    out = np.empty((len(cfgs), len(frames)))
    for j, feats in enumerate(frames):
        tiles = scorer.tile_patches(feats)
        dists = np.concatenate([t[1].reshape(-1) for t in tiles])
        for i, cfg in enumerate(cfgs):
            if cfg.image_score == "topk_mean":
                out[i, j] = topk_mean(dists, cfg.topk)
            else:  # the reweighted maximum with the candidate's b
                out[i, j] = max(_reweighted(t[0], cfg.num_neighbors, *t[1:]) for t in tiles)
    return out


def _reweighted(bank: PatchCoreBank, b: int, dist: np.ndarray, idx: np.ndarray, patches: np.ndarray) -> float:
    own = bank.num_neighbors
    bank.num_neighbors = max(1, min(int(b), bank.bank_rows))
    try:
        return bank.image_score(dist, idx, patches)
    finally:
        bank.num_neighbors = own


def judge_geometry(cfgs: list[ExportConfig], feats: GeometryFeatures) -> list[dict]:
    """Proxy AUROC (held-out goods against the defect frames) of each candidate of one geometry,
    banks fitted once per distinct bank setting."""
    labels = np.r_[np.zeros(len(feats.hold) // feats.tiles), np.ones(len(feats.defects) // feats.tiles)]
    frames = feats.frames("hold") + feats.frames("defects")
    results: list[dict | None] = [None] * len(cfgs)
    if cfgs[0].method == "padim":  # one Gaussian per position (and tile group): nothing to vary after the features
        cfg = cfgs[0]  # the export's Gaussians (one shared, or one per tile position)
        scorer = padim_scorer([f for _, f in tile_groups(feats.fit, cfg.tiling)], cfg.preprocess.input_size,
                              cfg.map_sigma, cfg.padim_dtype)
        row = np.array([scorer.score(f.astype(np.float32)).score for f in frames])
        positions = int(sum(g.mean.shape[0] for g in scorer.gaussians))
        return [{"auroc": auroc(labels, row), "bank_rows": positions, "good_scores": row[labels == 0],
                 "defect_scores": row[labels == 1]} for _ in cfgs]
    for key in dict.fromkeys(bank_key(c) for c in cfgs):
        members = [i for i, c in enumerate(cfgs) if bank_key(c) == key]
        banks = fit_banks(cfgs[members[0]], feats.fit)
        scores = frame_scores([cfgs[i] for i in members], banks, frames)
        for row, i in zip(scores, members):
            results[i] = {"auroc": auroc(labels, row), "bank_rows": int(sum(len(b) for b in banks)),
                          "good_scores": row[labels == 0], "defect_scores": row[labels == 1]}
    return results
