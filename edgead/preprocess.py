"""Preprocessing shared by fit (export) and serve: ROI crop, resize, tone curve, normalise.

One function, ``preprocess``, turns a BGR frame into the backbone's NCHW float32 input;
``Geometry`` remembers how, so an anomaly map at model input size can be put back into
the frame's pixel coordinates (``map_to_frame``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from edgead.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("stretch", "letterbox")
# "area" (default): cv2.INTER_AREA whenever the image shrinks; "linear": bilinear unless it shrinks
# by more than LINEAR_MAX_SHRINK, INTER_AREA beyond (bilinear aliases there).  INTER_AREA at a
# non-integer factor is several times slower than bilinear, a noticeable share of a frame's time,
# but bilinear lost image AUROC on a fine texture and gained nothing elsewhere: the default stays
# "area" and "linear" is an export option for lines that need the time (docs/benchmarks.md).
INTERPOLATIONS = ("area", "linear")
LINEAR_MAX_SHRINK = 2.0
# Per-frame photometric normalisation: a 256-entry tone curve from the ROI's luminance, applied to
# every channel of the resized input (tone_curve).  "equalize": histogram equalisation
# (cv2.equalizeHist's curve); "standardize": luminance mean -> STANDARD_MEAN, std -> STANDARD_STD.
# It takes the frame-to-frame changes of lighting and exposure out of what the memory bank must
# cover.  It lifts textures whose exposure varies from frame to frame and costs parts whose
# brightness is itself the defect signal (docs/benchmarks.md): a per-line choice, off by default.
PHOTOMETRIC = ("none", "equalize", "standardize")
STANDARD_MEAN, STANDARD_STD = 128.0, 60.0
# The arithmetic of the resize.  An INT8 backbone rounds its activations to integers, so one model
# input value that differs between two machines can move a quantized value by a step and the image
# score by ~1e-3: the model input must be the same bits on the workstation and on the Pi.  OpenCV's
# uint8 INTER_AREA rounds a float result to whole grey levels, and its float arithmetic is compiled
# differently for x86 and arm64 (fused multiply-add, vector width), so a few pixels of a frame land
# one grey level apart (measured on real JPEG frames, docs/howto/check-on-arm64.md).  "float64"
# shrinks without rounding: the machines then differ by ~1e-13 of a grey level, far below the
# float32 model input's resolution (docs/benchmarks.md: its cost).  A frame more than twice the
# input per side is first reduced by whole blocks (exact, _block_means).  Bilinear resizes
# (enlarging, or "linear" up to a 2x shrink) take OpenCV's bit-exact fixed-point INTER_LINEAR_EXACT
# on uint8: in float, its coefficients round differently on x86 and arm64 (measured: 2e-3 in INT8).
# "uint8": artifacts exported before the field existed (a manifest without it).
RESIZE_DTYPES = ("uint8", "float64")
# float64: a region over BLOCKS_ABOVE times the input per side is reduced by whole blocks first, so
# what the float64 resize reads stays under (2 x BLOCKS_ABOVE)^2 times the input's pixels
BLOCKS_ABOVE = 2
_TONE_SAMPLES = 1 << 16  # ROI pixels the statistics are taken from, at most (a regular subsample)
_LEVELS = np.arange(256, dtype=np.float64)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a frame becomes model input.

    ``roi`` is (x, y, w, h), in pixels when ``roi_units == "px"`` or as fractions of the
    frame when ``"fraction"``; None means the whole frame. ``resize_mode`` "stretch" fits
    the ROI to the input size (nothing is cut off); "letterbox" keeps the aspect ratio and
    pads with the ImageNet mean colour.  ``interpolation``: see :data:`INTERPOLATIONS` (a
    manifest without the field was fitted with "area").  ``photometric``: see
    :data:`PHOTOMETRIC` (a manifest without the field: "none").  ``resize_dtype``: see
    :data:`RESIZE_DTYPES` (a manifest without the field: "uint8").
    """

    input_size: tuple[int, int] = (224, 224)  # (height, width)
    resize_mode: str = "stretch"
    roi: tuple[float, float, float, float] | None = None
    roi_units: str = "px"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    color: str = "rgb"
    interpolation: str = "area"
    photometric: str = "none"
    resize_dtype: str = "float64"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        h, w = self.input_size
        if h <= 0 or w <= 0 or h % 32 or w % 32:
            raise ConfigError(f"input size {h}x{w}: height and width must be positive multiples of 32")
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"resize mode {self.resize_mode!r}: expected one of {', '.join(RESIZE_MODES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation {self.interpolation!r}: expected one of {', '.join(INTERPOLATIONS)}")
        if self.photometric not in PHOTOMETRIC:
            raise ConfigError(f"photometric normalisation {self.photometric!r}: expected one of {', '.join(PHOTOMETRIC)}")
        if self.resize_dtype not in RESIZE_DTYPES:
            raise ConfigError(f"resize dtype {self.resize_dtype!r}: expected one of {', '.join(RESIZE_DTYPES)}")
        if self.roi_units not in ("px", "fraction"):
            raise ConfigError(f"roi units {self.roi_units!r}: expected 'px' or 'fraction'")
        if self.roi is not None and (len(self.roi) != 4 or self.roi[2] <= 0 or self.roi[3] <= 0):
            raise ConfigError(f"roi {self.roi}: expected (x, y, width, height) with positive size")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d["input_size"] = list(self.input_size)
        d["roi"] = list(self.roi) if self.roi is not None else None
        return d


