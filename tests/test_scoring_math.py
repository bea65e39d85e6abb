"""Scoring formulas against hand computations and scipy."""

from __future__ import annotations

import numpy as np
import pytest

from edgead.metrics_math import auroc, f1_optimal_threshold
from edgead.scorer.padim import mahalanobis_map
from edgead.scorer.patchcore_bank import PatchCoreBank, softmax_reweight


def test_softmax_reweight_hand_computed():
    # distances of m_test* to N_b(m*) = [m*, n1, n2] = [1, 2, 3]
    # softmax(d)[0] = e^1 / (e^1 + e^2 + e^3) = 0.09003057...
    assert softmax_reweight([1.0, 2.0, 3.0]) == pytest.approx(1 - 0.0900305732, abs=1e-9)
    # equal distances: weight 1 - 1/b
    assert softmax_reweight([2.0] * 9) == pytest.approx(1 - 1 / 9)


def test_patchcore_image_score_hand_computed():
    # 1-D bank: 0, 1, 3 ; test patches: 0.1 and 5.0 (the anomalous one)
    bank = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
    scorer = PatchCoreBank(bank, num_neighbors=2, backend="exact")
    feats = np.array([0.1, 5.0], dtype=np.float32).reshape(1, 1, 2)  # (D, h, w)
    dist, idx, patches = scorer.patch_scores(feats)
    np.testing.assert_allclose(dist.ravel(), [0.1, 2.0], atol=1e-6)
    # m* = 3 (bank row 2); its 2 nearest bank rows: itself (3) and 1 -> distances from 5: [2, 4]
    expected = (1 - np.exp(2) / (np.exp(2) + np.exp(4))) * 2.0
    assert scorer.image_score(dist, idx, patches) == pytest.approx(expected, rel=1e-6)
    # with b = 1 the score is the plain max distance
    plain = PatchCoreBank(bank, num_neighbors=1, backend="exact")
    assert plain.image_score(*plain.patch_scores(feats)) == pytest.approx(2.0, rel=1e-6)



@pytest.mark.parametrize("backend", ["exact", "int8"])
def test_reweighting_ranks_a_defect_above_a_farther_common_patch(backend):
    """Normal variation that is common in training (a dense cluster of bank rows) versus a
    defect next to a rare bank row: the plain maximum distance ranks the good frame higher,
    the reweighted score (the paper's eq. 7, b = 9) ranks the defect higher."""
    rng = np.random.default_rng(0)
    dense = np.zeros((40, 8))
    dense[:, 1] = np.linspace(0.0, 0.4, 40)  # the common appearance, densely sampled
    rare = np.zeros((4, 8))
    rare[:, 0] = [10.0, 18.0, 26.0, 34.0]  # rare appearances, far from each other
    bank = (np.concatenate([dense, rare]) + rng.normal(0, 1e-3, (44, 8))).astype(np.float32)

    def frame(worst):  # 3x3 patches: eight like the common appearance, one ``worst``
        patches = np.repeat(bank[:1], 9, axis=0) + rng.normal(0, 1e-3, (9, 8)).astype(np.float32)
        patches[4] = worst
        return np.ascontiguousarray(patches.T.reshape(8, 3, 3))

    good = frame(np.array([-3.0, 0.2, 0, 0, 0, 0, 0, 0], np.float32))  # 3.0 from the dense cluster
    defect = frame(np.array([10.0, 2.8, 0, 0, 0, 0, 0, 0], np.float32))  # 2.8 from a rare row
    plain = PatchCoreBank(bank, num_neighbors=1, backend=backend)
    reweighted = PatchCoreBank(bank, num_neighbors=9, backend=backend)

    def score(scorer, feats):
        return scorer.image_score(*scorer.patch_scores(feats))

    assert score(plain, good) > score(plain, defect)  # the maximum alone gets it wrong
    assert score(reweighted, good) < score(reweighted, defect)
    assert score(reweighted, good) == pytest.approx(3.0 * (1 - 1 / 9), rel=1e-2)  # nine near-equal neighbours
    assert score(reweighted, defect) == pytest.approx(2.8, rel=1e-2)  # its neighbours are far: weight ~1

def test_padim_mahalanobis_matches_scipy():
    from scipy.spatial.distance import mahalanobis

    rng = np.random.default_rng(0)
    d, h, w = 6, 3, 4
    feats = rng.normal(size=(d, h, w)).astype(np.float32)
    mean = rng.normal(size=(h * w, d)).astype(np.float32)
    a = rng.normal(size=(h * w, d, d))
    precision = np.linalg.inv(a @ a.transpose(0, 2, 1) + 0.01 * np.eye(d)).astype(np.float32)
    got = mahalanobis_map(feats, mean, precision)
    x = feats.reshape(d, -1).T
    want = np.array([mahalanobis(x[p], mean[p], precision[p]) for p in range(h * w)]).reshape(h, w)
    np.testing.assert_allclose(got, want, rtol=1e-3)


def test_padim_fit_matches_numpy_cov():
    pytest.importorskip("torch")
    from edgead_export.fit import fit_padim

    rng = np.random.default_rng(1)
    feats = rng.normal(size=(40, 5, 2, 3)).astype(np.float32)
    mean, precision = fit_padim(feats, dtype="float32")
    x = feats[:, :, 1, 2]  # position (1, 2) -> index 5
    cov = np.cov(x, rowvar=False) + 0.01 * np.eye(5)
    np.testing.assert_allclose(mean[5], x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(precision[5], np.linalg.inv(cov), rtol=1e-3, atol=1e-4)


def test_auroc_and_f1():
    labels = np.array([0, 0, 0, 1, 1])
    assert auroc(labels, np.array([0.1, 0.2, 0.3, 0.4, 0.5])) == 1.0
    assert auroc(labels, np.array([0.5, 0.4, 0.3, 0.2, 0.1])) == 0.0
    assert auroc(labels, np.array([1, 1, 1, 1, 1])) == 0.5
    # one negative above one positive: 5/6
    assert auroc(labels, np.array([0.1, 0.2, 0.45, 0.4, 0.5])) == pytest.approx(5 / 6)
    thr, f1 = f1_optimal_threshold(labels, np.array([0.1, 0.2, 0.3, 0.4, 0.5]))
    assert f1 == 1.0 and 0.3 < thr < 0.4


def test_spearman_and_threshold_rule():
    pytest.importorskip("torch")  # edgead_export: workstation side
    from edgead_export.parity_stats import spearman, threshold_from_good

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    s = np.array([1.0, 1.1, 0.9, 1.0, 1.05])
    assert threshold_from_good(s) == pytest.approx(s.mean() + 3 * s.std(ddof=1))
    outlier = np.array([1.0, 1.0, 1.0, 1.0, 5.0])
    assert threshold_from_good(outlier) >= 5.0


def test_paired_auroc_drop_se():
    pytest.importorskip("torch")  # edgead_export: workstation side
    from edgead_export.parity_stats import paired_auroc_drop_se

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(30), np.ones(30)]
    ref = np.r_[rng.normal(0, 1, 30), rng.normal(1.5, 1, 30)]
    assert paired_auroc_drop_se(labels, ref, ref) == 0.0  # identical scores: no uncertainty
    noisy = ref + rng.normal(0, 0.5, 60)
    se = paired_auroc_drop_se(labels, ref, noisy)
    assert 0.0 < se < 0.1
