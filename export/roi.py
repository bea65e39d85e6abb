"""Propose a region of interest from good training images, so a user need not measure one.

The part is what differs from the background: pixels of the mean image far from the border's
(background) level, or pixels that vary a lot between frames (the part's texture and edges,
when it moves a little). The ROI is the bounding box of that foreground plus a margin, so
nothing of the part is cut off. numpy + OpenCV only.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edgead.errors import ConfigError

ANALYSIS_SIDE = 256      # frames are compared on a common ANALYSIS_SIDE x ANALYSIS_SIDE grid
BORDER = 0.04            # border strip (fraction of the side) taken as background
MIN_COMPONENT = 0.002    # foreground blobs smaller than this share of the frame are ignored
WHOLE_FRAME = 0.9        # a proposal covering more than this share of the frame -> no ROI


def _grey_stack(images: Sequence[np.ndarray]) -> np.ndarray:
    out = np.empty((len(images), ANALYSIS_SIDE, ANALYSIS_SIDE), np.float32)
    for i, img in enumerate(images):
        grey = img if img.ndim == 2 else cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY)
        out[i] = cv2.resize(grey, (ANALYSIS_SIDE, ANALYSIS_SIDE), interpolation=cv2.INTER_AREA)
    return out


def _border(a: np.ndarray) -> np.ndarray:
    b = max(1, int(round(BORDER * ANALYSIS_SIDE)))
    return np.concatenate([a[:b].ravel(), a[-b:].ravel(), a[b:-b, :b].ravel(), a[b:-b, -b:].ravel()])


def foreground_mask(images: Sequence[np.ndarray]) -> np.ndarray:
    """bool (ANALYSIS_SIDE, ANALYSIS_SIDE): where the part is, on the common grid."""
    stack = _grey_stack(images)
    mean = stack.mean(0)
    border = _border(mean)
    level = float(np.median(border))
    spread = 1.4826 * float(np.median(np.abs(border - level)))
    mask = np.abs(mean - level) > max(4.0 * spread, 12.0)
    if len(stack) > 1:
        varies = stack.std(0)
        vb = _border(varies)
        mask |= varies > 3.0 * float(np.median(vb)) + 8.0
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= MIN_COMPONENT * ANALYSIS_SIDE**2]
    return np.isin(labels, keep)


def propose_roi(images: Sequence[np.ndarray], margin: float = 0.05
                ) -> tuple[tuple[float, float, float, float], str] | None:
    """(box (x, y, w, h), units) around the part in ``images`` with ``margin`` (share of the box
    side) added on every side, or None when the part fills (nearly) the whole frame.

    Units are "px" when every image has the same size, else "fraction" of the frame.
    """
    if not len(images):
        raise ConfigError("propose_roi needs at least one image")
    mask = foreground_mask(images)
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    mx, my = margin * (x1 - x0) + 1, margin * (y1 - y0) + 1
    s = float(ANALYSIS_SIDE)
    fx0, fx1 = max(0.0, (x0 - mx) / s), min(1.0, (x1 + mx) / s)
    fy0, fy1 = max(0.0, (y0 - my) / s), min(1.0, (y1 + my) / s)
    if (fx1 - fx0) * (fy1 - fy0) > WHOLE_FRAME:
        return None
    shapes = {img.shape[:2] for img in images}
    if len(shapes) == 1:
        h, w = shapes.pop()
        px0, py0 = int(np.floor(fx0 * w)), int(np.floor(fy0 * h))
        px1, py1 = int(np.ceil(fx1 * w)), int(np.ceil(fy1 * h))
        return (float(px0), float(py0), float(px1 - px0), float(py1 - py0)), "px"
    return (round(fx0, 4), round(fy0, 4), round(fx1 - fx0, 4), round(fy1 - fy0, 4)), "fraction"