@dataclass(frozen=True)
class Geometry:
    """Where the model input came from in the frame."""

    frame_shape: tuple[int, int]  # (H, W) of the full frame
    roi_box: tuple[int, int, int, int]  # (x, y, w, h) in frame pixels of the region (ROI, or one tile of it)
    content_box: tuple[int, int, int, int]  # (x, y, w, h) of the ROI inside the model input


def roi_box(cfg: PreprocessConfig, frame_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The ROI in frame pixels, clipped to the frame."""
    fh, fw = frame_shape
    if cfg.roi is None:
        return 0, 0, fw, fh
    x, y, w, h = cfg.roi
    if cfg.roi_units == "fraction":
        x, y, w, h = x * fw, y * fh, w * fw, h * fh
    x0, y0 = int(round(max(0, x))), int(round(max(0, y)))
    x1, y1 = int(round(min(fw, x + w))), int(round(min(fh, y + h)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ConfigError(f"roi {cfg.roi} ({cfg.roi_units}) lies outside the {fw}x{fh} frame")
    return x0, y0, x1 - x0, y1 - y0


def content_box(cfg: PreprocessConfig, roi_w: int, roi_h: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of a ``roi_w`` x ``roi_h`` ROI inside the model input: all of it when
    stretched, centred with its aspect kept when letterboxed."""
    ih, iw = cfg.input_size
    if cfg.resize_mode == "stretch":
        return 0, 0, iw, ih
    scale = min(iw / roi_w, ih / roi_h)
    cw, ch = max(1, round(roi_w * scale)), max(1, round(roi_h * scale))
    return (iw - cw) // 2, (ih - ch) // 2, cw, ch


def _interpolation(cfg: PreprocessConfig, shrink: float) -> int:
    """The cv2 flag for resizing by 1/``shrink`` (shrink > 1: the image gets smaller)."""
    if shrink <= 1.0:
        return cv2.INTER_LINEAR
    if cfg.interpolation == "linear" and shrink <= LINEAR_MAX_SHRINK:
        return cv2.INTER_LINEAR
    return cv2.INTER_AREA


def as_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ConfigError(f"image of shape {image.shape}: expected HxW, HxWx3 or HxWx4")


def tone_curve(roi_bgr: np.ndarray, mode: str) -> np.ndarray | None:
    """The 256-entry uint8 lookup table that normalises the brightness of this ROI (BGR or grey
    uint8), from its luminance (a regular subsample of at most 65k pixels); None for "none".

    "equalize" is cv2.equalizeHist's curve (identical on a grey image small enough to be read
    whole); "standardize" maps the luminance mean and standard deviation to STANDARD_MEAN and
    STANDARD_STD, clipped to 0..255.  A flat ROI keeps its values (identity curve)."""
    if mode == "none":
        return None
    if mode not in PHOTOMETRIC:
        raise ConfigError(f"photometric normalisation {mode!r}: expected one of {', '.join(PHOTOMETRIC)}")
    h, w = roi_bgr.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(h * w / _TONE_SAMPLES))))
    sample = np.ascontiguousarray(roi_bgr[::step, ::step])
    grey = sample if sample.ndim == 2 else cv2.cvtColor(sample, cv2.COLOR_BGR2GRAY)
    levels = np.arange(256, dtype=np.float64)
    if mode == "standardize":
        mean, std = (float(np.asarray(v).reshape(-1)[0]) for v in cv2.meanStdDev(grey))
        if std < 1.0:
            return levels.astype(np.uint8)
        curve = STANDARD_MEAN + STANDARD_STD * (levels - mean) / std
        return np.clip(np.rint(curve), 0, 255).astype(np.uint8)
    hist = np.rint(cv2.calcHist([grey], [0], None, [256], [0, 256])).reshape(-1).astype(np.int64)
    cdf = np.cumsum(hist)
    first = int(np.flatnonzero(hist)[0])
    total, below = int(cdf[-1]), int(hist[first])
    if total == below:
        return levels.astype(np.uint8)
    # as cv2.equalizeHist: 0 up to the darkest level present, then the scaled cumulative count
    curve = (cdf - below) * (255.0 / (total - below))
    curve[: first + 1] = 0
    return np.clip(np.rint(curve), 0, 255).astype(np.uint8)


