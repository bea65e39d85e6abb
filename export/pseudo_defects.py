"""Pseudo-defects: good frames with a synthetic flaw, used at export to check INT8 against FP32
over a spread of scores and to rank --auto candidates, never to fit."""

from __future__ import annotations

import cv2
import numpy as np

from edgead.preprocess import PreprocessConfig, roi_box


def pseudo_defect(image: np.ndarray, rng: np.random.Generator, severity: float = 1.0) -> np.ndarray:
    """A copy of a good frame with a CutPaste-style patch moved elsewhere and a drawn scratch;
    ``severity`` scales the patch side and the scratch width (1: an eighth of the frame side).

    Used at export to check INT8 vs FP32 parity over a spread of scores, never to fit.
    """
    out = image.copy()
    h, w = out.shape[:2]
    ph, pw = max(4, int(h * severity) // 8), max(4, int(w * severity) // 8)
    y0, x0 = rng.integers(0, h - ph), rng.integers(0, w - pw)
    y1, x1 = rng.integers(h // 4, max(h // 4 + 1, 3 * h // 4 - ph)), rng.integers(w // 4, max(w // 4 + 1, 3 * w // 4 - pw))
    patch = out[y0 : y0 + ph, x0 : x0 + pw].copy()
    out[y1 : y1 + ph, x1 : x1 + pw] = np.ascontiguousarray(patch[::-1, ::-1])
    p0 = (int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4)))
    p1 = (int(p0[0] + rng.integers(-w // 6, w // 6)), int(p0[1] + rng.integers(-h // 6, h // 6)))
    color = tuple(int(v) for v in (255 - out[p0[1], p0[0]].astype(int)) % 256) if out.ndim == 3 else int(255 - out[p0[1], p0[0]])
    cv2.line(out, p0, p1, color, max(1, int(min(h, w) * severity) // 64))
    return out


def small_pseudo_defect(image: np.ndarray, rng: np.random.Generator, pre: PreprocessConfig) -> np.ndarray:
    """A copy of ``image`` with one *small* blob or scratch (1.5-4 % of the short side) drawn in its
    ROI, in a grey level far from the local one: the kind of defect resolution and tiling are for
    (pseudo_defect's large CutPaste patches only spread scores for INT8 parity)."""
    img = image.copy()
    x, y, w, h = roi_box(pre, img.shape[:2])
    side = min(w, h)
    cx = int(x + w * rng.uniform(0.15, 0.85))
    cy = int(y + h * rng.uniform(0.15, 0.85))
    r = max(2, int(side * rng.uniform(0.015, 0.04)))
    local = float(img[max(0, cy - r) : cy + r, max(0, cx - r) : cx + r].mean())
    level = local - 90 if local > 128 else local + 90
    colour = (int(np.clip(level, 0, 255)),) * 3 if img.ndim == 3 else int(np.clip(level, 0, 255))
    if rng.random() < 0.5:
        cv2.ellipse(img, (cx, cy), (r, max(1, r // 2)), float(rng.uniform(0, 180)), 0, 360, colour, -1)
    else:
        a = rng.uniform(0, np.pi)
        d = 2.5 * r
        p0 = (int(cx - d * np.cos(a)), int(cy - d * np.sin(a)))
        p1 = (int(cx + d * np.cos(a)), int(cy + d * np.sin(a)))
        cv2.line(img, p0, p1, colour, max(1, side // 150))
    return img
