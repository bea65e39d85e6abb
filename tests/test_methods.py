"""SimpleNet and SPADE end to end on synthetic parts: export, score, eval, bench, serve, reload."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from service_harness import serve

from edgead.cli import main as cli_main
from edgead.images import read_image
from edgead.metrics_math import auroc
from edgead.model import load_model

METHODS = ["simplenet_model_dir", "spade_model_dir"]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("fixture", METHODS)
def test_eval_separates_the_defects(request, fixture, precision, synth_root, capsys):
    model = request.getfixturevalue(fixture)
    assert cli_main(["eval", "--model", str(model), "--data", str(synth_root), "--precision", precision,
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["image_auroc"] >= 0.95
    assert result["pixel_auroc"] > 0.85
    assert result["images"] == 22 and result["defective"] == 12


def test_simplenet_artifact_is_one_graph_without_a_bank(simplenet_model_dir):
    m = json.loads((simplenet_model_dir / "manifest.json").read_text())
    assert m["method"] == "simplenet" and m["bank_size"] == 0
    assert set(m["files"]) == {"backbone.onnx", "backbone.int8.onnx"}
    sn = m["simplenet"]
    assert sn["hidden"] == 128 and sn["image_score"] == {"rule": "topk_mean", "k": 60}  # the default rule
    assert sn["head_macs"] < 0.25 * sn["backbone_macs"]
    assert m["parity"]["fp32_vs_torch_max_rel_diff"] < 1e-3
    import onnx  # the export's (a Pi has no onnx)

    graph = onnx.load(str(simplenet_model_dir / "backbone.onnx")).graph
    assert [o.name for o in graph.output] == ["scores"] and graph.node[-1].op_type == "Softplus"
    # in the INT8 graph the head's per-tap convolutions read the backbone's int8 activations and
    # are quantized; its output part stays float: its output is the score itself
    int8 = onnx.load(str(simplenet_model_dir / "backbone.int8.onnx")).graph
    out = [n for n in int8.node if n.name.startswith("/head/out/")]
    assert out and all(n.op_type not in ("QuantizeLinear", "DequantizeLinear") for n in out)
    dequantized = {o for n in int8.node if n.op_type == "DequantizeLinear" for o in n.output}
    taps = [n for n in int8.node if n.op_type == "Conv" and n.name.startswith("/head/taps")]
    assert len(taps) == 2 and all(n.input[0] in dequantized and n.input[1] in dequantized for n in taps)


def test_simplenet_training_is_seeded(synth_root, tmp_path):
    pytest.importorskip("torch")
    from edgead_export.methods.simplenet import SimpleNetSettings, fit_simplenet

    feats = np.random.default_rng(0).normal(size=(4, 8, 4, 4)).astype(np.float32)
    settings = SimpleNetSettings(hidden=8, steps=20, batch=32, seed=3)
    a, b = fit_simplenet(feats, settings), fit_simplenet(feats, settings)
    assert all(np.array_equal(x.detach().numpy(), y.detach().numpy())
               for x, y in zip(a.head.state_dict().values(), b.head.state_dict().values()))


def test_an_untrained_discriminator_scores_at_chance(simplenet_model_dir, synthetic_images, tmp_path):
    """The trained head is what separates the parts: the same graph with the discriminator's
    output layer zeroed gives every patch the same score."""
    import shutil

    import onnx  # the export's (a Pi has no onnx)

    from edgead.artifact import update_manifest

    copy = tmp_path / "untrained"
    shutil.copytree(simplenet_model_dir, copy)
    path = copy / "backbone.onnx"
    model = onnx.load(str(path))
    conv2 = next(n for n in model.graph.node if n.name.startswith("/head/out/conv2"))
    for init in model.graph.initializer:
        if init.name in conv2.input[1:]:
            init.CopyFrom(onnx.numpy_helper.from_array(np.zeros(onnx.numpy_helper.to_array(init).shape,
                                                                np.float32), init.name))
    onnx.save(model, str(path))
    files = json.loads((copy / "manifest.json").read_text())["files"]
    files["backbone.onnx"] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}
    update_manifest(copy, files=files)
    trained, zeroed = load_model(simplenet_model_dir, precision="fp32"), load_model(copy, precision="fp32")
    images = synthetic_images["good"] + synthetic_images["bad"]
    labels = np.r_[np.zeros(len(synthetic_images["good"])), np.ones(len(synthetic_images["bad"]))]
    score = lambda m: np.array([m.score(read_image(p), with_map=False).score for p in images])
    assert auroc(labels, score(trained)) >= 0.95
    assert auroc(labels, score(zeroed)) == 0.5


def test_spade_decides_before_its_map(spade_model_dir, synthetic_images, monkeypatch):
    from edgead.scorer.spade import SpadeGallery

    m = json.loads((spade_model_dir / "manifest.json").read_text())
    assert m["spade"]["k"] == 5 and m["spade"]["map_images"] == 3
    assert m["bank_size"] == m["training_images"] * 16 * 16
    model = load_model(spade_model_dir, precision="fp32")
    calls = []
    real = SpadeGallery.patch_scores
    monkeypatch.setattr(SpadeGallery, "patch_scores", lambda self, f, i: calls.append(len(i)) or real(self, f, i))
    bad = model.score(read_image(synthetic_images["bad"][0]))
    assert bad.is_anomaly and calls == []
    amap = bad.anomaly_map
    assert calls == [3] and amap.shape == read_image(synthetic_images["bad"][0]).shape[:2]
    assert not model.score(read_image(synthetic_images["good"][0])).is_anomaly


def test_spade_image_score_is_the_mean_knn_distance_of_the_global_feature(spade_model_dir, synthetic_images):
    model = load_model(spade_model_dir, precision="fp32")
    feats = model.features(read_image(synthetic_images["bad"][1]))[0][0]
    with np.load(spade_model_dir / "spade.npz") as z:
        train = z["globals"]
    dist = np.sort(np.linalg.norm(train - feats.mean(axis=(1, 2)), axis=1))[:5]
    assert model.score_features(feats[None], with_map=False)[0] == pytest.approx(dist.mean(), rel=1e-4)


@pytest.mark.parametrize("fixture", METHODS)
def test_bench_score_serve_and_reload(request, fixture, synthetic_images, capsys, tmp_path):
    import httpx

    from edgead.service.app import create_app
    from edgead.service.config import EdgeadConfig

    model = request.getfixturevalue(fixture)
    assert cli_main(["bench", "--model", str(model), "--images", str(synthetic_images["good"][0].parent),
                     "--n", "3", "--warmup", "1", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["method"] == fixture.split("_")[0]
    good, bad = synthetic_images["good"][0], synthetic_images["bad"][0]
    assert cli_main(["score", "--model", str(model), str(good), str(bad)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[1]["is_anomaly"] and lines[1]["score"] > 1.2 * lines[0]["score"]
    token = "test-token-0123456789abcdef"
    auth = {"Authorization": f"Bearer {token}"}
    config = EdgeadConfig(model={"path": str(model), "threads": 1}, server={"token": token},
                          inspection={"data_dir": str(tmp_path / "data")})
    app = create_app(config)
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        def inspect(path):
            r = client.post("/score", content=path.read_bytes(), headers={"Content-Type": "image/png", **auth})
            assert r.status_code == 200, r.text
            return r.json()

        first = inspect(bad)
        assert first["is_anomaly"] is True
        r = client.post("/model/reload", headers=auth)
        assert r.status_code == 200 and r.json()["model"]["method"] == bench["method"]
        again = inspect(bad)
        assert again["score"] == pytest.approx(first["score"], rel=1e-6)
        assert inspect(good)["score"] < first["score"] / 1.2
        heat = client.get(f"/results/{again['id']}/heatmap.png")
        assert heat.status_code == 200 and heat.content[:4] == b"\x89PNG"


@pytest.mark.parametrize("taps, target_dim", [([4, 10], None), ([4, 10], 64), ([10, 14, "s8"], None)])
def test_simplenet_head_fused_into_the_aggregation_scores_as_on_the_features(taps, target_dim):
    """The exported graph applies the head's first layer per tap before the upsampling: the
    scores must equal the trained head's on the concatenated patch features."""
    torch = pytest.importorskip("torch")
    from edgead_export.backbones import build_backbone
    from edgead_export.feature_graph import PatchFeatureGraph
    from edgead_export.methods.simplenet import SimpleNetGraph, SimpleNetHead

    backbone = build_backbone("efficientnet-lite0", taps)
    with torch.no_grad():
        channels = [m.shape[1] for m in backbone(torch.zeros(1, 3, 128, 128))]
    features = PatchFeatureGraph(backbone, "patchcore", channels, target_dim=target_dim).eval()
    d = features.feature_dim((128, 128))[0]
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    trained = SimpleNetHead(rng.normal(size=d).astype(np.float32), rng.uniform(0.5, 2, d).astype(np.float32), 16)
    with torch.no_grad():
        for p in trained.parameters():
            p.normal_()
        trained.bn.running_mean.normal_()
    head = trained.eval().folded().eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        expected, fused = head(features(x)), SimpleNetGraph(features, head).eval()(x)
    assert fused.shape == expected.shape == (2, 1, *features.feature_dim((128, 128))[1:])
    np.testing.assert_allclose(fused.numpy(), expected.numpy(), rtol=1e-3, atol=1e-4 * float(expected.abs().max()))
