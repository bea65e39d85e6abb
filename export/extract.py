"""Feature extraction on the workstation (torch), with the runtime's own preprocessing."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from edgead.images import read_image
from edgead.orientations import orientation_count, oriented
from edgead.preprocess import PreprocessConfig
from edgead.tiling import TilingConfig, frame_inputs

UNTILED = TilingConfig()


def load_batches(paths: list[Path | np.ndarray], cfg: PreprocessConfig, batch_size: int = 8,
                 tiling: TilingConfig = UNTILED, orientations: str = "fixed") -> Iterator[np.ndarray]:
    """Preprocessed (images x orientations x tiles) x 3 x H x W float32 batches, image-major (the
    Pi runtime's own function, ``frame_inputs``), of image files or frames already decoded."""
    for i in range(0, len(paths), batch_size):
        yield np.concatenate([oriented(frame_inputs(p if isinstance(p, np.ndarray) else read_image(p), cfg, tiling)[0],
                                       orientations) for p in paths[i : i + batch_size]])


@torch.no_grad()
def extract_features(graph: torch.nn.Module, paths: list[Path | np.ndarray], cfg: PreprocessConfig,
                     batch_size: int = 8, progress: bool = False, desc: str = "features",
                     tiling: TilingConfig = UNTILED, orientations: str = "fixed") -> np.ndarray:
    """(images x orientations x tiles, D, h, w) float32 patch features from the torch graph,
    image-major (of image files or decoded frames; ``orientations``: edgead.orientations)."""
    from tqdm import tqdm

    out = []
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, file=sys.stderr)
    images_per_batch = max(1, batch_size // (tiling.count * orientation_count(orientations)))
    for i, batch in enumerate(load_batches(paths, cfg, images_per_batch, tiling, orientations)):
        out.append(graph(torch.from_numpy(batch)).numpy())
        bar.update(min(images_per_batch, len(paths) - i * images_per_batch))
    bar.close()
    return np.concatenate(out)
