"""The manifest: validated on read, one clear line for every broken one, old artifacts unchanged."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgead.artifact import read_manifest, sha256_file, update_manifest
from edgead.cli import main as cli_main
from edgead.demo import DEMO_MODEL
from edgead.errors import ArtifactError
from edgead.model import load_model

# Scores of the bundled demo model (schema 1, int8) on generated parts, first recorded before the
# manifest became a typed model, re-recorded when the INT8 backbone dropped onnxruntime's NCHWc
# layout (the integers every CPU computes, arm64's too; up to 3e-4 from the old x86 figures):
# (seed, defect, image score, maximum of the anomaly map).
DEMO_SCORES = [
    (0, None, 23.371237974077392, 23.47091293334961),
    (1, None, 21.184199027528077, 20.478036880493164),
    (2, "scratch", 36.990410061312986, 34.189876556396484),
    (3, "blob", 62.47737906870979, 54.6146125793457),
    (4, "chip", 39.009071733402536, 37.28269577026367),
    (5, None, 22.011018471623032, 21.86675262451172),
]
# The parts' pixels as drawn here: another numpy / OpenCV build (arm64's Debian) can round a pixel
# of the drawing differently, and a part drawn otherwise is another image.
DEMO_PIXELS = {0: '7fab7a43dd309748', 1: '91471debf656a483', 2: '78ab8d60fa166df6', 3: 'de9145f4ae218c76', 4: '18fcecf14b6608f8', 5: '917b7b96b22448f1'}


def test_demo_model_scores_unchanged():
    from edgead.synthetic import make_part

    model = load_model(DEMO_MODEL)
    assert model.manifest.schema_version == 1 and model.precision == "int8"
    compared = 0
    for seed, defect, score, map_max in DEMO_SCORES:
        image, _ = make_part(np.random.default_rng(seed), size=128, defect=defect)
        if hashlib.sha256(image.tobytes()).hexdigest()[:16] != DEMO_PIXELS[seed]:
            continue
        result = model.score(image, with_map=True, defer_map=False)
        assert result.score == pytest.approx(score, rel=1e-6)
        assert float(result.anomaly_map.max()) == pytest.approx(map_max, rel=1e-6)
        compared += 1
    assert compared >= 4, f"only {compared} of {len(DEMO_SCORES)} parts drawn as recorded"


def _keys(path: str | tuple) -> list:
    return list(path) if isinstance(path, tuple) else path.split(".")


def _set(path: str | tuple, value):
    def change(m: dict) -> None:
        *parents, last = _keys(path)
        node = m
        for key in parents:
            node = node[key]
        node[last] = value
    return change


def _drop(path: str | tuple):
    def change(m: dict) -> None:
        *parents, last = _keys(path)
        node = m
        for key in parents:
            node = node[key]
        del node[last]
    return change


# (case id, change to the demo model's manifest, expected fragment of the message)
BROKEN = [
    ("no-input-size", _drop("preprocess.input_size"), "preprocess.input_size: Field required"),
    ("input-size-text", _set("preprocess.input_size", "128x128"), "preprocess.input_size: Input should be a valid tuple"),
    ("input-size-not-32", _set("preprocess.input_size", [100, 128]), "preprocess: input size 100x128"),
    ("resize-unknown", _set("preprocess.resize_mode", "crop"), "preprocess: resize mode 'crop'"),
    ("roi-three-values", _set("preprocess.roi", [0, 0, 10]), "preprocess.roi"),
    ("grid-text", _set("tiling.grid", "2x2"), "tiling.grid: Input should be a valid tuple (got '2x2')"),
    ("grid-zero", _set("tiling.grid", [0, 2]), "tiling: tile grid 0x2"),
    ("merge-unknown", _set("tiling.merge", "median"), "tiling: tile merge 'median'"),
    ("threshold-text", _set("threshold", "high"), "threshold: Input should be a valid number"),
    ("threshold-negative", _set("threshold", -1.5), "threshold: Input should be greater than 0"),
    ("threshold-infinite", _set("threshold", math.inf), "threshold: Input should be a finite number"),
    ("thresholds-zero", _set("thresholds", {"int8": 0.0}), "thresholds: int8: expected a positive finite threshold"),
    ("method-unknown", _set("method", "knn"), "method: Input should be 'patchcore', 'padim', 'simplenet' or 'spade'"),
    ("no-method", _drop("method"), "method: Field required"),
    ("feature-dim-list", _set("feature_dim", [152]), "feature_dim: Input should be a valid integer"),
    ("no-backbone", _drop("backbone"), "backbone: Field required"),
    ("feature-grid-number", _set("backbone.feature_grid", 16), "backbone.feature_grid: Input should be a valid tuple"),
    ("precision-unknown", _set("default_precision", "int4"), "default_precision: Input should be 'int8' or 'fp32'"),
    ("image-score-rule", _set("patchcore.image_score", {"rule": "median"}),
     "patchcore.image_score.rule: Input should be 'reweighted' or 'topk_mean'"),
    ("neighbours-zero", _set("patchcore.num_neighbors", 0), "patchcore.num_neighbors: Input should be greater than 0"),
    ("hnsw-param-text", _set("patchcore.hnsw", {"M": "16"}), "patchcore.hnsw.M: Input should be a valid integer"),
    ("map-sigma-negative", _set("map_sigma", -1), "map_sigma: Input should be greater than or equal to 0"),
    ("no-bank-listed", _drop(("files", "memory.q8.npz")), "files: lists no memory.q8.npz or memory.npy"),
    ("no-backbone-listed", _set("default_precision", "fp32"), "files: lists no backbone.onnx"),
    ("per-tile-banks-missing", _set("tiling", {"grid": [2, 2], "overlap": 0.25, "banks": "per_tile"}),
     "files: lists no memory.t0.q8.npz or memory.t0.npy"),
    ("file-sha-number", _set(("files", "memory.q8.npz", "sha256"), 5), "files.memory.q8.npz.sha256: Input should be a valid string"),
    ("file-size-negative", _set(("files", "memory.q8.npz", "bytes"), -1), "files.memory.q8.npz.bytes"),
    ("no-files", _drop("files"), "files: Field required"),
    ("schema-newer", _set("schema_version", 99), "schema version 99 is not supported"),
    ("no-schema", _drop("schema_version"), "schema_version: field required"),
]


@pytest.fixture()
def broken(request, tmp_path) -> tuple[Path, str]:
    """A copy of the demo model with one change to its manifest -> (dir, expected fragment)."""
    _, change, expected = request.param
    copy = tmp_path / "broken"
    shutil.copytree(DEMO_MODEL, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy, expected


def _params():
    return pytest.mark.parametrize("broken", BROKEN, ids=[c[0] for c in BROKEN], indirect=True)


@_params()
def test_loader_names_file_field_and_problem(broken):
    model_dir, expected = broken
    with pytest.raises(ArtifactError) as info:
        load_model(model_dir)
    assert str(info.value).startswith(f"{model_dir / 'manifest.json'}: ")
    assert expected in str(info.value)


@_params()
def test_every_command_prints_one_line(broken, tmp_path, capsys):
    model_dir, expected = broken
    import cv2

    from edgead.synthetic import make_part

    image = tmp_path / "part.png"
    cv2.imwrite(str(image), make_part(np.random.default_rng(0))[0])
    commands = {
        "score": ["score", "--model", str(model_dir), str(image)],
        "info": ["info", str(model_dir)],
        "eval": ["eval", "--model", str(model_dir), "--data", str(tmp_path)],
        "bench": ["bench", "--model", str(model_dir), "--n", "2"],
        "serve": ["serve", "--model", str(model_dir), "--check"],
    }
    for name, argv in commands.items():
        rc = cli_main(argv)
        out, err = capsys.readouterr()
        assert rc != 0 and (rc == 2 or name == "serve"), (name, rc)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, (name, err)
        assert str(model_dir / "manifest.json") in lines[0] and expected in lines[0], (name, lines[0])
        assert out == ""


@_params()
def test_daemon_reload_refuses_and_keeps_serving(broken):
    from edgead.service.model_holder import ModelHolder

    model_dir, expected = broken
    holder = ModelHolder(load_model(DEMO_MODEL), load_model, precision=None, threads=1, search="auto",
                         log_store=None, reload_roots=[DEMO_MODEL.parent, model_dir.parent])
    with pytest.raises(ArtifactError, match="manifest.json: ") as info:
        holder.reload(model_dir)
    assert expected in str(info.value) and holder.model.path == DEMO_MODEL


def test_info_says_ok_only_when_the_model_loads(tmp_path, capsys):
    """A neighbour table that does not fit the bank, checksummed: the checksums pass, the load does not."""
    copy = tmp_path / "m"
    shutil.copytree(DEMO_MODEL, copy)
    knn = copy / "memory.knn.npy"
    np.save(knn, np.zeros((3, 9), np.uint16))
    files = dict(json.loads((copy / "manifest.json").read_text())["files"])
    files[knn.name] = {"sha256": sha256_file(knn), "bytes": knn.stat().st_size}
    update_manifest(copy, files=files)
    assert cli_main(["info", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "memory.knn.npy" in err and "does not fit a bank" in err
    assert cli_main(["info", str(DEMO_MODEL), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["checksums"] == "ok" and info["loads"].startswith("ok")


def test_old_manifest_defaults_are_what_the_runtime_always_assumed():
    m = read_manifest(DEMO_MODEL)  # schema 1: no interpolation, photometric, image_score
    assert m.preprocess.interpolation == "area" and m.preprocess.photometric == "none"
    assert m.pc.image_score.rule == "reweighted" and m.default_precision == "int8"
    assert m.threshold_for("int8") == m.threshold and m.threshold_for("fp32") == m.thresholds["fp32"]
    assert m.tiling.count == 1 and m.export is None


def test_update_refuses_to_write_a_manifest_that_would_not_load(tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(DEMO_MODEL, copy)
    before = (copy / "manifest.json").read_bytes()
    with pytest.raises(ArtifactError, match="threshold: Input should be greater than 0"):
        update_manifest(copy, threshold=-1)
    assert (copy / "manifest.json").read_bytes() == before


def test_one_module_names_the_files(model_dir):
    """The exported artifact holds exactly the files edgead.manifest names for it."""
    from edgead.manifest import BACKBONE_FILES, bank_file, knn_file

    m = read_manifest(model_dir)
    assert set(m.files) == {BACKBONE_FILES["fp32"], BACKBONE_FILES["int8"], bank_file("int8"), knn_file()}
