"""Tiling, ROI proposal and fit/serve preprocessing parity (ROI + letterbox + tiles)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgead.cli import main as cli_main
from edgead.errors import ConfigError
from edgead.preprocess import PreprocessConfig, map_to_frame, preprocess
from edgead.synthetic import make_part
from edgead.tiling import TilingConfig, frame_inputs, merge_maps, parse_grid, tile_boxes

TILED = dict(pre=PreprocessConfig(input_size=(64, 64), resize_mode="letterbox", roi=(0.05, 0.05, 0.9, 0.9),
                                  roi_units="fraction"),
             tiling=TilingConfig(grid=(2, 2), overlap=0.25))


# -- geometry and merge (numpy only) -----------------------------------------------------------

def test_tile_boxes_cover_the_region_with_overlap():
    region = (10, 20, 300, 200)
    boxes = tile_boxes(region, (2, 3), 0.25)
    assert len(boxes) == 6
    covered = np.zeros((240, 320), bool)
    for x, y, w, h in boxes:
        assert x >= 10 and y >= 20 and x + w <= 310 and y + h <= 220
        covered[y : y + h, x : x + w] = True
    assert covered[20:220, 10:310].all() and covered.sum() == 300 * 200
    (x0, _, w0, _), (x1, _, _, _) = boxes[0], boxes[1]
    assert x1 < x0 + w0  # neighbours overlap
    assert boxes[3][1] > boxes[0][1]  # row-major


def test_one_tile_is_the_untiled_preprocess():
    img = np.random.default_rng(0).integers(0, 255, (90, 150, 3), dtype=np.uint8)
    pre = TILED["pre"]
    x, geo = preprocess(img, pre)
    xt, geos = frame_inputs(img, pre, TilingConfig())
    np.testing.assert_array_equal(x, xt)
    assert geos == [geo]
    amap = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    np.testing.assert_allclose(merge_maps(amap[None], geos), map_to_frame(amap, geo))


def test_tiles_share_one_tone_curve():
    """The ROI's tone curve, not one per tile: a dark tile stays darker than a bright one, and
    untiled and tiled inputs get the same curve."""
    frame = np.zeros((100, 200), np.uint8)
    frame[:, :100] = np.random.default_rng(0).integers(20, 60, (100, 100))  # dark left half
    frame[:, 100:] = np.random.default_rng(1).integers(150, 230, (100, 100))  # bright right half
    pre = PreprocessConfig(input_size=(64, 64), photometric="equalize")
    x, _ = frame_inputs(frame, pre, TilingConfig(grid=(1, 2), overlap=0.0))
    assert x[0].mean() < -0.5 < 0.5 < x[1].mean()  # per-tile equalisation would give both ~0.1
    whole, _ = preprocess(frame, pre)
    np.testing.assert_array_equal(frame_inputs(frame, pre, TilingConfig())[0], whole)


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_merge_puts_a_tile_peak_at_its_frame_place(mode):
    frame = np.zeros((200, 300, 3), np.uint8)
    pre = PreprocessConfig(input_size=(64, 64))
    tiling = TilingConfig(grid=(2, 2), overlap=0.25, merge=mode)
    _, geos = frame_inputs(frame, pre, tiling)
    maps = np.zeros((4, 64, 64), np.float32)
    maps[3, 40:44, 20:24] = 1.0  # bottom-right tile, left-of-centre
    merged = merge_maps(maps, geos, mode)
    assert merged.shape == (200, 300)
    y, x = np.unravel_index(np.argmax(merged), merged.shape)
    tx, ty, tw, th = geos[3].roi_box
    assert tx + 20 / 64 * tw <= x + 1 and x <= tx + 24 / 64 * tw + 1
    assert ty + 40 / 64 * th <= y + 1 and y <= ty + 44 / 64 * th + 1
    ones = merge_maps(np.ones((4, 64, 64), np.float32), geos, mode)
    np.testing.assert_allclose(ones, 1.0, atol=1e-6)  # overlaps averaged (or maxed), not summed


def test_tiling_config_validation_and_roundtrip():
    cfg = TilingConfig(grid=(2, 3), overlap=0.2, merge="max", banks="per_tile")
    assert cfg.count == cfg.bank_count == 6
    from edgead.demo import DEMO_MODEL
    from edgead.manifest import parse_manifest

    manifest = json.loads((DEMO_MODEL / "manifest.json").read_text())
    shared = TilingConfig(grid=(2, 3), overlap=0.2, merge="max")  # the demo model has one bank
    assert parse_manifest(dict(manifest, tiling=json.loads(json.dumps(shared.to_dict())))).tiling == shared
    assert parse_manifest(dict(manifest, tiling=None)).tiling == TilingConfig()  # older manifests: untiled
    assert parse_grid("3") == (3, 3) and parse_grid("2x4") == (2, 4)
    for bad in (dict(grid=(0, 2)), dict(overlap=0.95), dict(merge="sum"), dict(banks="many")):
        with pytest.raises(ConfigError):
            TilingConfig(**bad)
    with pytest.raises(ConfigError):
        parse_grid("2by2")


# -- ROI proposal ----------------------------------------------------------------------------

def _part_on_belt(rng, frame=(240, 320), at=(60, 140)) -> np.ndarray:
    part, _ = make_part(rng, 96)
    noise = rng.normal(0, 3, (*frame, 3))
    canvas = np.clip(75 + noise, 0, 255).astype(np.uint8)
    y, x = at
    canvas[y : y + 96, x : x + 96] = part
    return canvas


def _propose_roi():
    pytest.importorskip("torch")  # edgead_export: workstation side
    from edgead_export.roi import propose_roi

    return propose_roi


def test_propose_roi_boxes_the_part_with_margin():
    propose_roi = _propose_roi()
    rng = np.random.default_rng(0)
    box, units = propose_roi([_part_on_belt(rng) for _ in range(8)])
    assert units == "px"
    x, y, w, h = box
    ring = (140 + 48 - 35, 60 + 48 - 35, 70, 70)  # the washer ring (radius 0.36 * 96) inside the pasted part
    assert x <= ring[0] and y <= ring[1] and x + w >= ring[0] + ring[2] and y + h >= ring[1] + ring[3]
    assert w * h < 0.25 * 240 * 320


def test_propose_roi_none_when_part_fills_the_frame_and_fraction_for_mixed_sizes():
    propose_roi = _propose_roi()
    rng = np.random.default_rng(1)
    fill = [np.clip(rng.normal(128, 40, (100, 100, 3)), 0, 255).astype(np.uint8) for _ in range(4)]
    assert propose_roi(fill) is None
    mixed = [_part_on_belt(rng), _part_on_belt(rng, frame=(480, 640), at=(120, 280))]
    mixed[1] = cv2.resize(_part_on_belt(rng), (640, 480))
    box, units = propose_roi(mixed)
    assert units == "fraction" and all(0 <= v <= 1 for v in box)


# -- exported tiled models -------------------------------------------------------------------

def _export_tiled(synth_root: Path, out: Path, **kw) -> Path:
    pytest.importorskip("torch")
    from edgead_export.pipeline import ExportConfig, export_model

    cfg = ExportConfig(data=synth_root, out=out, preprocess=kw.pop("pre", TILED["pre"]),
                       tiling=kw.pop("tiling", TILED["tiling"]), coreset=0.1, progress=False, threads=2,
                       calib_images=8, keep_fp32=True, **kw)
    return export_model(cfg)[0]


@pytest.fixture(scope="session")
def tiled_model_dir(synth_root, tmp_path_factory) -> Path:
    """PatchCore, 2x2 tiles of 64 px, letterbox, fractional ROI, one shared bank."""
    return _export_tiled(synth_root, tmp_path_factory.mktemp("models") / "washer-tiled")


@pytest.fixture(scope="session")
def per_tile_model_dir(synth_root, tmp_path_factory) -> Path:
    """Same, one bank per tile position, ROI proposed, bank capped and indexed with hnswlib."""
    return _export_tiled(synth_root, tmp_path_factory.mktemp("models") / "washer-per-tile", roi_auto=True,
                         tiling=TilingConfig(grid=(2, 2), overlap=0.25, banks="per_tile"),
                         coreset_max=400, hnsw="yes")


def test_fit_and_serve_cut_the_tiles_the_config_describes(tiled_model_dir, tmp_path):
    """Export (fit) and the runtime (serve) give the backbone the same tensors, and both are the
    tiles worked out here by hand: crop, letterbox with the mean colour, normalise."""
    from edgead.model import load_model
    from edgead_export.extract import load_batches

    model = load_model(tiled_model_dir, precision="fp32")
    assert model.preprocess_cfg == TILED["pre"] and model.tiling == TILED["tiling"]
    frame = np.random.default_rng(3).integers(0, 256, (128, 192, 3), dtype=np.uint8)  # H x W, wider than tall
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    # ROI: 5 % .. 95 % of the frame, x 9.6..182.4 -> 10..182, y 6.4..121.6 -> 6..122; two tiles a
    # side overlapping by a quarter tile: side 172 / 1.75 -> 98 px wide (starts 10 and 10 + 73.7),
    # 116 / 1.75 -> 66 px tall (starts 6 and 6 + 49.7)
    boxes = [(10, 6, 98, 66), (84, 6, 98, 66), (10, 56, 98, 66), (84, 56, 98, 66)]
    # letterbox 98 x 66 into 64 x 64: scale 64/98, content 64 x 43, 10 px of padding above
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = np.empty((4, 3, 64, 64), np.float32)
    for i, (x, y, w, h) in enumerate(boxes):
        canvas = np.empty((64, 64, 3), np.float64)
        canvas[:] = np.round(255 * mean[::-1])  # BGR mean colour
        # resized unrounded (preprocess.RESIZE_DTYPES)
        canvas[10:53] = cv2.resize(frame[y : y + h, x : x + w].astype(np.float64), (64, 43), interpolation=cv2.INTER_AREA)
        expected[i] = ((canvas[:, :, ::-1] / 255.0 - mean) / std).transpose(2, 0, 1)

    serve, geometries = model.inputs(frame)
    fit = next(load_batches([tmp_path / "frame.png"], model.preprocess_cfg, batch_size=1, tiling=model.tiling))
    np.testing.assert_allclose(serve, expected, atol=1e-5)
    np.testing.assert_allclose(fit, expected, atol=1e-5)
    assert [g.roi_box for g in geometries] == boxes
    assert {g.content_box for g in geometries} == {(0, 10, 64, 43)}


@pytest.mark.parametrize("centre", [(36, 38), (92, 38), (36, 90), (92, 90)])  # on the ring, one tile each
def test_a_defect_in_each_tile_lights_up_its_place(tiled_model_dir, centre):
    from edgead.model import load_model

    model = load_model(tiled_model_dir, precision="fp32")
    img, _ = make_part(np.random.default_rng(7), 128)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(mask, centre, 6, 255, -1)
    img[mask > 0] = (20, 60, 120)
    feats, geometries, _ = model.features(img)
    score, maps, _ = model.score_features(feats)
    tile_peaks = maps.reshape(4, -1).max(1)
    x, y, w, h = geometries[int(np.argmax(tile_peaks))].roi_box
    assert x <= centre[0] < x + w and y <= centre[1] < y + h
    frame_map = model.score(img).anomaly_map
    assert frame_map.shape == img.shape[:2]
    py, px = np.unravel_index(np.argmax(frame_map), frame_map.shape)
    assert np.hypot(px - centre[0], py - centre[1]) <= 10
    assert score > model.threshold


def test_per_tile_banks_roi_auto_and_cap(per_tile_model_dir, synth_root, capsys):
    m = json.loads((per_tile_model_dir / "manifest.json").read_text())
    assert m["tiling"]["banks"] == "per_tile" and m["roi_source"] == "auto" and m["preprocess"]["roi"]
    assert {f"memory.t{i}.q8.npz" for i in range(4)} | {f"hnsw.t{i}.bin" for i in range(4)} <= set(m["files"])
    assert m["bank_size"] <= 400
    assert cli_main(["eval", "--model", str(per_tile_model_dir), "--data", str(synth_root), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["image_auroc"] > 0.9


def test_sequential_tiles_equal_batched(tiled_model_dir, synthetic_images):
    from edgead.images import read_image
    from edgead.model import load_model

    img = read_image(synthetic_images["bad"][0])
    batched = load_model(tiled_model_dir, precision="fp32", batch_tiles=True).score(img)
    one_by_one = load_model(tiled_model_dir, precision="fp32", batch_tiles=False).score(img)
    assert one_by_one.score == pytest.approx(batched.score, rel=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--tiles", "0x2"], "tile grid"),
    (["--tiles", "2x2", "--tile-overlap", "0.95"], "tile overlap"),
    (["--budget-ms", "50"], "need --auto"),
    (["--auto", "--candidates", "size=224;depth=3"], "depth=3"),
    (["--coreset-max", "-1"], "--coreset-max"),
])
def test_bad_tiling_and_auto_flags_exit_2(argv, message, synth_root, tmp_path, capsys):
    pytest.importorskip("torch")  # without it, export names the missing extra first (test_packaging)
    try:
        rc = cli_main(["export", "--data", str(synth_root), "--out", str(tmp_path / "m"), *argv])
    except SystemExit as exc:  # argparse's own refusals
        rc = exc.code
    assert rc == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("which", ["tiled_model_dir", "per_tile_model_dir"])
def test_topk_mean_is_over_the_whole_frame(which, request, synthetic_images, monkeypatch):
    from edgead.images import read_image
    from edgead.model import load_model
    from edgead.scorer.search import int8_layout

    from edgead.scorer.search import int8 as int8_search

    monkeypatch.setattr(int8_layout, "DEFAULT_BLOCK_ROWS", 32)  # the prefix path of topk_nn
    monkeypatch.setattr(int8_search, "_WIDE_TOPK", 1)           # ... whatever k is against the patches
    model = load_model(request.getfixturevalue(which))
    for bank in model.scorer.banks:
        bank.rule, bank.topk = "topk_mean", 7
    img = read_image(synthetic_images["bad"][0])
    feats = model.features(img)[0]
    every = model.scorer.patch_scores(feats).ravel()
    expected = float(np.sort(every)[-7:].mean())  # the 7 largest patch distances of all tiles
    assert model.score(img).score == pytest.approx(expected, rel=1e-5)  # decision path (topk_nn)
    assert model.score_features(feats, with_map=False)[0] == pytest.approx(expected, rel=1e-5)  # full search
