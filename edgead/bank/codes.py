"""The int8 form of a memory bank: ``bank ~ mean + scale[:, None] * codes``.

Codes are symmetric per row around the bank mean: distances are translation invariant, so
centring costs nothing and halves the quantization range.  The dequantized bank *is* the model
(export fits thresholds on it; the int8 search multiplies with the codes as they are).
"""

from __future__ import annotations

import numpy as np


def quantize_bank(bank: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float (N, D) -> (codes int8 (N, D), scale float32 (N,), mean float32 (D,)) with
    ``bank ~ mean + scale[:, None] * codes``: symmetric per row around the bank mean."""
    b = np.asarray(bank, dtype=np.float32)
    mean = b.mean(axis=0, dtype=np.float64).astype(np.float32)
    centred = b - mean
    scale = np.abs(centred).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    codes = np.clip(np.rint(centred / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale.astype(np.float32), mean


def dequantize_bank(codes: np.ndarray, scale: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The float32 bank the codes stand for."""
    return (codes.astype(np.float32) * scale[:, None].astype(np.float32)) + mean.astype(np.float32)
