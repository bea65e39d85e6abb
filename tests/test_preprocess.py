"""Preprocessing: ROI, resize modes, normalisation and mapping maps back to the frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgead.errors import ConfigError
from edgead.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    STANDARD_MEAN,
    STANDARD_STD,
    PreprocessConfig,
    map_to_frame,
    preprocess,
    resize_to_input,
    roi_tone_curve,
    tone_curve,
)


def test_normalise_imagenet_rgb():
    img = np.zeros((64, 64, 3), np.uint8)
    img[..., 2] = 255  # red in BGR
    x, _ = preprocess(img, PreprocessConfig(input_size=(32, 32)))
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], (1 - 0.485) / 0.229, rtol=1e-5)  # R channel first
    np.testing.assert_allclose(x[0, 1], (0 - 0.456) / 0.224, rtol=1e-5)


def test_letterbox_keeps_aspect_and_pads_with_mean():
    img = np.full((100, 200, 3), 200, np.uint8)  # wide frame
    cfg = PreprocessConfig(input_size=(64, 64), resize_mode="letterbox")
    resized, geo = resize_to_input(img, cfg)
    cx, cy, cw, ch = geo.content_box
    assert (cw, ch) == (64, 32) and cy == 16
    x, _ = preprocess(img, cfg)
    assert np.abs(x[0, :, 0, :]).max() < 0.03  # padding normalises to ~0


def test_roi_fraction_and_map_back_to_frame():
    img = np.zeros((100, 200, 3), np.uint8)
    cfg = PreprocessConfig(input_size=(32, 32), roi=(0.5, 0.0, 0.5, 1.0), roi_units="fraction")
    _, geo = preprocess(img, cfg)
    assert geo.roi_box == (100, 0, 100, 100)
    frame_map = map_to_frame(np.ones((32, 32), np.float32), geo)
    assert frame_map.shape == (100, 200)
    assert frame_map[:, :100].max() == 0 and frame_map[:, 100:].min() == pytest.approx(1.0)


def test_grey_frames_accepted():
    x, _ = preprocess(np.full((50, 70), 128, np.uint8), PreprocessConfig(input_size=(32, 64)))
    assert x.shape == (1, 3, 32, 64)


@pytest.mark.parametrize("kw", [dict(input_size=(100, 224)), dict(resize_mode="crop"), dict(roi=(0, 0, -1, 5)),
                                dict(interpolation="cubic"), dict(photometric="clahe")])
def test_bad_config_is_refused(kw):
    with pytest.raises(ConfigError):
        PreprocessConfig(**kw)


def _as_read(preprocess: dict) -> PreprocessConfig:
    """The section as the runtime reads it from a manifest (the demo model's, this section replaced)."""
    import json

    from edgead.demo import DEMO_MODEL
    from edgead.manifest import parse_manifest

    manifest = json.loads((DEMO_MODEL / "manifest.json").read_text())
    return parse_manifest(dict(manifest, preprocess=json.loads(json.dumps(preprocess)))).preprocess


def test_config_roundtrip():
    cfg = PreprocessConfig(input_size=(64, 96), resize_mode="letterbox", roi=(1, 2, 30, 40), interpolation="linear")
    assert _as_read(cfg.to_dict()) == cfg
    # a manifest written before the field resized with INTER_AREA: it still does
    old = cfg.to_dict()
    del old["interpolation"]
    assert _as_read(old).interpolation == "area"
    cfg = PreprocessConfig(photometric="equalize")
    assert _as_read(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["photometric"]  # a manifest before the field: no tone curve, as it was fitted
    assert _as_read(old).photometric == "none"
    assert cfg.resize_dtype == "float64" and _as_read(cfg.to_dict()).resize_dtype == "float64"
    del old["resize_dtype"]  # a manifest before the field: resized in uint8, as it was fitted
    assert _as_read(old).resize_dtype == "uint8"


@pytest.mark.parametrize("shape, linear", [((90, 60, 3), True), ((129, 64, 3), False), ((32, 32, 3), True)])
def test_interpolation_modes(shape, linear):
    """"linear": bilinear up to a 2x shrink (here 64 -> 32 px wide is 2x, 129 -> 64 high is more),
    INTER_AREA beyond; "area": INTER_AREA whenever the image shrinks; both enlarge bilinearly."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    size = (64, 32)
    shrinks = shape[0] > size[0] or shape[1] > size[1]
    # uint8 (artifacts exported before resize_dtype): OpenCV's filters on uint8
    fast, _ = resize_to_input(img, PreprocessConfig(input_size=size, interpolation="linear", resize_dtype="uint8"))
    area, _ = resize_to_input(img, PreprocessConfig(input_size=size, interpolation="area", resize_dtype="uint8"))
    np.testing.assert_array_equal(fast, cv2.resize(img, size[::-1], interpolation=cv2.INTER_LINEAR if linear else cv2.INTER_AREA))
    np.testing.assert_array_equal(area, cv2.resize(img, size[::-1], interpolation=cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR))
    # float64: the area filter unrounded, bilinear in OpenCV's bit-exact fixed point
    fast, _ = resize_to_input(img, PreprocessConfig(input_size=size, interpolation="linear"))
    area, _ = resize_to_input(img, PreprocessConfig(input_size=size, interpolation="area"))
    exact_linear = cv2.resize(img, size[::-1], interpolation=cv2.INTER_LINEAR_EXACT)
    unrounded_area = cv2.resize(img.astype(np.float64), size[::-1], interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(fast, exact_linear if linear else unrounded_area)
    np.testing.assert_array_equal(area, unrounded_area if shrinks else exact_linear)


def _area_average(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """The exact area average (each output pixel the mean of the input it covers, partly covered
    pixels weighted by their share), in float64: the reference an unrounded INTER_AREA meets."""
    def weights(n_in: int, n_out: int) -> np.ndarray:
        edges = np.arange(n_out + 1) * n_in / n_out
        lo, hi = edges[:-1, None], edges[1:, None]
        px = np.arange(n_in)[None, :]
        return np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0, None) / (n_in / n_out)
    wy, wx = weights(img.shape[0], out_h), weights(img.shape[1], out_w)
    return np.stack([wy @ img[:, :, c].astype(np.float64) @ wx.T for c in range(img.shape[2])], axis=2)


def test_model_input_is_not_rounded_to_grey_levels():
    """What makes the INT8 backbone's input the same bits on x86 and arm64: the resize keeps the
    area average unrounded (OpenCV's uint8 INTER_AREA rounds it to whole grey levels, and which
    way a value near a half level goes depends on how the machine's build computes it)."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (337, 451, 3), dtype=np.uint8)  # a non-integer shrink both ways, under 2x
    want = _area_average(img, 224, 224)
    got, geo = resize_to_input(img, PreprocessConfig())
    assert got.dtype == np.float64 and geo.roi_box == (0, 0, 451, 337)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)  # OpenCV's area weights are float32: 5e-6
    old, _ = resize_to_input(img, PreprocessConfig(resize_dtype="uint8"))
    assert old.dtype == np.uint8 and np.abs(old - want).max() > 0.4  # rounded: up to half a level off
    # the model input follows the unrounded values
    x, _ = preprocess(img, PreprocessConfig())
    np.testing.assert_allclose(x[0, 0], (want[:, :, 2] / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], atol=1e-5)


def test_a_large_frame_is_reduced_by_whole_blocks_first():
    """More than twice the input per side: exact integer block means (here 3 x 3, the right and
    bottom edges' leftover pixels dropped), then the unrounded area resize of those."""
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (401, 613, 3), dtype=np.uint8)
    got, geo = resize_to_input(img, PreprocessConfig(input_size=(64, 96)))
    assert geo.roi_box == (0, 0, 612, 399)
    blocks = img[:399, :612].reshape(133, 3, 204, 3, 3).astype(np.int64).sum(axis=(1, 3))
    means = np.rint(blocks / 9).astype(np.uint8)  # never a tie with 9 pixels a block
    np.testing.assert_array_equal(got, cv2.resize(means.astype(np.float64), (96, 64), interpolation=cv2.INTER_AREA))
    # on a photograph's smooth shading the blocks change little against the frame's area average
    # (on white noise they do: a block straddling two output pixels counts in both)
    yy, xx = np.mgrid[0:401, 0:613]
    smooth = np.repeat((128 + 100 * np.sin(xx / 40.0) * np.cos(yy / 30.0))[..., None], 3, axis=2).astype(np.uint8)
    got, _ = resize_to_input(smooth, PreprocessConfig(input_size=(64, 96)))
    assert np.abs(got - _area_average(smooth[:399, :612], 64, 96)).max() < 1.0


def _dim_texture(shape=(90, 120)) -> np.ndarray:
    """A low-contrast grey texture (values 60..100) with a bright spot."""
    rng = np.random.default_rng(1)
    g = (80 + 20 * np.sin(np.arange(shape[1]) / 3.0)[None, :] + rng.normal(0, 4, shape)).clip(0, 255)
    g[40:50, 60:70] = 140
    return g.astype(np.uint8)


def test_equalize_is_cv2_equalizehist_on_grey():
    g = _dim_texture()
    lut = tone_curve(cv2.cvtColor(g, cv2.COLOR_GRAY2BGR), "equalize")
    np.testing.assert_array_equal(cv2.LUT(g, lut), cv2.equalizeHist(g))
    assert cv2.LUT(g, lut).max() == 255 and cv2.LUT(g, lut).min() == 0  # the full range is used
    assert tone_curve(g, "none") is None


def test_standardize_sets_mean_and_std():
    g = _dim_texture()
    out = cv2.LUT(g, tone_curve(g, "standardize")).astype(np.float64)
    assert out.mean() == pytest.approx(STANDARD_MEAN, abs=1.5)
    assert out.std() == pytest.approx(STANDARD_STD, rel=0.05)


@pytest.mark.parametrize("mode", ["equalize", "standardize"])
def test_flat_roi_keeps_its_values(mode):
    np.testing.assert_array_equal(tone_curve(np.full((20, 30, 3), 77, np.uint8), mode), np.arange(256))


def test_tone_curve_of_a_large_frame_comes_from_a_subsample():
    big = cv2.resize(_dim_texture(), (1600, 1200), interpolation=cv2.INTER_LINEAR)
    lut = tone_curve(big, "equalize")  # statistics from ~65k of the 1.9 M pixels
    diff = np.abs(cv2.LUT(big, lut).astype(int) - cv2.equalizeHist(big).astype(int))
    assert diff.max() <= 6 and diff.mean() < 1.5  # close to the full-frame curve


@pytest.mark.parametrize("mode", ["equalize", "standardize"])
def test_photometric_input_ignores_lighting_changes(mode):
    """The point of the tone curve: a darker, lower-contrast exposure of the same part gives
    (nearly) the same model input; without it the input moves a lot."""
    g = cv2.cvtColor(_dim_texture(), cv2.COLOR_GRAY2BGR)
    dim = np.clip(g.astype(np.float64) * 0.6 + 15, 0, 255).astype(np.uint8)
    cfg = PreprocessConfig(input_size=(64, 96), photometric=mode)
    a, b = preprocess(g, cfg)[0], preprocess(dim, cfg)[0]
    raw_a, raw_b = (preprocess(x, PreprocessConfig(input_size=(64, 96)))[0] for x in (g, dim))
    moved, kept = np.abs(raw_a - raw_b).mean(), np.abs(a - b).mean()
    assert moved > 0.25 and kept < 0.2 * moved  # measured: 0.31 without, 0.03-0.05 with


def test_letterbox_padding_is_not_tone_mapped():
    g = cv2.cvtColor(np.tile(_dim_texture((50, 120)), (1, 1)), cv2.COLOR_GRAY2BGR)
    cfg = PreprocessConfig(input_size=(64, 64), resize_mode="letterbox", photometric="equalize")
    x, geo = preprocess(g, cfg)
    assert geo.content_box[1] > 0 and np.abs(x[0, :, 0, :]).max() < 0.03  # pad rows still the mean colour
    resized, _ = resize_to_input(g, cfg, tone=roi_tone_curve(g, cfg))
    cx, cy, cw, ch = geo.content_box
    assert resized[cy: cy + ch, cx: cx + cw].max() == 255  # the content is equalised
