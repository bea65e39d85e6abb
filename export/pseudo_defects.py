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


# -- proxy defects of --auto: what the candidates are ranked on when no real defect is given ------
def _roi_point(img: np.ndarray, pre: PreprocessConfig, rng: np.random.Generator, margin: float = 0.1):
    x, y, w, h = roi_box(pre, img.shape[:2])
    return (int(x + w * rng.uniform(margin, 1 - margin)), int(y + h * rng.uniform(margin, 1 - margin)),
            min(w, h), (x, y, w, h))


def cutpaste_patch(image: np.ndarray, rng: np.random.Generator, pre: PreprocessConfig) -> np.ndarray:
    """CutPaste (Li et al., 2021), small: a patch of 4-10 % of the ROI's short side cut from one
    place of the part, flipped or rotated, its brightness shifted a little, pasted elsewhere."""
    img = image.copy()
    cx, cy, side, (x, y, w, h) = _roi_point(img, pre, rng)
    ph = pw = max(3, int(side * rng.uniform(0.04, 0.10)))
    sy = int(rng.integers(y, max(y + 1, y + h - ph)))
    sx = int(rng.integers(x, max(x + 1, x + w - pw)))
    patch = np.rot90(img[sy:sy + ph, sx:sx + pw], int(rng.integers(1, 4))).astype(np.int16)
    patch = np.clip(patch + int(rng.choice([-1, 1]) * rng.integers(15, 40)), 0, 255).astype(np.uint8)
    y0, x0 = max(0, cy - ph // 2), max(0, cx - pw // 2)
    region = img[y0:y0 + ph, x0:x0 + pw]
    region[...] = patch[: region.shape[0], : region.shape[1]]
    return img


def _smooth_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """Value noise: a coarse random grid upsampled with cubic interpolation (the smooth random
    field DRAEM thresholds its Perlin masks from)."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def noise_blob(image: np.ndarray, rng: np.random.Generator, pre: PreprocessConfig) -> np.ndarray:
    """An irregular blob (a thresholded smooth-noise field, 5-12 % of the ROI's short side across)
    whose inside is darkened or brightened by a noisy amount: pits, stains, blowholes."""
    img = image.copy()
    cx, cy, side, _ = _roi_point(img, pre, rng)
    r = max(3, int(side * rng.uniform(0.025, 0.06)))
    y0, x0 = max(0, cy - r), max(0, cx - r)
    box = img[y0:cy + r, x0:cx + r]
    hh, ww = box.shape[:2]
    yy, xx = np.mgrid[0:hh, 0:ww]
    falloff = 1 - np.hypot((yy - hh / 2) / (hh / 2 + 1e-6), (xx - ww / 2) / (ww / 2 + 1e-6))
    mask = (_smooth_noise((hh, ww), 3, rng) * 0.5 + falloff) > 0.45
    shift = rng.choice([-1, 1]) * rng.uniform(35, 80) * (0.7 + 0.3 * _smooth_noise((hh, ww), 4, rng))
    out = box.astype(np.float32)
    shift = shift[..., None] if out.ndim == 3 else shift
    m = mask[..., None] if out.ndim == 3 else mask
    box[...] = np.clip(np.where(m, out + shift, out), 0, 255).astype(np.uint8)
    return img


def thin_scratch(image: np.ndarray, rng: np.random.Generator, pre: PreprocessConfig) -> np.ndarray:
    """A thin curved scratch or crack, 10-25 % of the ROI's short side long and about 1/150 of it
    wide, a moderate step darker or brighter than the part under it."""
    img = image.copy()
    cx, cy, side, _ = _roi_point(img, pre, rng)
    length = side * rng.uniform(0.10, 0.25)
    a, bend = rng.uniform(0, np.pi), rng.uniform(-0.6, 0.6)
    t = np.linspace(-0.5, 0.5, 12)
    ang = a + bend * t
    pts = np.stack([cx + np.cumsum(np.cos(ang)) * length / len(t), cy + np.cumsum(np.sin(ang)) * length / len(t)], 1)
    local = float(img[max(0, cy - 5):cy + 5, max(0, cx - 5):cx + 5].mean())
    level = float(np.clip(local + (-1 if local > 100 else 1) * rng.uniform(50, 100), 0, 255))
    colour = (int(level),) * 3 if img.ndim == 3 else int(level)
    cv2.polylines(img, [pts.astype(np.int32)], False, colour, max(1, side // 150), lineType=cv2.LINE_AA)
    return img


PROXY_DEFECTS = {"small": small_pseudo_defect, "cutpaste": cutpaste_patch, "noise_blob": noise_blob,
                 "scratch": thin_scratch}


def proxy_defects(frames: list[np.ndarray], kinds: tuple[str, ...], per_image: int, pre: PreprocessConfig,
                  seed: int) -> list[np.ndarray]:
    """``per_image`` defects of each kind drawn on each good frame (seeded, kinds cycled)."""
    rng = np.random.default_rng(seed + 7)
    return [PROXY_DEFECTS[kinds[(i * per_image + j) % len(kinds)]](frame, rng, pre)
            for i, frame in enumerate(frames) for j in range(per_image)]