def roi_tone_curve(image: np.ndarray, cfg: PreprocessConfig,
                   roi: tuple[int, int, int, int] | None = None) -> np.ndarray | None:
    """:func:`tone_curve` of the frame's ROI (BGR uint8 frame): one curve for all its tiles.
    ``roi``: the frame's :func:`roi_box`, when the caller has it."""
    if cfg.photometric == "none":
        return None
    x, y, w, h = roi_box(cfg, image.shape[:2]) if roi is None else roi
    return tone_curve(image[y : y + h, x : x + w], cfg.photometric)


def _block_means(crop: np.ndarray, kx: int, ky: int) -> np.ndarray:
    """The means of ``kx`` x ``ky`` pixel blocks (the crop holds whole blocks), rounded to uint8.

    OpenCV's INTER_AREA at an integer ratio sums the block in integers and rounds the mean once:
    the same result on every CPU, unlike its filter at a non-integer ratio.  It is also several
    times faster, so the float64 resize after it runs on a few times the target's pixels, not on a
    multi-megapixel frame."""
    if kx == 1 and ky == 1:
        return crop
    h, w = crop.shape[:2]
    return cv2.resize(crop, (w // kx, h // ky), interpolation=cv2.INTER_AREA)


def resize_to_input(image: np.ndarray, cfg: PreprocessConfig,
                    box: tuple[int, int, int, int] | None = None,
                    tone: np.ndarray | None = None) -> tuple[np.ndarray, Geometry]:
    """Crop the ROI (or ``box``, frame pixels, e.g. one tile of it) and resize it into the
    model input (BGR, input_size: uint8 when it needed no resize or ``cfg.resize_dtype`` is
    "uint8", else float64 grey levels); ``tone``: the ROI's tone curve (:func:`roi_tone_curve`),
    applied to the resized pixels (the padding stays the mean colour)."""
    image = as_bgr(image)
    frame_shape = image.shape[:2]
    x, y, w, h = roi_box(cfg, frame_shape) if box is None else box
    ih, iw = cfg.input_size
    cx, cy, cw, ch = content_box(cfg, w, h)
    if (cw, ch) == (w, h):
        resized = image[y : y + h, x : x + w]
    elif cfg.resize_dtype == "float64":
        # whole blocks first, exactly (the right and bottom edges lose what is left over)
        kx, ky = max(1, w // (BLOCKS_ABOVE * cw)), max(1, h // (BLOCKS_ABOVE * ch))
        w, h = w - w % kx, h - h % ky
        src = _block_means(image[y : y + h, x : x + w], kx, ky)
        sh, sw = src.shape[:2]
        if sw >= cw and sh >= ch and _interpolation(cfg, max(sw / cw, sh / ch)) == cv2.INTER_AREA:
            resized = cv2.resize(src.astype(np.float64), (cw, ch), interpolation=cv2.INTER_AREA)
        else:
            # bilinear (enlarging, or "linear" up to a 2x shrink): OpenCV's bit-exact fixed-point
            # filter on uint8; in float its coefficients round differently on x86 and arm64
            resized = cv2.resize(src, (cw, ch), interpolation=cv2.INTER_LINEAR_EXACT)
    else:
        interp = _interpolation(cfg, shrink=max(w / cw, h / ch))
        resized = cv2.resize(image[y : y + h, x : x + w], (cw, ch), interpolation=interp)
    if tone is not None:
        # between grey levels the curve is linear: on whole levels the same as the lookup table
        resized = cv2.LUT(resized, tone) if resized.dtype == np.uint8 else np.interp(resized, _LEVELS, tone)
    if (cw, ch) != (iw, ih):
        pad_value = [round(255 * m) for m in cfg.mean[::-1]]  # BGR mean colour -> zero after normalise
        canvas = np.empty((ih, iw, 3), dtype=resized.dtype)
        canvas[:] = pad_value
        canvas[cy : cy + ch, cx : cx + cw] = resized
        resized = canvas
    return resized, Geometry(frame_shape, (x, y, w, h), (cx, cy, cw, ch))


def normalize(resized_bgr: np.ndarray, cfg: PreprocessConfig, out: np.ndarray | None = None) -> np.ndarray:
    """BGR HxWx3 grey levels (uint8 or float64) -> float32 1x3xHxW, RGB, (x/255 - mean) / std."""
    h, w = resized_bgr.shape[:2]
    if out is None:
        out = np.empty((1, 3, h, w), dtype=np.float32)
    order = (2, 1, 0) if cfg.color == "rgb" else (0, 1, 2)
    for c, src in enumerate(order):
        scale = 1.0 / (255.0 * cfg.std[c])
        offset = -cfg.mean[c] / cfg.std[c]
        np.multiply(resized_bgr[:, :, src], np.float32(scale), out=out[0, c], casting="unsafe")
        out[0, c] += np.float32(offset)
    return out


def preprocess(image: np.ndarray, cfg: PreprocessConfig, out: np.ndarray | None = None) -> tuple[np.ndarray, Geometry]:
    """Frame (BGR or grey uint8) -> (model input 1x3xHxW float32, geometry)."""
    image = as_bgr(image)
    resized, geometry = resize_to_input(image, cfg, tone=roi_tone_curve(image, cfg))
    return normalize(resized, cfg, out), geometry


def map_to_box(input_map: np.ndarray, geometry: Geometry) -> np.ndarray:
    """An anomaly map at model input size -> the (h, w) map of its box in the frame."""
    cx, cy, cw, ch = geometry.content_box
    _, _, w, h = geometry.roi_box
    return cv2.resize(input_map[cy : cy + ch, cx : cx + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def map_to_frame(input_map: np.ndarray, geometry: Geometry) -> np.ndarray:
    """An anomaly map at model input size -> frame-sized map (zero outside the ROI)."""
    x, y, w, h = geometry.roi_box
    fh, fw = geometry.frame_shape
    roi_map = map_to_box(input_map, geometry)
    if (x, y, w, h) == (0, 0, fw, fh):
        return roi_map
    full = np.zeros((fh, fw), dtype=np.float32)
    full[y : y + h, x : x + w] = roi_map
    return full
