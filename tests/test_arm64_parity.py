"""deploy/arm64/parity.py: scores written on one machine, compared with another's."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "edgead" / "demo_model"


def _parity():
    spec = importlib.util.spec_from_file_location("arm64_parity", REPO / "deploy" / "arm64" / "parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The demo model's parity file on a few synthetic parts."""
    from edgead.synthetic import write_dataset

    root = tmp_path_factory.mktemp("parity")
    data = write_dataset(root / "parts", n_train=0, n_test_good=3, n_test_bad=3, size=128, seed=1)
    images = root / "images"
    images.mkdir()
    for img in sorted((data / "test").glob("*/*.png")):
        shutil.copy(img, images / f"{img.parent.name}-{img.name}")
    out = root / "ref.json"
    assert _parity().main(["score", "--images", str(images), "--out", str(out), str(DEMO)]) == 0
    return out


def test_score_writes_every_image_and_the_machine(scored):
    data = json.loads(scored.read_text())
    assert data["machine"]["onnxruntime"] and data["machine"]["machine"]
    demo = data["models"]["demo_model"]["int8"]
    assert len(demo["scores"]) == 6 and demo["threshold"] > 0
    assert {d for _, d in demo["scores"].values()} <= {"ok", "reject"}


def test_compare_passes_on_itself_and_writes_the_table(scored, tmp_path):
    md = tmp_path / "parity.md"
    assert _parity().main(["compare", str(scored), str(scored), "--markdown", str(md)]) == 0
    assert "| demo_model | int8 | int8 | 6 (" in md.read_text()


def test_compare_fails_on_a_drifted_score_or_a_flipped_decision(scored, tmp_path):
    parity = _parity()
    ref = json.loads(scored.read_text())
    name = sorted(ref["models"]["demo_model"]["int8"]["scores"])[0]

    drifted = json.loads(scored.read_text())
    drifted["models"]["demo_model"]["int8"]["scores"][name][0] *= 1.01
    rows = parity.compare(ref, drifted, fp32_tol=1e-3, int8_tol=1e-3)
    assert not rows[0]["ok"] and rows[0]["max_rel_diff"] == pytest.approx(0.01)

    flipped = json.loads(scored.read_text())
    entry = flipped["models"]["demo_model"]["int8"]["scores"][name]
    entry[1] = "ok" if entry[1] == "reject" else "reject"
    rows = parity.compare(ref, flipped, fp32_tol=1e-3, int8_tol=1e-3)
    assert rows[0]["decisions_differ"] == [name] and not rows[0]["ok"]

    path = tmp_path / "flipped.json"
    path.write_text(json.dumps(flipped))
    assert parity.main(["compare", str(scored), str(path)]) == 1


def test_int8_search_equals_exact_search_on_the_scoring_machine(scored):
    """The certified int8 search's promise, recorded per machine: its image scores equal brute
    force's over the same features."""
    demo = json.loads(scored.read_text())["models"]["demo_model"]["int8"]
    assert demo["search"] == "int8" and set(demo["exact_scores"]) == set(demo["scores"])
    for name, (score, _) in demo["scores"].items():
        assert score == pytest.approx(demo["exact_scores"][name], rel=1e-6)


def test_compare_fails_when_the_int8_search_leaves_its_bound(scored):
    parity = _parity()
    ref = json.loads(scored.read_text())
    other = json.loads(scored.read_text())
    name = sorted(other["models"]["demo_model"]["int8"]["exact_scores"])[0]
    other["models"]["demo_model"]["int8"]["exact_scores"][name] *= 1.0001  # 1e-4: inside the 1e-3 parity
    rows = parity.compare(ref, other, fp32_tol=1e-3, int8_tol=1e-3)
    assert rows[0]["max_rel_diff"] == 0 and rows[0]["int8_search_vs_exact"] == pytest.approx(1e-4, rel=1e-3)
    assert not rows[0]["ok"]


def test_compare_fails_when_a_model_is_missing(scored):
    parity = _parity()
    ref = json.loads(scored.read_text())
    rows = parity.compare(ref, {"machine": ref["machine"], "models": {}}, 1e-3, 1e-3)
    assert rows == [{"model": "demo_model", "precision": "int8", "missing": True, "ok": False}]


def test_a_decision_may_differ_only_for_a_score_within_the_tolerance_of_the_threshold(scored):
    parity = _parity()
    ref = json.loads(scored.read_text())
    demo = ref["models"]["demo_model"]["int8"]
    name = sorted(demo["scores"])[0]
    demo["scores"][name][0] = demo["exact_scores"][name] = demo["threshold"] * (1 + 5e-5)  # inside 1e-4
    other = json.loads(json.dumps(ref))
    entry = other["models"]["demo_model"]["int8"]["scores"][name]
    entry[1] = "ok" if entry[1] == "reject" else "reject"
    rows = parity.compare(ref, other, fp32_tol=1e-3, int8_tol=1e-4)
    assert rows[0]["decisions_differ"] == [name] and rows[0]["decisions_differ_near_threshold"] == [name]
    assert rows[0]["ok"]
    rows = parity.compare(ref, other, fp32_tol=1e-3, int8_tol=1e-5)  # now 5 tolerances away
    assert rows[0]["decisions_differ_near_threshold"] == [] and not rows[0]["ok"]
