"""Teaching on the device (edgead.teach): the same model as the export from the same images,
versions kept beside the served model, atomic install and rollback, a stopped teach changes nothing."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from edgead.artifact import manifest_sha256, read_manifest, read_manifest_json, verify_artifact
from edgead.images import list_images
from edgead.bank.store import load_bank
from edgead.teach import versions
from edgead.teach.features import TeachCancelled
from edgead.teach.refit import teach


@pytest.fixture()
def served(model_dir, tmp_path) -> Path:
    """A private copy of the session's PatchCore artifact, served from tmp_path/line/model."""
    dst = tmp_path / "line" / "model"
    shutil.copytree(model_dir, dst)
    return dst


def _bank(path: Path) -> np.ndarray:
    return load_bank(path, read_manifest_json(path)["files"])[0]


def _same_false_rejects(a, b, rel: float) -> None:
    """The same false-reject records: counts and fold settings equal, the rates and threshold close."""
    for p, ra in a.false_rejects.items():
        rb = b.false_rejects[p]
        assert (rb.good_images, rb.rejected, rb.folds, rb.fold_order, rb.target_frr, rb.confidence) == \
            (ra.good_images, ra.rejected, ra.folds, ra.fold_order, ra.target_frr, ra.confidence)
        assert rb.threshold == pytest.approx(ra.threshold, rel=rel) == b.thresholds[p]
        assert (rb.expected_frr, rb.frr_upper) == pytest.approx((ra.expected_frr, ra.frr_upper))


def test_teach_from_the_export_images_gives_the_exports_model(served, synth_root):
    """Same images, same backbone (the artifact's FP32 graph in onnxruntime vs torch at export):
    the same bank rows and the same thresholds."""
    res = teach(served, list_images(synth_root / "train" / "good"), mode="new", precision="fp32", threads=2)
    exported, taught = _bank(served), _bank(res.path)
    assert taught.shape == exported.shape
    # the same rows: each taught row is an exported one (int8 bank: within quantization noise);
    # the greedy order may swap rows whose distances tie to float rounding
    d2 = ((taught[:, None, :] - exported[None]) ** 2).sum(-1)
    nearest = d2.argmin(1)
    assert len(set(nearest.tolist())) == len(exported)
    assert np.sqrt(d2.min(1)).max() < 0.01 * np.linalg.norm(exported, axis=1).min()
    a, b = read_manifest(served), read_manifest(res.path)
    assert set(b.thresholds) == set(a.thresholds) == {"fp32", "int8"}
    # every precision's threshold, the default's from out-of-fold scores for the export's target rate
    assert a.false_rejects and set(b.false_rejects) == set(a.false_rejects) == {a.default_precision}
    for p in a.thresholds:
        assert b.thresholds[p] == pytest.approx(a.thresholds[p], rel=1e-4)
    assert b.threshold == pytest.approx(a.threshold, rel=1e-4)
    assert b.threshold_rule == a.threshold_rule
    _same_false_rejects(a, b, rel=1e-4)
    assert b.lineage.parent_version == a.model_version and b.lineage.mode == "new"
    assert b.training_images == a.training_images


def test_features_beyond_the_budget_spill_to_disk_and_fit_the_same_bank(served, synthetic_images):
    frames = synthetic_images["good"]
    ram = teach(served, frames, mode="add", threads=1)
    disk = teach(served, frames, mode="add", threads=1, memory_budget_mb=0.01)
    assert not read_manifest(ram.path).patchcore.model_extra["features_on_disk"]
    assert read_manifest(disk.path).patchcore.model_extra["features_on_disk"]
    assert np.array_equal(_bank(ram.path), _bank(disk.path))
    assert not list(versions.store_dir(served).glob(".teach-features-*"))   # scratch removed


def test_add_grows_the_bank_boundedly_and_keeps_the_threshold(served, synthetic_images):
    parent = read_manifest(served)
    res = teach(served, synthetic_images["good"][:3], mode="add", result_ids=[4, 7], added="results 4, 7")
    child = read_manifest(res.path)
    h, w = parent.backbone.feature_grid
    # the frames' patches farther out than the bank's rows lie apart join it, the rest add nothing
    assert parent.bank_size < child.bank_size < parent.bank_size + 3 * h * w
    assert child.threshold == parent.threshold and child.thresholds == parent.thresholds
    assert child.lineage.result_ids == [4, 7] and child.lineage.added == "results 4, 7"
    assert manifest_sha256(served) == manifest_sha256(versions.store_dir(served) / parent.model_version)


