"""End to end on synthetic parts: export -> score -> eval, both methods and precisions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgead.cli import main as cli_main
from edgead.errors import ArtifactError
from edgead.model import load_model

REPO = Path(__file__).resolve().parents[1]


def test_manifest_and_files(model_dir):
    m = json.loads((model_dir / "manifest.json").read_text())
    for key in ("schema_version", "edgead_version", "method", "backbone", "preprocess", "feature_dim",
                "bank_size", "threshold", "thresholds", "score_stats", "training_images", "files", "created", "parity"):
        assert key in m, key
    assert m["method"] == "patchcore"
    assert m["backbone"]["name"] == "efficientnet-lite0" and m["backbone"]["tap_channels"] == [40, 112]
    assert m["feature_dim"] == 152
    assert set(m["files"]) >= {"backbone.onnx", "backbone.int8.onnx", "memory.q8.npz"}  # fixture: --keep-fp32
    with np.load(model_dir / "memory.q8.npz") as z:
        assert z["codes"].dtype == np.int8 and z["codes"].shape == (m["bank_size"], 152)
        assert z["scale"].shape == (m["bank_size"],) and z["mean"].shape == (152,)
    assert m["patchcore"]["bank_dtype"] == "int8"
    assert m["preprocess"]["interpolation"] == "area"
    assert m["training_images"] == 25 and m["holdout_images"] == 5
    assert m["parity"]["fp32_vs_torch_max_rel_diff"] < 1e-3
    assert not list(model_dir.parent.glob(f".{model_dir.name}.tmp-*"))  # staging cleaned up


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("fixture", ["model_dir", "padim_model_dir"])
def test_eval_auroc_is_perfect_on_easy_set(request, fixture, precision, synth_root, capsys):
    model = request.getfixturevalue(fixture)
    rc = cli_main(["eval", "--model", str(model), "--data", str(synth_root), "--precision", precision, "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["image_auroc"] == 1.0
    assert result["pixel_auroc"] > 0.9
    assert result["images"] == 22 and result["defective"] == 12
    assert result["precision"] == precision


def test_score_cli_json_lines(model_dir, synthetic_images, capsys):
    good, bad = synthetic_images["good"][0], synthetic_images["bad"][0]
    assert cli_main(["score", "--model", str(model_dir), "--precision", "fp32", str(good), str(bad)]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [l["is_anomaly"] for l in lines] == [False, True]
    assert lines[1]["normalized_score"] > 1.0 > lines[0]["normalized_score"]
    assert lines[0]["normalized_score"] == pytest.approx(lines[0]["score"] / lines[0]["threshold"])
    assert set(lines[0]["latency_ms"]) >= {"preprocess", "backbone", "search", "score", "total"}


def test_runtime_never_imports_torch(model_dir, synthetic_images):
    code = (
        "import sys; from edgead.model import load_model; from edgead.images import read_image;"
        f"m = load_model({str(model_dir)!r});"
        f"r = m.score(read_image({str(synthetic_images['bad'][0])!r}));"
        "assert r.anomaly_map is not None;"
        "bad = [k for k in sys.modules if k == 'torch' or k.startswith('torch.') or k == 'export' or k.startswith('export.')];"
        "assert not bad, bad; print('ok', r.score)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_anomaly_map_locates_defect(model_dir, synth_root):
    import cv2

    model = load_model(model_dir, precision="fp32")
    img = cv2.imread(str(synth_root / "test" / "blob" / "001.png"))
    mask = cv2.imread(str(synth_root / "ground_truth" / "blob" / "001_mask.png"), cv2.IMREAD_GRAYSCALE)
    res = model.score(img)
    assert res.anomaly_map.shape == img.shape[:2]
    peak = np.unravel_index(np.argmax(res.anomaly_map), res.anomaly_map.shape)
    ys, xs = np.nonzero(mask)
    assert abs(peak[0] - ys.mean()) < 16 and abs(peak[1] - xs.mean()) < 16


def test_tampered_artifact_refused(tampered_model_dir, capsys):
    with pytest.raises(ArtifactError, match="memory.q8.npz: sha256 mismatch"):
        load_model(tampered_model_dir)
    assert cli_main(["info", str(tampered_model_dir)]) == 2
    assert "memory.q8.npz" in capsys.readouterr().err


def test_truncated_and_unknown_schema_refused(model_dir, tmp_path):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    onnx = copy / "backbone.int8.onnx"
    onnx.write_bytes(onnx.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="backbone.int8.onnx: size"):
        load_model(copy)
    m = json.loads((model_dir / "manifest.json").read_text())
    m["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="schema version 99"):
        load_model(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json: missing"):
        load_model(copy)


def test_interrupted_export_leaves_previous_artifact(model_dir, tmp_path, monkeypatch):
    import shutil

    import edgead_export.pipeline as pipeline
    from edgead.preprocess import PreprocessConfig
    from edgead.synthetic import write_dataset

    out = tmp_path / "model"
    shutil.copytree(model_dir, out)
    before = (out / "manifest.json").read_bytes()
    staged: list[list[str]] = []

    def boom(*a, **k):
        staged.extend(sorted(p.name for p in d.iterdir()) for d in tmp_path.glob(".model.tmp-*"))
        raise KeyboardInterrupt("killed while writing the backbone")

    monkeypatch.setattr(pipeline, "export_onnx", boom)
    data = write_dataset(tmp_path / "parts", n_train=8, n_test_good=0, n_test_bad=0, size=64)  # a small, quick fit
    cfg = pipeline.ExportConfig(data=data, out=out, preprocess=PreprocessConfig(input_size=(64, 64)), progress=False)
    with pytest.raises(KeyboardInterrupt):
        pipeline.export_model(cfg)
    assert len(staged) == 1 and "memory.q8.npz" in staged[0]  # killed half-way through writing the new one
    assert (out / "manifest.json").read_bytes() == before
    load_model(out)  # still verifies
    assert not list(tmp_path.glob(".model.tmp-*"))


def test_fp32_backbone_left_out_when_int8_is_the_default(topk_int8_model_dir):
    m = json.loads((topk_int8_model_dir / "manifest.json").read_text())
    assert "backbone.onnx" not in m["files"] and not (topk_int8_model_dir / "backbone.onnx").exists()
    assert set(m["files"]) == {"backbone.int8.onnx", "memory.q8.npz"}  # (top-k mean: no support table)
    assert "fp32_vs_torch_max_rel_diff" in m["parity"]
    assert load_model(topk_int8_model_dir).precision == "int8"
    with pytest.raises(ArtifactError, match="no fp32 backbone.*--keep-fp32"):
        load_model(topk_int8_model_dir, precision="fp32")


def test_user_errors_name_the_file(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert cli_main(["score", "--model", str(model_dir), str(bad)]) == 2
    assert "bad.png" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["export", "--data", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no images found" in capsys.readouterr().err
    assert cli_main(["info", str(tmp_path / "nope")]) == 2
    assert "model directory not found" in capsys.readouterr().err


def test_unknown_backbone_is_a_clear_error(synth_root, tmp_path, capsys):
    pytest.importorskip("torch")  # without it, export names the missing extra first (test_packaging)
    rc = cli_main(["export", "--data", str(synth_root), "--out", str(tmp_path / "o"), "--backbone", "vgg99", "--no-progress"])
    assert rc == 2
    assert "unknown backbone 'vgg99'" in capsys.readouterr().err


def test_info_and_tar(model_dir, tmp_path, capsys):
    from edgead.artifact import pack_tar, unpack_tar

    assert cli_main(["info", str(model_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["checksums"] == "ok" and info["method"] == "patchcore"
    tar = pack_tar(model_dir, tmp_path / "m.tar")
    restored = unpack_tar(tar, tmp_path / "x")
    assert load_model(restored).sha256 == load_model(model_dir).sha256


def test_precisions_agree(model_dir, synthetic_images):
    from edgead.images import read_image
    from edgead_export.parity_stats import spearman

    paths = synthetic_images["good"] + synthetic_images["bad"]
    fp32 = load_model(model_dir, precision="fp32")
    int8 = load_model(model_dir, precision="int8")
    s32 = [fp32.score(read_image(p), with_map=False).score for p in paths]
    s8 = [int8.score(read_image(p), with_map=False).score for p in paths]
    assert spearman(s32, s8) > 0.9


def test_eval_writes_plots(model_dir, synth_root, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc = cli_main(["eval", "--model", str(model_dir), "--data", str(synth_root), "--plots", str(tmp_path), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    for name in ("roc.png", "score_histogram.png"):
        png = tmp_path / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert sorted(Path(p).name for p in result["plots"]) == ["roc.png", "score_histogram.png"]


def test_anomaly_map_is_computed_after_the_decision(model_dir, synthetic_images):
    from edgead.images import read_image
    from edgead.tiling import merge_maps

    model = load_model(model_dir)
    img = read_image(synthetic_images["bad"][0])
    r = model.score(img)
    assert r.has_map and "map" not in r.timings_ms  # the decision is out, the map not computed yet
    amap = r.anomaly_map
    assert amap.shape == img.shape[:2] and r.timings_ms["map"] > 0
    assert r.anomaly_map is amap  # computed once
    feats, geometries, _ = model.features(img)
    score, maps, _ = model.score_features(feats)  # the eager path gives the same map and score
    np.testing.assert_allclose(merge_maps(maps, geometries, model.tiling.merge), amap, rtol=1e-6)
    assert score == pytest.approx(r.score)
    none = model.score(img, with_map=False)
    assert not none.has_map and none.anomaly_map is None


def test_decision_path_score_equals_the_full_search(model_dir, synthetic_images, monkeypatch):
    """The image score from max_nn (prefix bounds + certified maximum) is the full search's."""
    from edgead.images import read_image
    from edgead.scorer.search import int8_layout

    monkeypatch.setattr(int8_layout, "DEFAULT_BLOCK_ROWS", 32)  # many blocks even for the small bank
    model = load_model(model_dir)
    assert model.search_backend == "int8" and len(model.scorer.banks[0].search._blocks) > 2
    for path in synthetic_images["good"][:3] + synthetic_images["bad"][:3]:
        img = read_image(path)
        fast = model.score(img)
        full_score, _, _ = model.score_features(model.features(img)[0], with_map=False)
        assert fast.score == pytest.approx(full_score, rel=1e-6)
        assert fast.anomaly_map.shape == img.shape[:2]


