"""How large a frame the daemon accepts, and the header check that refuses a larger one before
it is decoded.

The limit follows from the model and a memory budget: a frame much larger than what the model
looks at (its input size times its tiles, or the ROI it crops) only costs memory, and one decoded
frame with its working copies (decode, crop/resize, the stored copy) must fit the budget.
``server.max_image_pixels`` stays an upper cap whatever the model."""

from __future__ import annotations

import io
from typing import Any

import imagesize

from edgead.errors import ImageError
from edgead.preprocess import BLOCKS_ABOVE

BYTES_PER_PIXEL = 3  # BGR uint8
WORKING_COPIES = 3  # the decoded frame, its crop/resize, the copy stored or encoded
# A model that resizes in float64 (edgead.preprocess.RESIZE_DTYPES) also holds a float64 copy of the
# region it resizes, which whole-block reduction keeps under this many times the input's pixels.
FLOAT_RESIZE_BYTES = 3 * 8
FLOAT_RESIZE_MAX_SHARE = (2 * BLOCKS_ABOVE) ** 2


class FrameTooLarge(ImageError):
    """An image with more pixels than the daemon accepts (HTTP 413)."""


def model_frame_pixels(model: Any) -> int:
    """Frame pixels the model uses at its own resolution: input size x tiles, grown by a
    fractional ROI (the model sees only that part of the frame) or to cover a pixel ROI."""
    h, w = model.input_size
    tiling = getattr(model, "tiling", None)
    pixels = float(h * w * max(1, int(getattr(tiling, "count", 1) or 1)))
    pre = getattr(model, "preprocess_cfg", None)
    roi = getattr(pre, "roi", None)
    if roi is not None:
        x, y, rw, rh = (float(v) for v in roi)
        if getattr(pre, "roi_units", "px") == "fraction":
            pixels /= max(rw * rh, 1e-6)
        else:
            pixels = max(pixels, (x + rw) * (y + rh))
    return int(pixels)


def frame_pixel_limit(model: Any, server: Any) -> int:
    """The most pixels an uploaded frame may have for this model under ``server``'s settings."""
    by_model = model_frame_pixels(model) * server.frame_factor
    budget = server.frame_memory_mb * 1024 * 1024
    per_pixel = BYTES_PER_PIXEL * WORKING_COPIES
    by_memory = budget / per_pixel
    if getattr(getattr(model, "preprocess_cfg", None), "resize_dtype", "uint8") == "float64":
        # the float64 copy grows with the frame up to its cap, then stays
        h, w = model.input_size
        cap = FLOAT_RESIZE_MAX_SHARE * h * w
        by_memory = budget / (per_pixel + FLOAT_RESIZE_BYTES)
        if by_memory > cap:
            by_memory = (budget - FLOAT_RESIZE_BYTES * cap) / per_pixel
    return int(max(4096, min(server.max_image_pixels, by_model, by_memory)))


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header without decoding, or None when the header does not say."""
    try:
        w, h = imagesize.get(io.BytesIO(data))
    except Exception:  # a malformed header: the decoder gives the real error
        return None
    return (int(w), int(h)) if w > 0 and h > 0 else None


def check_frame_size(width: int, height: int, limit: int, name: str) -> None:
    if width * height > limit:
        raise FrameTooLarge(
            f"{name}: {width}x{height} is {width * height / 1e6:.1f} MP, more than the {limit / 1e6:.2f} MP this "
            "model accepts (server.frame_factor, server.frame_memory_mb, server.max_image_pixels); "
            "send a smaller frame")


def check_header(data: bytes, limit: int, name: str) -> None:
    """FrameTooLarge when the header declares more than ``limit`` pixels."""
    size = header_size(data)
    if size is not None:
        check_frame_size(*size, limit, name)
