"""The INT8 parity gate: it must refuse an INT8 graph that blurs the patches deciding the score,
even when the image-level checks (rank correlation, AUROC on easy pseudo-defects) pass."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgead.artifact import sha256_file
from edgead.images import read_image
from edgead.model import InspectionModel

pytest.importorskip("torch")  # the export's INT8 gate: workstation side (a Pi runs the rest of the suite)
from edgead_export.parity_check import (  # noqa: E402
    GOOD,
    INT8_MAX_TOP_ERROR,
    LARGE,
    SMALL,
    ScoredFrames,
    judge_int8,
    parity_set,
    score_frames,
)


def _frames(rng: np.random.Generator, n_good: int = 20, patches: int = 100):
    """Patch scores of goods and pseudo-defects: each defect lifts 5 patches far above the rest."""
    kind = np.repeat([GOOD, LARGE, SMALL], [n_good, 2 * n_good, 2 * n_good])
    d = rng.uniform(1.0, 2.0, (len(kind), patches))
    for i in np.flatnonzero(kind != GOOD):
        d[i, rng.choice(patches, 5, replace=False)] += 3.0 if kind[i] == LARGE else 1.5
    return kind, d


def _scored(d: np.ndarray, k: int) -> ScoredFrames:
    return ScoredFrames(np.sort(d, 1)[:, -k:].mean(1), d)


def test_judge_passes_faithful_int8_and_refuses_blurred_top_patches():
    rng = np.random.default_rng(0)
    kind, d = _frames(rng)
    k = 5
    fp32 = _scored(d, k)
    faithful = judge_int8(kind, fp32, _scored(d * (1 + rng.normal(0, 0.002, d.shape)), k), k, seed=0)
    assert faithful["int8_ok"], faithful["failed"]
    # INT8 that pulls the largest patch scores of every frame down by a random 0-8 %, the rest untouched:
    # the image ranks (and the AUROC on pseudo-defects that stand far out) survive, the top patches do not
    blurred = d.copy()
    top = np.argsort(d, 1)[:, -k:]
    np.put_along_axis(blurred, top, np.take_along_axis(d, top, 1) * (1 - rng.uniform(0, 0.08, top.shape)), 1)
    report = judge_int8(kind, fp32, _scored(blurred, k), k, seed=0)
    assert report["int8_vs_fp32_spearman"] >= 0.98 and report["auroc_drop"] <= 0.005  # the image checks pass
    assert report["top_distance_error"] > INT8_MAX_TOP_ERROR
    assert not report["int8_ok"] and any("patch score error" in f for f in report["failed"])


def _replace_int8(model_dir: Path, onnx_path: Path, out: Path) -> Path:
    """A copy of ``model_dir`` serving ``onnx_path`` as its INT8 backbone (manifest checksum updated)."""
    shutil.copytree(model_dir, out)
    shutil.copyfile(onnx_path, out / "backbone.int8.onnx")
    m = json.loads((out / "manifest.json").read_text())
    m["files"]["backbone.int8.onnx"] = {"sha256": sha256_file(out / "backbone.int8.onnx"),
                                        "bytes": (out / "backbone.int8.onnx").stat().st_size}
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def test_gate_refuses_a_damaged_int8_graph(model_dir, synth_root, tmp_path):
    """A percentile-99 calibration clips the activations where defects show (on real sets it cost
    7.5 pt image AUROC): the gate must refuse that graph and accept the one the export shipped."""
    pytest.importorskip("torch")
    from edgead_export.extract import load_batches
    from edgead_export.onnx_export import quantize_int8

    m = json.loads((model_dir / "manifest.json").read_text())
    pre = InspectionModel(model_dir, precision="fp32").preprocess_cfg
    train = sorted((synth_root / "train" / "good").glob("*.png"))
    calib = list(load_batches(train[:16], pre, batch_size=1))
    quantize_int8(model_dir / "backbone.onnx", tmp_path / "clipped.onnx", calib, method="percentile", percentile=99.0)
    damaged = _replace_int8(model_dir, tmp_path / "clipped.onnx", tmp_path / "damaged")

    hold = [read_image(p) for p in sorted((synth_root / "test" / "good").glob("*.png"))]
    frames, kind = parity_set(hold, [], pre, seed=0)
    k = 10
    fp32 = score_frames(InspectionModel(model_dir, precision="fp32", search="exact"), frames)
    shipped = judge_int8(kind, fp32, score_frames(InspectionModel(model_dir, precision="int8", search="exact"), frames),
                         k, seed=0)
    broken = judge_int8(kind, fp32, score_frames(InspectionModel(damaged, precision="int8", search="exact"), frames),
                        k, seed=0)
    assert m["parity"]["top_patches"] > 0 and "top_distance_error" in m["parity"]  # the verdict's evidence is stored
    assert broken["top_distance_error"] > max(INT8_MAX_TOP_ERROR, 2 * shipped["top_distance_error"])
    assert not broken["int8_ok"] and any("patch score error" in f for f in broken["failed"])


def test_predicted_drop_refuses_score_noise_the_easy_defects_hide():
    """INT8 noise of 0.4 good-score sd on every image: large pseudo-defects stand too far out to
    lose AUROC, but defects near the goods would (binormal bound about 1.9 pt): refused."""
    from edgead_export.parity_check import max_auroc_drop

    assert max_auroc_drop(0.0) == 0.0 and max_auroc_drop(0.1) < max_auroc_drop(0.2) < 0.005 < max_auroc_drop(0.3)
    assert max_auroc_drop(0.1) == pytest.approx(0.12 * 0.1**2, rel=0.05)
    rng = np.random.default_rng(1)
    kind, d = _frames(rng)
    k = 5
    fp32 = _scored(d, k)
    sd = fp32.scores[kind == GOOD].std()
    noisy = ScoredFrames(fp32.scores + rng.normal(0, 0.4 * sd, len(kind)), d)
    report = judge_int8(kind, fp32, noisy, k, seed=0)
    assert report["auroc_drop"] <= 0.005 and report["top_distance_error"] == 0.0
    assert report["predicted_max_auroc_drop"] > 0.005
    assert not report["int8_ok"] and any("score noise" in f for f in report["failed"])


@pytest.mark.parametrize("fixture", ["model_dir", "topk_int8_model_dir", "padim_model_dir"])
def test_score_frames_searches_once_and_scores_as_the_runtime(fixture, synth_root, request, monkeypatch):
    """The parity check's image and patch scores come from one search per frame (PatchCore) and
    equal, bit for bit, the runtime's score and patch scores computed separately."""
    model = InspectionModel(request.getfixturevalue(fixture), search="exact")
    frames = [read_image(p) for p in sorted((synth_root / "test").glob("*/*.png"))[::4]]
    expected = [(model.score_features(f := model.features(x)[0], with_map=False)[0], model.scorer.patch_scores(f))
                for x in frames]
    searches = []
    if model.scorer.method == "patchcore":
        real = model.scorer.tile_patches
        monkeypatch.setattr(model.scorer, "tile_patches", lambda feats: searches.append(1) or real(feats))
    got = score_frames(model, frames)
    np.testing.assert_array_equal(got.scores, [s for s, _ in expected])
    np.testing.assert_array_equal(got.patches, np.stack([p.reshape(-1) for _, p in expected]))
    if model.scorer.method == "patchcore":
        assert len(searches) == len(frames)
