"""Anomaly-map rendering: a colour map over the frame, encoded as PNG or JPEG bytes.

Maps are scaled relative to the decision threshold so colours mean the same on every image:
0 is blue, the threshold is the middle of the scale (green-yellow), ``2 x threshold`` and above
is red. ``map_to_u8`` is also the storage format of the inspection log (grey PNG).
"""

from __future__ import annotations

import cv2
import numpy as np

DEFAULT_ALPHA = 0.45


def map_to_u8(anomaly_map: np.ndarray, vmax: float, max_side: int | None = None) -> np.ndarray:
    """float map -> uint8 (0..vmax -> 0..255, clipped), optionally shrunk to ``max_side``."""
    if vmax <= 0 or not np.isfinite(vmax):
        raise ValueError(f"vmax must be positive and finite, got {vmax}")
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.ndim != 2:
        raise ValueError(f"anomaly map must be 2-D, got shape {amap.shape}")
    if max_side and max(amap.shape) > max_side:
        scale = max_side / max(amap.shape)
        size = (max(1, round(amap.shape[1] * scale)), max(1, round(amap.shape[0] * scale)))
        amap = cv2.resize(amap, size, interpolation=cv2.INTER_AREA)
    scaled = np.nan_to_num(amap * (255.0 / vmax), nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def colorize(map_u8: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 map -> BGR colour image (JET), resized to ``size`` = (width, height) if given."""
    if size is not None and (map_u8.shape[1], map_u8.shape[0]) != tuple(size):
        map_u8 = cv2.resize(map_u8, tuple(size), interpolation=cv2.INTER_LINEAR)
    return cv2.applyColorMap(map_u8, cv2.COLORMAP_JET)


def overlay(image: np.ndarray, map_u8: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Blend the coloured map over ``image`` (BGR or grey), at the image's size."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    colour = colorize(map_u8, (image.shape[1], image.shape[0]))
    return cv2.addWeighted(colour, alpha, image, 1.0 - alpha, 0.0)


def encode(image: np.ndarray, fmt: str = "png", jpeg_quality: int = 90) -> bytes:
    """Encode a BGR/grey uint8 image as ``png`` or ``jpg`` bytes."""
    fmt = fmt.lower().lstrip(".")
    if fmt in ("jpg", "jpeg"):
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    elif fmt == "png":
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        raise ValueError(f"unsupported image format {fmt!r} (png or jpg)")
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {fmt}")
    return buf.tobytes()


def render_heatmap(image: np.ndarray | None, anomaly_map: np.ndarray, vmax: float, fmt: str = "png",
                   alpha: float = DEFAULT_ALPHA) -> bytes:
    """The anomaly map over ``image`` (or alone when image is None) as encoded bytes."""
    map_u8 = anomaly_map if anomaly_map.dtype == np.uint8 else map_to_u8(anomaly_map, vmax)
    picture = colorize(map_u8) if image is None else overlay(image, map_u8, alpha)
    return encode(picture, fmt)
