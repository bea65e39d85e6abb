"""Real industrial data (../shared/data, MVTec layout): a small export + eval. Skipped when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.realdata


def _subset(src: Path, dst: Path, n_train: int, n_test: int) -> Path:
    """Symlinked MVTec-style subset: the first n of each folder."""
    for sub in ["train/good"] + [f"test/{p.name}" for p in sorted((src / "test").iterdir()) if p.is_dir()]:
        files = sorted((src / sub).iterdir())[: n_train if sub.startswith("train") else n_test]
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for f in files:
            (dst / sub / f.name).symlink_to(f)
    if (src / "ground_truth").is_dir():
        (dst / "ground_truth").symlink_to(src / "ground_truth")
    return dst


def test_magnetic_tile_small_export_beats_chance(shared_data, tmp_path):
    pytest.importorskip("torch")
    from edgead.evaluate import evaluate
    from edgead.model import load_model
    from edgead.preprocess import PreprocessConfig
    from edgead_export.pipeline import ExportConfig, export_model

    src = shared_data / "magnetic_tile"
    if not src.is_dir():
        pytest.skip("magnetic_tile not present")
    data = _subset(src, tmp_path / "mt", n_train=80, n_test=20)
    out, manifest = export_model(ExportConfig(data=data, out=tmp_path / "model", coreset=0.05, progress=False, keep_fp32=True,
                                              preprocess=PreprocessConfig(input_size=(224, 224))))
    assert manifest["parity"]["fp32_vs_torch_max_rel_diff"] < 1e-3
    for precision in ("fp32", "int8"):
        result = evaluate(load_model(out, precision=precision), data)
        assert result["image_auroc"] > 0.75, (precision, result["image_auroc"])
        assert result["pixel_auroc"] > 0.7
