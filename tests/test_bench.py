"""`edgead bench` and the two search backends through the whole model. No timed assertions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgead.bench import STAGES
from edgead.cli import main as cli_main

STAT_KEYS = ("p50", "p95", "p99", "mean", "min", "max")


def _bench_json(capsys, *argv: str) -> dict:
    assert cli_main(["bench", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _check_fields(r: dict) -> None:
    for stage in STAGES:
        stats = r["latency_ms"][stage]
        assert set(STAT_KEYS) <= set(stats)
        assert 0 <= stats["p50"] <= stats["p95"] <= stats["p99"] <= stats["max"]
    assert r["latency_ms"]["total"]["p50"] >= r["latency_ms"]["backbone"]["p50"]
    assert r["memory_mib"]["peak_rss"] > 0
    sizes = r["artifact_bytes"]
    assert 0 < sizes["loaded"] <= sizes["total"]
    assert r["bank_size"] > 0 and r["feature_dim"] > 0
    assert r["search"] in ("int8", "exact", "hnsw") and r["precision"] in ("int8", "fp32")
    assert {"total_over_backbone_p50", "total_p99_over_p50"} <= set(r["ratios"])
    assert r["machine"]["cores"] >= 1


def test_bench_json_on_images(model_dir, synthetic_images, capsys):
    folder = synthetic_images["good"][0].parent
    r = _bench_json(capsys, "--model", str(model_dir), "--images", str(folder), "--n", "6", "--warmup", "1",
                    "--precision", "fp32")
    _check_fields(r)
    assert r["frames"] == 6 and r["precision"] == "fp32" and r["images"] == str(folder)
    assert "backbone.int8.onnx" not in r["artifact_bytes"]["loaded_files"]


def test_bench_synthetic_frames_and_table(model_dir, capsys):
    r = _bench_json(capsys, "--model", str(model_dir), "--n", "4", "--warmup", "0", "--search", "exact")
    _check_fields(r)
    assert r["images"].startswith("synthetic") and r["search"] == "exact"
    assert cli_main(["bench", "--model", str(model_dir), "--n", "2", "--no-map"]) == 0
    table = capsys.readouterr().out
    assert "backbone" in table and "peak RSS" in table and "p99" in table


def test_bench_frames_at_input_size(model_dir, synthetic_images, tmp_path, capsys):
    """--frames-at-input-size: frames pre-scaled as a camera set to the input size delivers them."""
    from types import SimpleNamespace

    import cv2

    from edgead.bench import Frame, frames_at_input_size
    from edgead.errors import ConfigError
    from edgead.preprocess import PreprocessConfig

    folder = tmp_path / "frames"  # larger than the model input, not square
    folder.mkdir()
    for p in synthetic_images["good"][:3]:
        cv2.imwrite(str(folder / p.name), cv2.resize(cv2.imread(str(p)), (200, 170)))
    plain = _bench_json(capsys, "--model", str(model_dir), "--images", str(folder), "--n", "3", "--warmup", "0")
    r = _bench_json(capsys, "--model", str(model_dir), "--images", str(folder), "--n", "3", "--warmup", "0",
                    "--frames-at-input-size")
    _check_fields(r)
    assert r["frames_at_input_size"] is True and plain["frames_at_input_size"] is False
    assert r["frame_shape"] == r["input_size"] != plain["frame_shape"]
    # a letterboxed model: the camera keeps the aspect, the frame is the content box (128 x 109)
    boxed = SimpleNamespace(preprocess_cfg=PreprocessConfig(input_size=(128, 128), resize_mode="letterbox"),
                            tiling=SimpleNamespace(count=1), input_size=(128, 128), path=model_dir)
    frame = Frame("b.png", (folder / synthetic_images["good"][0].name).read_bytes())
    small = cv2.imdecode(np.frombuffer(frames_at_input_size([frame], boxed)[0].data, np.uint8), cv2.IMREAD_COLOR)
    assert small.shape[:2] == (109, 128)
    with_roi = SimpleNamespace(preprocess_cfg=PreprocessConfig(input_size=(64, 64), roi=(0, 0, 32, 32)),
                               tiling=SimpleNamespace(count=1), input_size=(64, 64), path=model_dir)
    with pytest.raises(ConfigError, match="ROI"):
        frames_at_input_size([Frame("a.png", synthetic_images["good"][0].read_bytes())], with_roi)


def test_bench_resolutions_synthetic_bank(model_dir, capsys):
    r = _bench_json(capsys, "--model", str(model_dir), "--n", "3", "--warmup", "0", "--resolutions", "96,128,160")
    study = r["scaling"]
    assert study["mode"] == "synthetic-bank"
    assert [p["side"] for p in study["points"]] == [96, 128, 160]
    assert study["points"][0]["bank_size"] < study["points"][-1]["bank_size"]
    assert {"a", "b", "c", "r2"} <= set(study["fit"]["total_p50_ms"])
    assert study["extrapolation"]["equivalent_side"] == pytest.approx((2592 * 1944) ** 0.5)


def test_quadratic_fit_recovers_coefficients():
    from edgead.scaling import evaluate_fit, quadratic_fit

    sides = [128, 224, 320, 448]
    fit = quadratic_fit(sides, [3 + 0.5 * s + 0.01 * s * s for s in sides])
    assert (fit["a"], fit["b"], fit["c"]) == pytest.approx((3, 0.5, 0.01), rel=1e-6, abs=1e-6)
    assert evaluate_fit(fit, 1000) == pytest.approx(3 + 500 + 10_000)


@pytest.fixture(scope="module", params=["full", "links-only"])
def hnsw_model_dir(request, model_dir, tmp_path_factory):
    """model_dir plus an hnswlib index of its bank (as hnswlib writes it, or without its vectors
    as export writes it), with the manifest's checksums updated."""
    from edgead.artifact import read_manifest, read_manifest_json, sha256_file, update_manifest
    from edgead.bank.hnsw_file import strip_vectors
    from edgead.bank.store import load_bank
    from edgead.scorer.search.hnsw import build_hnsw_index

    copy = tmp_path_factory.mktemp("hnsw") / f"washer-hnsw-{request.param}"
    shutil.copytree(model_dir, copy)
    bank = load_bank(copy, read_manifest(copy).files)[0]
    params = build_hnsw_index(bank, copy / "hnsw.bin")
    if request.param == "links-only":
        assert strip_vectors(copy / "hnsw.bin", bank) > 0
    manifest = read_manifest_json(copy)
    files = dict(manifest["files"], **{"hnsw.bin": {"sha256": sha256_file(copy / "hnsw.bin"),
                                                    "bytes": (copy / "hnsw.bin").stat().st_size}})
    update_manifest(copy, files=files, patchcore=dict(manifest["patchcore"], hnsw=params))
    return copy


