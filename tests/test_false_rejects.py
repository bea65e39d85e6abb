"""The threshold for a target false-reject rate, from out-of-fold scores of good images."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from edgead.cli import main as cli_main
from edgead.false_rejects import binomial_upper_bound, estimate_at, fold_of, threshold_for_frr
from edgead.manifest import parse_manifest


def test_threshold_leaves_the_target_share_above_it():
    scores = np.arange(1, 1000, dtype=float)  # 999 distinct good scores
    est = threshold_for_frr(np.random.default_rng(0).permutation(scores), target_frr=0.01)
    # conformal: (m + 1) / (n + 1) <= 0.01 with n = 999 -> m = 9 scores above
    assert est.rejected == 9 and est.threshold == 990.0
    assert est.expected_frr == pytest.approx(10 / 1000)
    assert est.good_images == 999 and est.target_frr == 0.01
    assert est.rejected / est.good_images <= est.expected_frr <= est.frr_upper


def test_few_images_fall_back_to_their_maximum_and_say_so():
    est = threshold_for_frr([0.3, 0.1, 0.2, 0.5, 0.4], target_frr=0.01)
    assert est.threshold == 0.5 and est.rejected == 0
    assert est.expected_frr == pytest.approx(1 / 6)  # five goods cannot promise 1 %
    assert est.frr_upper == pytest.approx(1 - 0.05 ** (1 / 5))  # zero of five: 1 - alpha^(1/n)


def test_ties_at_the_threshold_are_accepted():
    est = estimate_at([1.0, 2.0, 2.0, 3.0], threshold=2.0)
    assert est.rejected == 1


@pytest.mark.parametrize("k,n", [(0, 50), (3, 200), (12, 500), (49, 50)])
def test_clopper_pearson_matches_scipy(k, n):
    expected = stats.beta.ppf(0.95, k + 1, n - k)
    assert binomial_upper_bound(k, n, 0.95) == pytest.approx(expected, rel=1e-6)


def test_realised_rate_on_new_goods_is_near_the_target():
    """Scores of new goods drawn like the calibration goods are rejected at about the target rate."""
    rng = np.random.default_rng(1)
    rates = []
    for _ in range(200):
        est = threshold_for_frr(rng.gamma(4.0, size=400), target_frr=0.02)
        rates.append(np.mean(rng.gamma(4.0, size=2000) > est.threshold))
    assert abs(np.mean(rates) - 0.02) < 0.004


def test_contiguous_folds_are_runs_in_name_order():
    f = fold_of(10, 3)
    assert f.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError):
        fold_of(10, 3, order="shuffled")


def test_random_folds_are_balanced_and_seeded():
    f = fold_of(23, 5, seed=3, order="random")
    assert sorted(np.bincount(f)) == [4, 4, 5, 5, 5]
    assert np.array_equal(f, fold_of(23, 5, seed=3, order="random"))
    assert not np.array_equal(f, fold_of(23, 5, seed=4, order="random"))
    with pytest.raises(ValueError):
        fold_of(3, 5)


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        threshold_for_frr([], 0.01)
    with pytest.raises(ValueError):
        threshold_for_frr([1.0, math.nan], 0.01)
    with pytest.raises(ValueError):
        threshold_for_frr([1.0, 2.0], 1.5)


# -- through the export -----------------------------------------------------------------------
def test_export_stores_the_estimate_it_set_the_threshold_by(model_dir):
    m = json.loads((model_dir / "manifest.json").read_text())
    assert m["export"]["target_frr"] == 0.01 and "false-reject rate 0.01" in m["threshold_rule"]
    precision = m["default_precision"]
    assert set(m["false_rejects"]) == {precision}  # the other precision keeps the held-out rule
    fr = m["false_rejects"][precision]
    # every good image: 25 training images out of fold + 5 held out
    assert fr["good_images"] == m["training_images"] + m["holdout_images"] == 30
    assert fr["threshold"] == m["thresholds"][precision] == m["threshold"]
    assert fr["folds"] == 5 and fr["fold_order"] == "contiguous" and fr["expected_frr"] == pytest.approx((fr["rejected"] + 1) / 31)
    assert parse_manifest(m).false_rejects[precision].frr_upper == fr["frr_upper"]


def test_out_of_fold_scores_are_not_in_sample(model_dir, synth_root):
    """A training image scored with its own fold left out scores above its in-sample score."""
    from edgead.images import list_images, read_image
    from edgead.model import InspectionModel
    from edgead.fit.oof import FoldSource, out_of_fold_scores
    from edgead.bank.store import load_bank

    model = InspectionModel(model_dir, precision="fp32", search="exact")
    paths = list_images(synth_root / "train" / "good")[:6]
    in_sample = np.array([model.score_features(model.features(read_image(p))[0],
                                               with_map=False)[0] for p in paths])
    bank, _ = load_bank(model_dir, model.manifest.files, "", dequantize=True)
    # pretend the first 6 images gave every row: leaving a fold out removes its rows
    rows = np.arange(len(bank)) % 6
    oof = out_of_fold_scores(model, paths, [FoldSource(bank=bank, row_image=rows)], np.arange(6) % 3)
    assert np.all(oof >= in_sample - 1e-6) and np.any(oof > in_sample + 1e-6)
    assert model.scorer.banks[0].bank_rows == len(bank)  # the model's own scorer is back


def test_info_prints_the_expected_rate(model_dir, capsys):
    assert cli_main(["info", str(model_dir)]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("false_rejects"))
    assert "expected" in line and "out-of-sample good images" in line and "of 30" in line


def test_older_manifests_without_the_estimate_still_load(model_dir):
    m = json.loads((model_dir / "manifest.json").read_text())
    m.pop("false_rejects")
    assert parse_manifest(m).false_rejects is None


def test_target_frr_option_zero_means_the_held_out_rule(tmp_path):
    pytest.importorskip("torch")
    from edgead.errors import ConfigError
    from edgead_export.config import ExportConfig, to_args

    base = ExportConfig(data=tmp_path, out=tmp_path / "m")
    assert base.target_frr == 0.01 and base.fold_order == "contiguous"
    off = base.with_text({"target_frr": "0"})  # the text syntax: 0 turns it off
    assert off.target_frr is None and to_args(off)[-2:] == ["--target-frr", "0"]
    assert base.with_spec("target_frr=0.05").target_frr == 0.05
    with pytest.raises(ConfigError, match="target-frr"):
        base.with_text({"target_frr": "1.5"})
