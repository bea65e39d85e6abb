"""Photometric normalisation end to end: exported in the manifest, applied at serve, and what it
is for -- a dimmer exposure of a good part is not rejected."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgead.model import load_model


@pytest.fixture(scope="module")
def equalized_model_dir(synth_root, tmp_path_factory):
    pytest.importorskip("torch")
    from edgead.preprocess import PreprocessConfig
    from edgead_export.pipeline import ExportConfig, export_model

    cfg = ExportConfig(data=synth_root, out=tmp_path_factory.mktemp("models") / "washer-eq", method="patchcore",
                       preprocess=PreprocessConfig(input_size=(128, 128), photometric="equalize"),
                       coreset=0.1, progress=False, threads=2, calib_images=16)
    return export_model(cfg)[0]


def _dimmed(img: np.ndarray) -> np.ndarray:
    """The same part under 40 % less light (and some stray light): a new lamp, a dirty lens."""
    return np.clip(img.astype(np.float64) * 0.6 + 15, 0, 255).astype(np.uint8)


def test_manifest_records_it(equalized_model_dir):
    m = json.loads((equalized_model_dir / "manifest.json").read_text())
    assert m["preprocess"]["photometric"] == "equalize"
    assert m["schema_version"] == 2  # a version-1 runtime would ignore the field: it must refuse the model


def test_dimmer_good_parts_pass_only_with_it(equalized_model_dir, model_dir, synthetic_images):
    plain, equalized = load_model(model_dir, "int8"), load_model(equalized_model_dir, "int8")
    for path in synthetic_images["good"][:3]:
        img = cv2.imread(str(path))
        # without normalisation the dimmer good part is rejected
        assert not plain.score(img).is_anomaly and plain.score(_dimmed(img)).is_anomaly
        # with it, the score barely moves and the part passes
        a, b = equalized.score(img), equalized.score(_dimmed(img))
        assert not a.is_anomaly and not b.is_anomaly
        assert b.score == pytest.approx(a.score, rel=0.1)
    for path in synthetic_images["bad"][:3]:  # defects are still found, in either light
        img = cv2.imread(str(path))
        assert equalized.score(img).is_anomaly and equalized.score(_dimmed(img)).is_anomaly


def test_version_1_manifests_still_load(model_dir, tmp_path):
    import shutil

    copy = tmp_path / "v1"
    shutil.copytree(model_dir, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["schema_version"] = 1
    m["preprocess"].pop("photometric", None)
    (copy / "manifest.json").write_text(json.dumps(m))
    model = load_model(copy, "int8")
    assert model.preprocess_cfg.photometric == "none"
