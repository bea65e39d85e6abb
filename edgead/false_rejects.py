"""A threshold from good images for a target false-reject rate, with the rate it will reject at.

Every good image gets an out-of-sample score (scored by a model that did not see it: k-fold
out-of-fold scores, or held-out images).  The threshold is the order statistic that leaves at
most ``target_frr`` of those scores above it; a new good part, exchangeable with them, is then
rejected with probability ``(m + 1) / (n + 1)`` when ``m`` of the ``n`` scores lie above it
(the split-conformal rate), and the one-sided Clopper-Pearson bound on ``m`` of ``n`` says how
large the rate can be at the stated confidence.

numpy and the standard library only: the Pi (which has no torch and no scipy) recalibrates with
the same functions when it is taught new good parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_TARGET_FRR = 0.01
DEFAULT_CONFIDENCE = 0.95
DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class FalseRejectEstimate:
    """A threshold and the false-reject rate it is expected to give on new good parts."""

    threshold: float
    target_frr: float
    good_images: int       # out-of-sample good scores the threshold rests on
    rejected: int          # of them, scored above the threshold
    expected_frr: float    # (rejected + 1) / (good_images + 1)
    frr_upper: float       # one-sided Clopper-Pearson bound on the rate at ``confidence``
    confidence: float

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def fold_of(n: int, folds: int, seed: int = 0, order: str = "contiguous") -> np.ndarray:
    """Fold number (0 .. folds-1) of each of ``n`` items, folds as equal as they go.

    ``contiguous``: runs of neighbouring items (in name order, which for a camera's files is
    time order: a fold then stands for a later batch, a new spot, a drifted light, and the
    threshold allows for the change a new part brings); ``random``: seeded random folds (the
    images exchangeable, the classic k-fold)."""
    if folds < 2:
        raise ValueError(f"folds {folds}: expected 2 or more")
    if n < folds:
        raise ValueError(f"{n} images cannot be split into {folds} folds")
    if order == "contiguous":
        return np.arange(n, dtype=np.int64) * folds // n
    if order != "random":
        raise ValueError(f"fold order {order!r}: expected contiguous or random")
    out = np.empty(n, dtype=np.int64)
    out[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return out


def binomial_upper_bound(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound on a rate after ``k`` events in ``n`` trials: the p
    at which seeing ``k`` or fewer has probability ``1 - confidence``."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"{k} events in {n} trials")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence}: expected a share in (0, 1)")
    if k == n:
        return 1.0
    alpha = 1.0 - confidence
    lo, hi = k / n, 1.0
    for _ in range(60):  # bisection: binomial_cdf(k; n, p) falls as p grows
        mid = (lo + hi) / 2
        if _binomial_cdf(k, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def _binomial_cdf(k: int, n: int, p: float) -> float:
    if p <= 0:
        return 1.0
    if p >= 1:
        return 0.0 if k < n else 1.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def threshold_for_frr(good_scores, target_frr: float = DEFAULT_TARGET_FRR,
                      confidence: float = DEFAULT_CONFIDENCE) -> FalseRejectEstimate:
    """The threshold that rejects at most ``target_frr`` of ``good_scores`` (out-of-sample scores
    of good images; a part is rejected when its score is above the threshold), and the rate to
    expect from it on new good parts."""
    s = np.sort(np.asarray(good_scores, dtype=np.float64).ravel())
    if s.size == 0 or not np.all(np.isfinite(s)):
        raise ValueError("expected one or more finite good scores")
    if not 0 < target_frr < 1:
        raise ValueError(f"target false-reject rate {target_frr}: expected a share in (0, 1)")
    n = s.size
    # the conformal rate (m + 1) / (n + 1) <= target: at most m scores may lie above
    allowed = max(0, math.floor(target_frr * (n + 1)) - 1)
    return estimate_at(s, float(s[n - 1 - min(allowed, n - 1)]), target_frr, confidence)


def estimate_at(good_scores, threshold: float, target_frr: float = DEFAULT_TARGET_FRR,
                confidence: float = DEFAULT_CONFIDENCE) -> FalseRejectEstimate:
    """The false-reject rate to expect at ``threshold`` (set by any rule) from out-of-sample
    good scores."""
    s = np.asarray(good_scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("expected one or more good scores")
    n = int(s.size)
    rejected = int(np.count_nonzero(s > threshold))  # ties at the threshold are accepted
    return FalseRejectEstimate(
        threshold=float(threshold), target_frr=float(target_frr), good_images=n, rejected=rejected,
        expected_frr=(rejected + 1) / (n + 1), frr_upper=binomial_upper_bound(rejected, n, confidence),
        confidence=float(confidence),
    )
