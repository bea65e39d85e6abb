"""INT8 against FP32 on the parity images, at the level of the patches that decide the score.

The image score is the mean of the k largest patch distances, so what INT8 must keep is the
distance of those patches; the statistics here compare both precisions there, per kind of parity
image (held-out goods, large pseudo-defects, small pseudo-defects at the scale of real ones)."""

from __future__ import annotations

import numpy as np

from edgead.metrics_math import auroc
from edgead_export.parity_stats import spearman

GOOD, LARGE, SMALL = 0, 1, 2


def top_patches(dist: np.ndarray, k: int) -> np.ndarray:
    """(N, P) patch distances -> (N, k) indices of each image's k largest."""
    k = min(k, dist.shape[1])
    return np.argpartition(dist, dist.shape[1] - k, axis=1)[:, -k:]


def parity_statistics(kind: np.ndarray, f32: np.ndarray | None, f8: np.ndarray | None,
                      d32: np.ndarray, d8: np.ndarray, k: int) -> dict:
    """``kind`` (N,) GOOD / LARGE / SMALL; ``f32``/``f8`` (N, D, h, w) patch features or None;
    ``d32``/``d8`` (N, P) patch distances to the bank. Returns the statistics the gate may use."""
    kind = np.asarray(kind)
    top = top_patches(d32, k)
    t32, t8 = np.take_along_axis(d32, top, 1), np.take_along_axis(d8, top, 1)
    s32, s8 = np.sort(d32, 1)[:, -k:].mean(1), np.sort(d8, 1)[:, -k:].mean(1)
    out: dict = {}
    # relative error of the distances of the patches that decide the score (FP32's top k)
    out["top_distance_error"] = float(np.mean(np.abs(t8 - t32) / np.maximum(t32, 1e-12)))
    out["score_error"] = float(np.mean(np.abs(s8 - s32) / np.maximum(s32, 1e-12)))
    good = kind == GOOD
    # INT8's score noise against the spread of the good scores it must not reorder
    out["score_noise_vs_good_spread"] = float(np.std(s8[good] - s32[good]) / max(np.std(s32[good]), 1e-12))
    ours = top_patches(d8, k)
    out["top_patch_agreement"] = float(np.mean([len(np.intersect1d(a, b)) / top.shape[1] for a, b in zip(top, ours)]))
    if f32 is not None and f8 is not None:
        a = f32.reshape(f32.shape[0], f32.shape[1], -1)
        b = f8.reshape(a.shape)
        err = np.linalg.norm(b - a, axis=1) / np.maximum(np.linalg.norm(a, axis=1), 1e-12)
        out["feature_error"] = float(err.mean())
        out["top_feature_error"] = float(np.take_along_axis(err, top, 1).mean())
    for name, which in (("large", LARGE), ("small", SMALL)):
        sel = good | (kind == which)
        if (kind == which).any():
            lab = (kind[sel] == which).astype(int)
            out[f"auroc_drop_{name}"] = float(auroc(lab, s32[sel]) - auroc(lab, s8[sel]))
            gap32 = np.median(s32[kind == which]) - np.median(s32[good])
            gap8 = np.median(s8[kind == which]) - np.median(s8[good])
            out[f"contrast_kept_{name}"] = float(gap8 / gap32) if gap32 > 0 else float("nan")
    sel = kind != SMALL
    out["spearman"] = spearman(s32[sel], s8[sel])
    out["spearman_all"] = spearman(s32, s8)
    return out
