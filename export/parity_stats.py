"""Statistics the export uses to judge INT8 against FP32 and to set a threshold from good
images: rank correlation, a bootstrap error of an AUROC drop, the good-image threshold."""

from __future__ import annotations

import numpy as np

from edgead.fit.threshold import threshold_from_good  # noqa: F401  (imported from here too)
from edgead.metrics_math import _ranks, auroc


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation."""
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def paired_auroc_drop_se(labels: np.ndarray, ref: np.ndarray, other: np.ndarray,
                         n_boot: int = 200, seed: int = 0) -> float:
    """Bootstrap standard error of auroc(ref) - auroc(other), images resampled jointly."""
    labels, ref, other = np.asarray(labels), np.asarray(ref), np.asarray(other)
    rng = np.random.default_rng(seed)
    drops = []
    for _ in range(n_boot):
        i = rng.integers(0, len(labels), len(labels))
        if labels[i].min() == labels[i].max():
            continue
        drops.append(auroc(labels[i], ref[i]) - auroc(labels[i], other[i]))
    return float(np.std(drops, ddof=1)) if len(drops) > 1 else 0.0
