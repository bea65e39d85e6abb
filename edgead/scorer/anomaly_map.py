"""Patch-score grid -> smooth anomaly map at model input size."""

from __future__ import annotations

import cv2
import numpy as np


def gaussian_kernel_size(sigma: float) -> int:
    return 2 * int(4.0 * sigma + 0.5) + 1


def upsample_and_smooth(patch_scores: np.ndarray, input_size: tuple[int, int], sigma: float = 4.0) -> np.ndarray:
    """(h, w) patch scores -> (H, W) float32: bilinear upsampling, Gaussian blur (sigma px)."""
    h, w = input_size
    amap = cv2.resize(patch_scores.astype(np.float32, copy=False), (w, h), interpolation=cv2.INTER_LINEAR)
    if sigma > 0:
        k = gaussian_kernel_size(sigma)
        amap = cv2.GaussianBlur(amap, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return amap
