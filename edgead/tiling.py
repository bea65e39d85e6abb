"""Tiling: score a large frame (after the ROI crop) as a grid of overlapping tiles.

Each tile is resized into the model input like a whole ROI would be (``resize_to_input`` with
the tile's box), so ``frame_inputs`` is the one function that turns a frame into the backbone
batch at fit (export) and at serve; ``merge_maps`` puts the per-tile anomaly maps back into
frame coordinates (mean in overlaps, or max). A 1x1 grid is the untiled model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgead.errors import ConfigError
from edgead.preprocess import (
    Geometry,
    PreprocessConfig,
    as_bgr,
    map_to_box,
    map_to_frame,
    normalize,
    resize_to_input,
    roi_box,
    roi_tone_curve,
)

MERGE_MODES = ("mean", "max")
BANK_LAYOUTS = ("shared", "per_tile")


@dataclass(frozen=True)
class TilingConfig:
    """``grid`` (rows, cols) of tiles over the ROI, neighbours overlapping by ``overlap`` of a
    tile's side; ``merge`` combines overlapping tile maps; ``banks`` "shared" fits one memory
    bank (or Gaussian set) on all tiles, "per_tile" one per tile position."""

    grid: tuple[int, int] = (1, 1)
    overlap: float = 0.0
    merge: str = "mean"
    banks: str = "shared"

    def __post_init__(self) -> None:
        rows, cols = self.grid
        if rows < 1 or cols < 1 or rows * cols > 64:
            raise ConfigError(f"tile grid {rows}x{cols}: rows and columns must be >= 1 (at most 64 tiles)")
        if not 0.0 <= self.overlap < 0.9:
            raise ConfigError(f"tile overlap {self.overlap}: expected a fraction of the tile side in [0, 0.9)")
        if self.merge not in MERGE_MODES:
            raise ConfigError(f"tile merge {self.merge!r}: expected one of {', '.join(MERGE_MODES)}")
        if self.banks not in BANK_LAYOUTS:
            raise ConfigError(f"tile banks {self.banks!r}: expected one of {', '.join(BANK_LAYOUTS)}")

    @property
    def count(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def bank_count(self) -> int:
        return self.count if self.banks == "per_tile" else 1

    def to_dict(self) -> dict:
        return {**asdict(self), "grid": list(self.grid)}


def _spans(start: int, length: int, n: int, overlap: float) -> list[tuple[int, int]]:
    """n intervals (start, size) covering [start, start + length), neighbours overlapping."""
    side = length / (n - (n - 1) * overlap)
    stride = side * (1.0 - overlap)
    spans = []
    for i in range(n):
        a = start + int(round(i * stride))
        b = start + length if i == n - 1 else start + int(round(i * stride + side))
        spans.append((a, max(1, b - a)))
    return spans


def tile_boxes(region: tuple[int, int, int, int], grid: tuple[int, int], overlap: float) -> list[tuple[int, int, int, int]]:
    """Tiles (x, y, w, h) of ``region`` in frame pixels, row-major; they cover it exactly."""
    x, y, w, h = region
    rows, cols = grid
    return [(tx, ty, tw, th) for ty, th in _spans(y, h, rows, overlap) for tx, tw in _spans(x, w, cols, overlap)]


def frame_inputs(image: np.ndarray, pre: PreprocessConfig, tiling: TilingConfig,
                 out: np.ndarray | None = None) -> tuple[np.ndarray, list[Geometry]]:
    """Frame (BGR or grey uint8) -> (backbone batch (tiles, 3, H, W) float32, one geometry per tile)."""
    image = as_bgr(image)
    roi = roi_box(pre, image.shape[:2])
    boxes = tile_boxes(roi, tiling.grid, tiling.overlap)
    if out is None or out.shape[0] != len(boxes):
        out = np.empty((len(boxes), 3, *pre.input_size), dtype=np.float32)
    tone = roi_tone_curve(image, pre, roi)  # one curve for the whole ROI, so tiles stay comparable
    geometries = []
    for i, box in enumerate(boxes):
        resized, geometry = resize_to_input(image, pre, box, tone)
        normalize(resized, pre, out=out[i : i + 1])
        geometries.append(geometry)
    return out, geometries


def merge_maps(maps: np.ndarray, geometries: list[Geometry], mode: str = "mean") -> np.ndarray:
    """Per-tile maps at input size (tiles, H, W) -> one frame-sized map (zero outside the ROI);
    overlaps are averaged (``mean``) or take the larger value (``max``)."""
    if len(geometries) == 1:  # nothing to merge
        return map_to_frame(maps[0], geometries[0])
    fh, fw = geometries[0].frame_shape
    acc = np.zeros((fh, fw), dtype=np.float32)
    count = np.zeros((fh, fw), dtype=np.float32) if mode == "mean" else None
    for tile_map, g in zip(maps, geometries):
        x, y, w, h = g.roi_box
        box_map = map_to_box(tile_map, g)
        if count is None:
            np.maximum(acc[y : y + h, x : x + w], box_map, out=acc[y : y + h, x : x + w])
        else:
            acc[y : y + h, x : x + w] += box_map
            count[y : y + h, x : x + w] += 1.0
    if count is not None:
        np.divide(acc, count, out=acc, where=count > 0)
    return acc


def parse_grid(text: str) -> tuple[int, int]:
    """'2x3' (rows x cols) or '2' (2x2) -> (rows, cols); ConfigError otherwise."""
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        raise ConfigError(f"tile grid {text!r}: expected RxC, e.g. 2x2") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise ConfigError(f"tile grid {text!r}: expected RxC with rows and columns >= 1, e.g. 2x2")
    return parts[0], parts[1]