def test_exact_and_hnsw_give_the_same_image_scores(hnsw_model_dir, synthetic_images):
    from edgead.images import read_image
    from edgead.model import load_model

    exact = load_model(hnsw_model_dir, precision="fp32", search="exact")
    hnsw = load_model(hnsw_model_dir, precision="fp32", search="hnsw")
    assert (exact.search_backend, hnsw.search_backend) == ("exact", "hnsw")
    images = [read_image(p) for p in synthetic_images["good"][:4] + synthetic_images["bad"][:4]]
    s_exact = np.array([exact.score(im, with_map=False).score for im in images])
    s_hnsw = np.array([hnsw.score(im, with_map=False).score for im in images])
    np.testing.assert_allclose(s_hnsw, s_exact, rtol=1e-2)  # the max patch distance is exact (certified)
    m_exact, m_hnsw = exact.score(images[-1]).anomaly_map, hnsw.score(images[-1]).anomaly_map
    assert np.corrcoef(m_exact.ravel(), m_hnsw.ravel())[0, 1] > 0.99


def test_links_only_index_is_smaller_and_checked(model_dir, tmp_path):
    from edgead.artifact import read_manifest
    from edgead.errors import ArtifactError
    from edgead.bank.hnsw_file import strip_vectors
    from edgead.bank.store import load_bank
    from edgead.scorer.search.hnsw import HnswSearch, build_hnsw_index

    bank = load_bank(model_dir, read_manifest(model_dir).files)[0]
    path = tmp_path / "hnsw.bin"
    build_hnsw_index(bank, path)
    full = path.stat().st_size
    strip_vectors(path, bank)
    assert path.stat().st_size < full - bank.shape[0] * bank.shape[1] * 4 + 64
    HnswSearch(bank, path)  # loads
    other = bank.copy()
    other[0] += 1
    with pytest.raises(ArtifactError, match="hnsw.bin"):
        HnswSearch(other, path)


def test_honest_selection_chooses_on_one_half_and_reports_the_other():
    """bench/honest_selection.py: a candidate that separates the classes is chosen in every
    split and reported at AUROC 1; a noise candidate never is; with noise alone the held-half
    AUROC is near chance, not the optimistic best of the whole set."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "honest_selection.py"
    spec = importlib.util.spec_from_file_location("honest_selection", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    labels = np.array([0] * 60 + [1] * 60)
    good = labels + 0.1 * rng.standard_normal(120)
    noise = {f"noise{i}": rng.standard_normal(120) for i in range(20)}
    r = mod.split_selection(labels, {"good": good, **noise}, splits=30, seed=1)
    assert r["chosen"] == {"good": 30} and r["mean_auroc_on_held_half"] == pytest.approx(1.0)
    r = mod.split_selection(labels, noise, splits=60, seed=1)
    best_whole = max(mod.auroc(labels, s) for s in noise.values())
    assert abs(r["mean_auroc_on_held_half"] - 0.5) < 0.08 and best_whole > r["mean_auroc_on_held_half"] + 0.05