def test_install_rollback_and_listing(served, synthetic_images):
    original = read_manifest(served).model_version
    res = teach(served, synthetic_images["good"][:2], mode="add")
    assert read_manifest(served).model_version == original          # taught, not served yet
    versions.install(served, res.version)
    verify_artifact(served)
    assert read_manifest(served).model_version == res.version
    listed = versions.list_versions(served)
    assert [v.version for v in listed] == [original, res.version]
    assert [v.current for v in listed] == [False, True]
    assert listed[1].parent == original
    assert versions.rollback(served) == original
    assert read_manifest(served).model_version == original
    verify_artifact(served)
    assert versions.rollback(served, to=res.version) == res.version
    with pytest.raises(versions.VersionError):
        versions.rollback(served, to="nope")


def test_only_the_last_k_versions_are_kept_and_dead_teaches_are_swept(served, synthetic_images):
    store = versions.store_dir(served)
    for leftover in (".x.tmp-dead", ".teach-features-dead"):   # what a teach killed with SIGKILL leaves
        (store / leftover).mkdir(parents=True)
        (store / leftover / "rows.npy").write_bytes(b"partial")
    for _ in range(3):
        res = teach(served, synthetic_images["good"][:1], mode="add", keep=2)
        versions.install(served, res.version)
    kept = versions.list_versions(served)
    assert len(kept) == 2 and kept[-1].version == res.version and kept[-1].current
    assert sorted(p.name for p in store.iterdir()) == sorted([".lock", *(v.version for v in kept)])


def test_a_stopped_teach_changes_nothing_served(served, synthetic_images):
    before = manifest_sha256(served)
    stop = threading.Event()

    def progress(stage, done, total):
        stop.set()      # the operator stops it after the first frame

    with pytest.raises(TeachCancelled):
        teach(served, synthetic_images["good"], mode="new", stop=stop, progress=progress)
    assert manifest_sha256(served) == before
    store = versions.store_dir(served)
    assert [v.version for v in versions.list_versions(served)] == [read_manifest(served).model_version]
    assert not [p for p in store.iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_teach_refuses_bad_requests(served, padim_model_dir, tmp_path, synthetic_images):
    from edgead.errors import EdgeadError

    with pytest.raises(EdgeadError, match="at least one"):
        teach(served, [], mode="new")
    with pytest.raises(EdgeadError, match="need at least"):
        teach(served, synthetic_images["good"][:3], mode="new")   # too few to hold out goods
    padim = tmp_path / "padim"
    shutil.copytree(padim_model_dir, padim)
    with pytest.raises(EdgeadError, match="PatchCore"):
        teach(padim, synthetic_images["good"][:2], mode="add")


def test_padim_refits_from_frames(padim_model_dir, tmp_path, synth_root):
    padim = tmp_path / "padim"
    shutil.copytree(padim_model_dir, padim)
    res = teach(padim, list_images(synth_root / "train" / "good"), mode="new", precision="fp32", threads=2)
    a, b = read_manifest(padim), read_manifest(res.path)
    assert a.false_rejects and set(b.false_rejects) == set(a.false_rejects)
    for p in a.thresholds:
        assert b.thresholds[p] == pytest.approx(a.thresholds[p], rel=1e-3)
    assert b.threshold_rule == a.threshold_rule
    _same_false_rejects(a, b, rel=1e-3)


def test_cli_teach_list_and_rollback(served, synthetic_images, tmp_path, capsys):
    import json

    from edgead.cli import main

    folder = tmp_path / "variant"
    folder.mkdir()
    for p in synthetic_images["good"][:2]:
        shutil.copy(p, folder / p.name)
    original = read_manifest(served).model_version
    assert main(["teach", "--model", str(served), "--folder", str(tmp_path / "nope")]) == 2
    assert "nope: no such folder" in capsys.readouterr().err
    assert main(["model", "rollback", "--model", str(served)]) == 2          # nothing older kept
    assert "no version older" in capsys.readouterr().err
    assert main(["teach", "--model", str(served), "--folder", str(folder), "--mode", "add", "--json"]) == 0
    taught = json.loads(capsys.readouterr().out)
    assert taught["installed"] and read_manifest(served).model_version == taught["version"]
    assert read_manifest(served).lineage.added == str(folder)
    assert main(["model", "list", "--model", str(served), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["current"]) for v in listed] == [(original, False), (taught["version"], True)]
    assert main(["model", "rollback", "--model", str(served)]) == 0
    assert read_manifest(served).model_version == original
