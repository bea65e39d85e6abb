"""Out-of-fold scores of the training images: each image scored by a model that did not see it.

The images are split into k folds; a fold's images are scored through the exported backbone
(the precision being calibrated) against a scorer that leaves the fold out.  PatchCore: the
rows of the exported memory bank that came from the other folds' images (the bank as the
runtime loads it; no coreset is refitted, so a fold's own patches are simply missing, as a new
part's are); PaDiM: Gaussians refitted on the other folds.  With hundreds of such scores the
threshold can be set for a false-reject rate (:mod:`edgead.false_rejects`) instead of resting
on a few dozen held-out images.  numpy only: the export and the Pi's teach calibrate with it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgead.false_rejects import (
    FalseRejectEstimate,
    estimate_at,
    fold_of,
    threshold_for_frr,
)
from edgead.fit.scorers import padim_scorer
from edgead.images import read_image
from edgead.model import InspectionModel
from edgead.scorer.patchcore import PatchCoreScorer
from edgead.scorer.patchcore_bank import PatchCoreBank


@dataclass
class FoldSource:
    """What a left-out scorer is built from, per bank (one, or one per tile position).

    PatchCore: ``bank`` (rows, D) as the runtime loads it and ``row_image`` (rows,), the
    training image each row came from.  PaDiM: ``features`` (maps, d, h, w) of the training
    images and ``map_image`` (maps,), the image of each map (several per image for a tiled
    model with one shared scorer)."""

    bank: np.ndarray | None = None
    row_image: np.ndarray | None = None
    features: np.ndarray | None = None
    map_image: np.ndarray | None = None


def row_images(indices: np.ndarray, patches_per_map: int, maps_per_image: int) -> np.ndarray:
    """Coreset row indices into the training patches -> the training image of each row (a shared
    bank of a tiled model holds ``maps_per_image`` feature maps per image)."""
    return (np.asarray(indices, dtype=np.int64) // patches_per_map) // maps_per_image


def left_out_scorer(model: InspectionModel, sources: list[FoldSource], image_fold: np.ndarray, fold: int):
    """The model's frame scorer refitted without the images of ``fold`` (one bank or Gaussian per source)."""
    keep = image_fold != fold
    size, sigma = model.manifest.preprocess.input_size, model.manifest.map_sigma
    if sources[0].bank is not None:
        pc = model.manifest.pc
        banks = [PatchCoreBank(src.bank[keep[src.row_image]], num_neighbors=pc.num_neighbors, backend="exact",
                               image_score=pc.image_score.model_dump(exclude_none=True)) for src in sources]
        return PatchCoreScorer(banks, size, sigma)
    dtype = getattr(model.manifest.padim, "precision_dtype", None) or "float16"
    return padim_scorer([src.features[keep[src.map_image]] for src in sources], size, sigma, dtype)


@contextmanager
def scoring_with(model: InspectionModel, scorer):
    """``model`` scores with ``scorer`` inside the block (its own afterwards)."""
    own = model.scorer
    model.scorer = scorer
    try:
        yield model
    finally:
        model.scorer = own


def out_of_fold_scores(model: InspectionModel, paths: list[Path], sources: list[FoldSource],
                       image_fold: np.ndarray) -> np.ndarray:
    """Score of every training image in ``paths`` by ``model`` with its own fold left out."""
    scores = np.empty(len(paths), dtype=np.float64)
    for fold in np.unique(image_fold):
        with scoring_with(model, left_out_scorer(model, sources, image_fold, int(fold))):
            for i in np.flatnonzero(image_fold == fold):
                feats, _, _ = model.features(read_image(paths[i]))
                scores[i] = model.score_features(feats, with_map=False)[0]
    return scores


@dataclass
class FrrCalibration:
    """A precision's threshold for a target false-reject rate, from out-of-sample good scores."""

    estimate: FalseRejectEstimate
    rule: str | None      # None: the threshold was set by another rule (F1 on defects) and kept
    record: dict          # the manifest's ``false_rejects`` entry of the precision


def frr_calibration(model: InspectionModel, fit_paths: list[Path], sources: list[FoldSource],
                    held_out: np.ndarray, precision: str, target_frr: float, folds: int, fold_order: str,
                    seed: int, keep_threshold: float | None = None) -> FrrCalibration:
    """The threshold of ``precision`` (``model``'s) for ``target_frr`` from every good image scored by
    a model that did not see it: the training images out of fold, the held-out ones as they are.
    ``keep_threshold``: a threshold set by another rule, whose expected rate is estimated instead."""
    folds = min(folds, len(fit_paths))
    good = np.r_[out_of_fold_scores(model, fit_paths, sources, fold_of(len(fit_paths), folds, seed, fold_order)),
                 held_out]
    rule = None
    if keep_threshold is not None:
        est = estimate_at(good, keep_threshold, target_frr)
    else:
        est = threshold_for_frr(good, target_frr)
        rule = (f"false-reject rate {target_frr:g} on {len(good)} out-of-sample good scores "
                f"({folds} {fold_order} folds of the training images out of fold + held-out images; "
                f"{'fp32' if precision == 'int8' else 'int8'}: held-out rule)")
    return FrrCalibration(est, rule, {**est.as_dict(), "folds": folds, "fold_order": fold_order})
