"""Shared fixtures: a synthetic MVTec-style dataset and small artifacts exported from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EDGEAD_SHARED_DATA", REPO.parent / "shared" / "data"))
SYNTH_SIZE = 128


def pytest_addoption(parser):
    parser.addoption("--monotonic-start", type=float, default=None, metavar="SECONDS",
                     help="make time.monotonic() start at SECONDS (e.g. 0: a machine that has just booted; "
                          "negative: the reference point Python leaves undefined)")


def pytest_configure(config):
    """``--monotonic-start``: code that takes some monotonic value for "long ago" (0.0, say) works
    on a machine up for days and fails on one that booted minutes ago; this shows it on any."""
    start = config.getoption("--monotonic-start")
    if start is not None:
        import time

        real, zero = time.monotonic, time.monotonic()
        time.monotonic = lambda: real() - zero + start  # before edgead binds it anywhere


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from edgead.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("synth") / "washer", n_train=30, n_test_good=10,
                         n_test_bad=12, size=SYNTH_SIZE, seed=0)


@pytest.fixture(scope="session")
def synthetic_images(synth_root) -> dict[str, list[Path]]:
    good = sorted((synth_root / "test" / "good").glob("*.png"))
    bad = sorted(p for p in (synth_root / "test").glob("*/*.png") if p.parent.name != "good")
    return {"good": good, "bad": bad}


def _export(synth_root: Path, out: Path, method: str, **kw) -> Path:
    pytest.importorskip("torch")
    from edgead.preprocess import PreprocessConfig
    from edgead_export.pipeline import ExportConfig, export_model

    cfg = ExportConfig(data=synth_root, out=out, method=method, preprocess=PreprocessConfig(input_size=(SYNTH_SIZE, SYNTH_SIZE)),
                       coreset=0.1, progress=False, threads=2, **{"calib_images": 16, "keep_fp32": True, **kw})
    return export_model(cfg)[0]


@pytest.fixture(scope="session")
def model_dir(synth_root, tmp_path_factory) -> Path:
    """A PatchCore artifact (Lite0, 128 px) exported from the synthetic good parts, scored by the
    paper's reweighted maximum (the tests of the default rule, top-k mean, use topk_int8_model_dir)."""
    return _export(synth_root, tmp_path_factory.mktemp("models") / "washer-patchcore", "patchcore",
                   image_score="reweighted")


@pytest.fixture(scope="session")
def padim_model_dir(synth_root, tmp_path_factory) -> Path:
    return _export(synth_root, tmp_path_factory.mktemp("models") / "washer-padim", "padim", padim_dim=64)


@pytest.fixture(scope="session")
def simplenet_model_dir(synth_root, tmp_path_factory) -> Path:
    """A SimpleNet artifact: a short seeded fit (200 steps) that separates the synthetic parts."""
    return _export(synth_root, tmp_path_factory.mktemp("models") / "washer-simplenet", "simplenet",
                   simplenet_steps=200, simplenet_batch=512)


@pytest.fixture(scope="session")
def spade_model_dir(synth_root, tmp_path_factory) -> Path:
    return _export(synth_root, tmp_path_factory.mktemp("models") / "washer-spade", "spade", spade_k=5,
                   spade_map_images=3)


@pytest.fixture(scope="session")
def topk_int8_model_dir(synth_root, tmp_path_factory) -> Path:
    """PatchCore scored by the mean of the 5 largest patch distances, exported as when INT8 passes
    parity (the FP32 backbone left out): one export for the tests of either."""
    pytest.importorskip("torch")
    import edgead_export.pipeline as pipeline

    real = pipeline.calibrate

    def int8_default(*args, **kwargs):
        report = real(*args, **kwargs)
        report["default_precision"] = "int8"
        return report

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "calibrate", int8_default)
        return _export(synth_root, tmp_path_factory.mktemp("models") / "washer-topk", "patchcore", keep_fp32=False,
                       calib_images=8, image_score="topk_mean", topk=5)


@pytest.fixture()
def tampered_model_dir(model_dir, tmp_path) -> Path:
    """A copy of model_dir with one byte of the memory bank changed."""
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(model_dir, copy)
    bank = copy / "memory.q8.npz"
    data = bytearray(bank.read_bytes())
    data[-7] ^= 0x01
    bank.write_bytes(bytes(data))
    return copy


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    return SHARED_DATA
