"""Preprocessing: ROI, resize modes, normalisation and mapping maps back to the frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgead.errors import ConfigError
from edgead.preprocess import PreprocessConfig, map_to_frame, preprocess, resize_to_input


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
                                dict(interpolation="cubic")])
def test_bad_config_is_refused(kw):
    with pytest.raises(ConfigError):
        PreprocessConfig(**kw)


def test_config_roundtrip():
    cfg = PreprocessConfig(input_size=(64, 96), resize_mode="letterbox", roi=(1, 2, 30, 40), interpolation="linear")
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    # a manifest written before the field resized with INTER_AREA: it still does
    old = cfg.to_dict()
    del old["interpolation"]
    assert PreprocessConfig.from_dict(old).interpolation == "area"


@pytest.mark.parametrize("shape, linear", [((90, 60, 3), True), ((129, 64, 3), False), ((32, 32, 3), True)])
def test_interpolation_modes(shape, linear):
    """"linear": bilinear up to a 2x shrink (here 64 -> 32 px wide is 2x, 129 -> 64 high is more),
    INTER_AREA beyond; "area": INTER_AREA whenever the image shrinks; both enlarge bilinearly."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    size = (64, 32)
    fast, _ = resize_to_input(img, PreprocessConfig(input_size=size, interpolation="linear"))
    area, _ = resize_to_input(img, PreprocessConfig(input_size=size, interpolation="area"))
    want = cv2.resize(img, size[::-1], interpolation=cv2.INTER_LINEAR if linear else cv2.INTER_AREA)
    np.testing.assert_array_equal(fast, want)
    shrinks = shape[0] > size[0] or shape[1] > size[1]
    np.testing.assert_array_equal(area, cv2.resize(img, size[::-1], interpolation=cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR))
