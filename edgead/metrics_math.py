"""Detection metrics in plain numpy: AUROC, F1, confusion counts, rank correlation."""

from __future__ import annotations

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties share their mean rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(x)]))
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U), ties counted half. labels: 1 = anomalous."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _ranks(scores)
    return float((r[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) over descending thresholds."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    tp = np.concatenate(([0], np.cumsum(labels[order])))
    fp = np.concatenate(([0], np.cumsum(~labels[order])))
    return fp / max(1, fp[-1]), tp / max(1, tp[-1])


def confusion(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Counts with 'anomalous' = score > threshold."""
    labels = np.asarray(labels).astype(bool)
    pred = np.asarray(scores) > threshold
    tp = int((pred & labels).sum())
    fp = int((pred & ~labels).sum())
    fn = int((~pred & labels).sum())
    tn = int((~pred & ~labels).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision, "recall": recall, "f1": f1}


def f1_optimal_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1; the threshold sits midway between adjacent scores."""
    s = np.unique(np.asarray(scores, dtype=np.float64))
    candidates = np.concatenate(((s[:-1] + s[1:]) / 2.0, [s[0] - 1e-9])) if len(s) > 1 else s - 1e-9
    best = max(((confusion(labels, scores, t)["f1"], t) for t in candidates), key=lambda x: x[0])
    return float(best[1]), float(best[0])
