"""Feature extraction on the workstation (torch), with the runtime's own preprocessing."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from edgead.images import read_image
from edgead.preprocess import PreprocessConfig, preprocess


def load_batches(paths: list[Path], cfg: PreprocessConfig, batch_size: int = 8) -> Iterator[np.ndarray]:
    """Preprocessed N x 3 x H x W float32 batches (same function as the Pi runtime)."""
    for i in range(0, len(paths), batch_size):
        yield np.concatenate([preprocess(read_image(p), cfg)[0] for p in paths[i : i + batch_size]])


@torch.no_grad()
def extract_features(graph: torch.nn.Module, paths: list[Path], cfg: PreprocessConfig,
                     batch_size: int = 8, progress: bool = False, desc: str = "features") -> np.ndarray:
    """(N, D, h, w) float32 patch features from the torch graph."""
    from tqdm import tqdm

    out = []
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, file=sys.stderr)
    for batch in load_batches(paths, cfg, batch_size):
        out.append(graph(torch.from_numpy(batch)).numpy())
        bar.update(len(batch))
    bar.close()
    return np.concatenate(out)
