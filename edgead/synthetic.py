"""Synthetic industrial parts for tests and the demo: textured washers, some with drawn defects.

numpy + OpenCV only (runs on the Pi). Good parts vary in position, rotation, brightness and
texture; defective ones carry a scratch, a dark blob or a missing chunk.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

DEFECTS = ("scratch", "blob", "chip")


VARIANTS = {"steel": (0.95, 1.0, 1.04), "brass": (0.55, 0.85, 1.1)}   # BGR tints of the metal


def make_part(rng: np.random.Generator, size: int = 128, defect: str | None = None,
              variant: str = "steel") -> tuple[np.ndarray, np.ndarray]:
    """One BGR uint8 frame (size x size) and its defect mask (uint8 0/255). ``variant``: the
    metal's colour (a new product variant for teaching on the line: brass)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = 70 + 20 * (xx / size) + rng.normal(0, 3, (size, size))  # conveyor belt: gradient + noise
    img = np.repeat(base[..., None], 3, axis=2)
    cx = size / 2 + rng.uniform(-2, 2)
    cy = size / 2 + rng.uniform(-2, 2)
    r_out, r_in = size * 0.36, size * 0.14
    d = np.hypot(xx - cx, yy - cy)
    ring = (d < r_out) & (d > r_in)
    brightness = rng.uniform(165, 180)
    angle = np.arctan2(yy - cy, xx - cx)
    texture = 8 * np.sin(angle * 24 + rng.uniform(0, 6.28)) + rng.normal(0, 4, (size, size))  # machined grooves
    metal = brightness + texture
    for c, tint in enumerate(VARIANTS[variant]):
        img[..., c] = np.where(ring, metal * tint, img[..., c])
    mask = np.zeros((size, size), np.uint8)
    if defect == "scratch":
        a = rng.uniform(0, 2 * np.pi)
        rr = rng.uniform(r_in + 4, r_out - 10)
        p0 = (int(cx + rr * np.cos(a)), int(cy + rr * np.sin(a)))
        p1 = (int(p0[0] + size * 0.18 * np.cos(a + 1.6)), int(p0[1] + size * 0.18 * np.sin(a + 1.6)))
        cv2.line(mask, p0, p1, 255, max(2, size // 48))
        img[mask > 0] = (35, 30, 30)
    elif defect == "blob":
        a = rng.uniform(0, 2 * np.pi)
        rr = (r_in + r_out) / 2
        center = (int(cx + rr * np.cos(a)), int(cy + rr * np.sin(a)))
        cv2.circle(mask, center, max(3, size // 16), 255, -1)
        img[mask > 0] = (20, 60, 120)  # rust-coloured stain
    elif defect == "chip":
        a = rng.uniform(0, 2 * np.pi)
        center = (int(cx + r_out * np.cos(a)), int(cy + r_out * np.sin(a)))
        cv2.circle(mask, center, max(4, size // 10), 255, -1)
        mask &= (ring * 255).astype(np.uint8)
        img[mask > 0] = np.stack([base] * 3, axis=2)[mask > 0]
    return np.clip(img, 0, 255).astype(np.uint8), mask


def write_dataset(root: str | Path, n_train: int = 30, n_test_good: int = 10, n_test_bad: int = 10,
                  size: int = 128, seed: int = 0) -> Path:
    """An MVTec-style category: train/good, test/good, test/<defect>, ground_truth/<defect>."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for sub in ("train/good", "test/good"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        cv2.imwrite(str(root / "train/good" / f"{i:03d}.png"), make_part(rng, size)[0])
    for i in range(n_test_good):
        cv2.imwrite(str(root / "test/good" / f"{i:03d}.png"), make_part(rng, size)[0])
    for i in range(n_test_bad):
        defect = DEFECTS[i % len(DEFECTS)]
        img, mask = make_part(rng, size, defect)
        (root / "test" / defect).mkdir(parents=True, exist_ok=True)
        (root / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "test" / defect / f"{i:03d}.png"), img)
        cv2.imwrite(str(root / "ground_truth" / defect / f"{i:03d}_mask.png"), mask)
    return root