def test_int8_bank_is_served_from_its_codes(model_dir, synthetic_images):
    """The int8 search keeps the codes only (no float32 copy of the bank, not even at load); the
    exact backend dequantizes them and gives the same image scores."""
    from edgead.images import read_image
    from edgead.bank.store import load_bank

    files = json.loads((model_dir / "manifest.json").read_text())["files"]
    bank, (codes, _, _) = load_bank(model_dir, files, dequantize=False)
    assert bank is None and codes.dtype == np.int8
    model = load_model(model_dir, warm_up=True)
    search = model.scorer.banks[0].search
    assert search.name == "int8" and not hasattr(search, "bank") and search.codes.dtype == np.int8
    assert search._out.size > 0  # the warm-up frame allocated the GEMM scratch
    assert model.scorer.banks[0].bank_knn.dtype == np.uint16  # the support table as stored
    exact = load_model(model_dir, search="exact")
    assert exact.search_backend == "exact"
    for path in synthetic_images["good"][:2] + synthetic_images["bad"][:2]:
        img = read_image(path)
        assert model.score(img).score == pytest.approx(exact.score(img).score, rel=1e-5)


def test_warm_up_frame_holds_a_pixel_roi(model_dir, caplog, monkeypatch):
    """The daemon's warm-up frame contains a pixel ROI larger than the model input (a 640 px
    ROI lies outside a 128 px frame), and a warm-up that fails anyway is logged, not fatal."""
    from dataclasses import replace

    from edgead.errors import ConfigError

    model = load_model(model_dir)
    model.preprocess_cfg = replace(model.preprocess_cfg, roi=(300, 200, 640, 480), roi_units="px")
    with pytest.raises(ConfigError):
        model.score(np.zeros((128, 128, 3), np.uint8))  # a model-sized frame cannot hold it
    model.warm_up()
    assert "warm-up skipped" not in caplog.text and model.scorer.banks[0].search._out.size > 0

    def broken(*args, **kwargs):
        raise ConfigError("camera frame smaller than the ROI")

    monkeypatch.setattr(model, "score", broken)
    model.warm_up()
    assert "warm-up skipped: camera frame smaller than the ROI" in caplog.text


