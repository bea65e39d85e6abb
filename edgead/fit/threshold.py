"""The threshold from held-out scores, and which good images are held out for it: one rule for
the workstation's export and the Pi's teach.

``choose_threshold`` takes scores, however they were obtained (held-out images today; the
export may pass out-of-fold scores instead): the rule does not care where they came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import numpy as np

from edgead.errors import EdgeadError
from edgead.metrics_math import f1_optimal_threshold

T = TypeVar("T", Path, str)

RULE_GOOD = "max(held-out good max, mean + 3 std) of held-out good scores"
RULE_F1 = "F1-optimal on held-out good + --val-defects images"


def threshold_from_good(scores: np.ndarray, sigmas: float = 3.0) -> float:
    """Threshold from good images only: mean + 3 std of the held-out good scores, and never
    below their maximum (no held-out good image is rejected)."""
    s = np.asarray(scores, dtype=np.float64)
    return float(max(s.max(), s.mean() + sigmas * s.std(ddof=1 if len(s) > 1 else 0)))


def choose_threshold(good: np.ndarray, defects: np.ndarray | None = None) -> tuple[float, str]:
    """(threshold, rule): F1-optimal when defect scores are given, else from the good scores."""
    good = np.asarray(good, dtype=np.float64)
    bad = np.asarray(defects if defects is not None else [], dtype=np.float64)
    if bad.size:
        labels = np.r_[np.zeros(len(good)), np.ones(len(bad))]
        return f1_optimal_threshold(labels, np.r_[good, bad])[0], RULE_F1
    return threshold_from_good(good), RULE_GOOD


def split_holdout(paths: list[T], share: float, minimum: int, seed: int) -> tuple[list[T], list[T]]:
    """Seeded split of the good images into (fit, held-out)."""
    n_hold = max(minimum, int(round(share * len(paths))))
    if len(paths) - n_hold < 2:
        raise EdgeadError(
            f"{len(paths)} good images: need at least {n_hold + 2} ({n_hold} are held out to calibrate the threshold)"
        )
    order = np.random.default_rng(seed).permutation(len(paths))
    hold = sorted(order[:n_hold])
    fit = sorted(order[n_hold:])
    return [paths[i] for i in fit], [paths[i] for i in hold]
