"""The INT8 backbone computes the same integers on every CPU, so a model scores on a Pi what it
scored on the workstation that exported it and set its threshold.

The reference is the demo model's image scores recorded on arm64 (Debian bookworm, a Pi 5's
Cortex-A76 emulated: onnxruntime's SDOT kernels; deploy/arm64/check.sh). With onnxruntime's x86-only
NCHWc layout the float stem convolution rounded differently here, single quantized values moved
one step and the scores differed by up to 5e-3 relative; without it they agree to ~1e-7.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgead.backbone import Backbone, session_options
from edgead.images import read_image
from edgead.model import load_model

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "edgead" / "demo_model"
RECORD = json.loads((Path(__file__).parent / "data" / "arm64-demo-int8-scores.json").read_text())


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """The synthetic parts the arm64 record scored, regenerated (the generator is seeded)."""
    from edgead.synthetic import write_dataset

    root = tmp_path_factory.mktemp("portable")
    data = write_dataset(root / "washer", n_train=30, n_test_good=8, n_test_bad=8, size=128, seed=0)
    out = {}
    for img in sorted((data / "test").glob("*/*.png")):
        out[f"{img.parent.name}-{img.name}"] = img
    return out


def test_demo_int8_scores_match_the_arm64_record(images):
    assert sorted(images) == sorted(RECORD["scores"])
    model = load_model(DEMO, "int8", 1)
    assert model.threshold == pytest.approx(RECORD["threshold"], rel=1e-12)
    frames = {name: read_image(path) for name, path in images.items()}
    # the generator's drawing can round a pixel differently under another numpy/OpenCV build (one
    # of the 16 on arm64's numpy 1.24): only the parts drawn exactly as recorded are compared
    same = {n: f for n, f in frames.items() if hashlib.sha256(f.tobytes()).hexdigest()[:16] == RECORD["pixels_sha256"][n]}
    assert len(same) >= 12, f"only {len(same)} of {len(frames)} synthetic parts drawn as recorded"
    worst = 0.0
    for name, frame in same.items():
        arm_score, arm_decision = RECORD["scores"][name]
        result = model.score(frame, with_map=False)
        worst = max(worst, abs(result.score - arm_score) / abs(arm_score))
        assert result.decision == arm_decision, name
    # float rounding of the ops after the last integer layer and of the search, as for FP32
    # (measured 9e-8); one flipped quantized value anywhere in the backbone gives ~1e-3
    assert worst <= 1e-5


def test_int8_backbone_takes_the_path_every_cpu_takes(images):
    """Bit-identical to onnxruntime without layout transforms (what arm64 computes: NCHWc is x86's)."""
    model = load_model(DEMO, "int8", 1)
    x = np.concatenate([model.inputs(read_image(p))[0].copy() for p in list(images.values())[:4]])
    onnx_file = DEMO / "backbone.int8.onnx"
    opts = session_options(1)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    plain = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
    want = plain.run(None, {plain.get_inputs()[0].name: x})[0]
    np.testing.assert_array_equal(Backbone(onnx_file, 1, integer=True)(x), want)
