"""The one export configuration: the command line, --auto specs and the manifest all go through it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgead.demo import DEMO_MODEL
from edgead.errors import ConfigError
from edgead.manifest import parse_manifest

pytest.importorskip("torch")
from edgead_export import config as export_config  # noqa: E402
from edgead_export.cli import build_parser  # noqa: E402
from edgead_export.config import ExportConfig  # noqa: E402

# a value other than the default for every field
EVERY_FIELD = dict(
    data=Path("/data/washer"), out=Path("/models/washer"), method="padim", backbone="efficientnet-lite1",
    taps=[2, 4, "s8"], input_size=(256, 320), resize_mode="letterbox", interpolation="linear",
    photometric="equalize", roi=(0.1, 0.05, 0.8, 0.9), tile_grid=(2, 3), tile_overlap=0.2, tile_merge="max",
    tile_banks="per_tile", orientations="flips", coreset=2000, coreset_max=None, proj_dim=None, num_neighbors=5,
    image_score="reweighted", topk=40, target_dim=96, padim_dim=64, padim_dtype="float32", bank_dtype="float16",
    simplenet_hidden=64, simplenet_noise=0.05, simplenet_steps=300, simplenet_batch=256, spade_k=10,
    spade_map_images=2,
    keep_fp32=True, hnsw="yes", holdout=0.2, min_holdout=3, target_frr=0.02, folds=3, fold_order="random", calib_images=16, int8_float_blocks=True, map_sigma=2.5, seed=7,
    val_defects=Path("/data/defects"), name="line-3", threads=4, tar=True, progress=False,
)


def test_every_field_is_set_by_the_table():
    assert set(EVERY_FIELD) == set(ExportConfig.model_fields)
    cfg = ExportConfig(**EVERY_FIELD)
    for field, info in ExportConfig.model_fields.items():
        assert getattr(cfg, field) != info.default, field


def test_config_to_command_line_and_back():
    cfg = ExportConfig(**EVERY_FIELD)
    argv = export_config.to_args(cfg)
    assert export_config.from_args(build_parser().parse_args(argv)) == cfg
    pixels = cfg.updated(roi=(10, 20, 300, 200), coreset=0.05, coreset_max=500)
    assert export_config.from_args(build_parser().parse_args(export_config.to_args(pixels))) == pixels
    defaults = ExportConfig(data=Path("d"), out=Path("o"))
    assert export_config.from_args(build_parser().parse_args(["--data", "d", "--out", "o"])) == defaults


def test_every_field_has_one_option():
    flags = [a.option_strings[0] for a in build_parser()._actions if a.dest in ExportConfig.model_fields]
    assert len(flags) == len(set(flags)) == len(ExportConfig.model_fields)


def test_config_to_manifest_and_back():
    cfg = ExportConfig(**EVERY_FIELD)
    manifest = json.loads((DEMO_MODEL / "manifest.json").read_text())
    manifest["export"] = json.loads(json.dumps(cfg.manifest_section()))  # as written to disk
    run = {f: getattr(cfg, f) for f in ExportConfig.model_fields if f not in export_config.stored_fields()}
    assert set(run) == {"data", "out", "val_defects", "name", "threads", "tar", "progress"}
    assert ExportConfig.from_manifest(parse_manifest(manifest), **run) == cfg


def test_config_to_spec_and_back():
    cfg = ExportConfig(**EVERY_FIELD)
    base = ExportConfig(**{f: getattr(cfg, f) for f in ExportConfig.model_fields
                           if f not in export_config.stored_fields()})
    assert base.with_spec(export_config.spec_of(cfg)) == cfg
    with pytest.raises(ConfigError, match="size: size '100'"):
        base.with_spec("size=100")
    with pytest.raises(ConfigError, match="topk: expected 1 or more"):
        base.with_spec("topk=0")


def test_old_manifest_gives_the_settings_it_recorded():
    """An artifact without an export section (the demo model): its settings, where it recorded them."""
    manifest = parse_manifest(json.loads((DEMO_MODEL / "manifest.json").read_text()))
    cfg = ExportConfig.from_manifest(manifest, data=Path("d"), out=Path("o"))
    assert cfg.input_size == (128, 128) and cfg.taps == [4, 10] and cfg.coreset == 0.1
    assert cfg.coreset_max == 20000 and cfg.image_score == "reweighted" and cfg.tiling.grid == (1, 1)
    assert cfg.preprocess == manifest.preprocess


def test_refit_keeps_the_image_score_rule(tmp_path, monkeypatch):
    """`bench --resolutions` refits a topk_mean model as topk_mean (it was refitted as reweighted)."""
    from edgead.artifact import read_manifest, update_manifest
    from edgead_export import pipeline
    from edgead_export.refit import write_refit_artifact

    copy = tmp_path / "topk"
    shutil.copytree(DEMO_MODEL, copy)
    pc = json.loads((copy / "manifest.json").read_text())["patchcore"]
    update_manifest(copy, patchcore=dict(pc, image_score={"rule": "topk_mean", "k": 40}, coreset_max=None))
    seen = []
    monkeypatch.setattr(pipeline, "export_model", lambda cfg: (seen.append(cfg), (tmp_path / "out", {}))[1])
    write_refit_artifact(read_manifest(copy), tmp_path / "images", 160, tmp_path / "out", 3)
    cfg = seen[0]
    assert cfg.image_score == "topk_mean" and cfg.topk == 40
    assert cfg.coreset_max is None and cfg.coreset == 0.1 and cfg.taps == [4, 10]
    assert cfg.preprocess.input_size == (160, 160) and cfg.threads == 3 and cfg.data == tmp_path / "images"


def test_exported_manifest_records_its_config(model_dir):
    from edgead.artifact import read_manifest

    manifest = read_manifest(model_dir)
    cfg = ExportConfig.from_manifest(manifest, data=Path("d"), out=Path("o"))
    assert cfg.input_size == (128, 128) and cfg.coreset == 0.1 and cfg.keep_fp32 and cfg.calib_images == 16
    assert cfg.preprocess == manifest.preprocess and cfg.tiling == manifest.tiling


def test_export_cli_refuses_bad_values_with_the_option(tmp_path, capsys):
    from edgead.cli import main as cli_main

    for argv, expected in ((["--coreset", "0"], "--coreset: expected a ratio"),
                           (["--coreset-max", "-3"], "--coreset-max: expected a positive number"),
                           (["--tiles", "2x2", "--tile-overlap", "0.95"], "tile overlap 0.95"),
                           (["--holdout", "x"], "--holdout: Input should be a valid number")):
        assert cli_main(["export", "--data", str(tmp_path), "--out", str(tmp_path / "o"), *argv]) == 2
        assert expected in capsys.readouterr().err


def test_default_export_writes_the_top_k_mean_image_score(tmp_path):
    """The default image score (chosen on the real development sets, docs/benchmarks.md "Image
    score rule") is what an export with no --image-score writes into the manifest; an older
    manifest that recorded no rule still reads back as the reweighted maximum it was served with."""
    from edgead.artifact import ArtifactWriter
    from edgead_export.pipeline import write_scorer_files

    cfg = ExportConfig(data=tmp_path, out=tmp_path / "model", progress=False)
    assert (cfg.image_score, cfg.topk) == ("topk_mean", 60)
    feats = np.random.default_rng(0).normal(size=(4, 8, 4, 4)).astype(np.float32)
    manifest: dict = {}
    with ArtifactWriter(cfg.out) as writer:
        write_scorer_files(cfg, writer, feats, manifest, graph=None)
        staged = {p.name for p in writer.staging.iterdir()}
    assert manifest["patchcore"]["image_score"] == {"rule": "topk_mean", "k": 60}
    assert not any(name.endswith("knn.npy") for name in staged)  # no support sets for the top-k mean
    legacy = parse_manifest(json.loads((DEMO_MODEL / "manifest.json").read_text()))
    assert ExportConfig.from_manifest(legacy, data=Path("d"), out=Path("o")).image_score == "reweighted"


def test_whole_preprocess_with_another_resize_arithmetic_is_refused():
    """resize_dtype is not an export setting: a PreprocessConfig asking for the older uint8
    resize is refused, not silently exported with the float64 one."""
    from edgead.preprocess import PreprocessConfig

    cfg = ExportConfig(data=Path("d"), out=Path("o"), preprocess=PreprocessConfig(input_size=(64, 64)))
    assert cfg.preprocess.resize_dtype == "float64" and cfg.preprocess.input_size == (64, 64)
    with pytest.raises(ValueError, match="resize_dtype 'uint8'"):
        ExportConfig(data=Path("d"), out=Path("o"), preprocess=PreprocessConfig(resize_dtype="uint8"))