def test_stored_support_sets_give_the_same_scores(model_dir, synthetic_images):
    from edgead.images import read_image

    model = load_model(model_dir)
    knn = np.load(model_dir / "memory.knn.npy")
    assert knn.dtype == np.uint16 and knn.shape == (model.manifest.bank_size, 9)
    assert (knn[:, 0] == np.arange(len(knn))).mean() > 0.99  # each row is its own nearest neighbour
    bank = model.scorer.banks[0]
    assert bank.bank_knn is not None
    for path in synthetic_images["good"][:2] + synthetic_images["bad"][:2]:
        feats = model.features(read_image(path))[0][0]
        looked_up = bank.image_score_only(feats)[0]
        table, bank.bank_knn = bank.bank_knn, None
        searched = bank.image_score_only(feats)[0]
        bank.bank_knn = table
        assert looked_up == pytest.approx(searched, rel=1e-6)


def test_topk_mean_image_score(topk_int8_model_dir, synthetic_images):
    from edgead.images import read_image
    from edgead.metrics_math import auroc

    m = json.loads((topk_int8_model_dir / "manifest.json").read_text())
    assert m["patchcore"]["image_score"] == {"rule": "topk_mean", "k": 5} and "memory.knn.npy" not in m["files"]
    model = load_model(topk_int8_model_dir)
    img = read_image(synthetic_images["bad"][0])
    r = model.score(img)
    feats = model.features(img)[0][0]
    dist, _, _ = model.scorer.banks[0].patch_scores(feats)  # the mean of the 5 largest patch distances
    assert r.score == pytest.approx(float(np.sort(dist.ravel())[-5:].mean()), rel=1e-6)
    assert model.score(img, defer_map=False).score == pytest.approx(r.score, rel=1e-6)  # eval's path: same score
    scores = [model.score(read_image(p), with_map=False).score for p in synthetic_images["good"] + synthetic_images["bad"]]
    labels = [0] * len(synthetic_images["good"]) + [1] * len(synthetic_images["bad"])
    assert auroc(np.array(labels), np.array(scores)) > 0.9


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_served_score_is_the_reweighted_maximum(model_dir, synthetic_images, precision):
    """The served image score is the paper's eq. 7, worked out here by brute force from the
    artifact's own files: the largest patch distance to the bank, times 1 - softmax weight of
    its distances to the b bank rows nearest m*. The plain maximum is a different number."""
    from edgead.images import read_image

    b = 9  # the export's default support set (the paper's)
    with np.load(model_dir / "memory.q8.npz") as z:  # bank ~ mean + scale * codes, per row
        bank = z["codes"].astype(np.float64) * z["scale"][:, None] + z["mean"]
    model = load_model(model_dir, precision=precision)
    for path in synthetic_images["good"][:4] + synthetic_images["bad"][:4]:
        img = read_image(path)
        feats = model.features(img)[0][0]
        patches = feats.reshape(feats.shape[0], -1).T.astype(np.float64)
        to_bank = np.sqrt(((patches[:, None, :] - bank[None]) ** 2).sum(-1))
        i_star = int(np.argmax(to_bank.min(1)))  # the most anomalous patch
        m_star = int(np.argmin(to_bank[i_star]))
        s_star = float(to_bank[i_star, m_star])
        support = np.argsort(np.sqrt(((bank - bank[m_star]) ** 2).sum(-1)), kind="stable")[:b]
        d = to_bank[i_star, np.concatenate(([m_star], support[support != m_star]))[:b]]
        expected = (1.0 - np.exp(d[0] - d.max()) / np.exp(d - d.max()).sum()) * s_star
        served = model.score(img)
        # float32 against float64 agree to ~1e-7 here; the weight moves these scores by 5e-5 to 1e-2
        assert served.score == pytest.approx(expected, rel=2e-6), path.name
        assert model.score(img, defer_map=False).score == pytest.approx(expected, rel=2e-6)  # eval's path
        assert s_star > served.score * (1 + 1e-5)  # so the plain maximum would fail the line above
