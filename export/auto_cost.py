"""What a candidate will cost on the Pi, known before any feature is extracted.

`--auto` keeps every candidate inside a latency budget without exporting it: the time to the
decision is estimated from the candidate's shape (backbone multiply-accumulates per tile, tiles,
query patches, bank rows), with constants fitted to this project's one-thread INT8 measurements
of the default model (docs/benchmarks.md, "Latency per stage" and "Latency against input
resolution"), then scaled by the Pi factor. The estimate is deterministic, so a loaded
workstation does not push candidates out of the budget (a timed estimate did).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgead.fit.coreset import coreset_size
from edgead.orientations import bank_share

# One-thread INT8 on the workstation, the default model: its backbone and preprocessing, and
# its search as a line through two bank sizes (docs/benchmarks.md, "Latency per stage"); the
# top-k rule's certified search costs a little more than the single maximum's.
BACKBONE_MS_DEFAULT = 2.33
REFERENCE_MACS = 243_268_928  # conv_macs of the default graph (Lite0, taps 4 + 10, 224 px); a test checks it
PREPROCESS_MS = 0.7
SEARCH_MS_PER_PATCH = 1.1 / 784
SEARCH_MS_PER_PATCH_ROW = 0.8 / (784 * 12_700)
TOPK_SEARCH_FACTOR = 1.2
REFERENCE_DIM = 152


@dataclass(frozen=True)
class CostEstimate:
    """One candidate's estimated time to the decision, one thread (ms)."""

    backbone_ms: float
    search_ms: float
    bank_rows: int
    here_ms: float

    def pi_ms(self, factor: float) -> float:
        return self.here_ms * factor


@torch.no_grad()
def conv_macs(graph: torch.nn.Module, input_size: tuple[int, int]) -> tuple[int, tuple[int, ...]]:
    """(multiply-accumulates of the graph's convolutions and linear layers for one input, the
    shape of its output without the batch axis)."""
    total = 0

    def count(module, _inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, torch.nn.Linear):
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in graph.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        out = graph(torch.zeros(1, 3, *input_size))
    finally:
        for h in hooks:
            h.remove()
    return total, tuple(out.shape[1:])


def bank_rows(cfg, fit_images: int, grid: tuple[int, int]) -> int:
    """Rows of every bank together, as the export's coreset will choose them."""
    groups = cfg.tiling.bank_count
    patches = fit_images * (cfg.maps_per_image // groups) * grid[0] * grid[1]
    cap = None if cfg.coreset_max is None else -(-cfg.coreset_max // groups)
    per_bank = coreset_size(patches, bank_share(cfg.coreset, cfg.orientations))
    return groups * (per_bank if cap is None else min(per_bank, cap))


def estimate(cfg, macs: int, feature_dim: int, grid: tuple[int, int], fit_images: int) -> CostEstimate:
    """``macs``: one tile's (``conv_macs``)."""
    tiles = cfg.tiling.count
    backbone = tiles * BACKBONE_MS_DEFAULT * macs / REFERENCE_MACS
    rows = bank_rows(cfg, fit_images, grid)
    per_bank_rows = rows / cfg.tiling.bank_count
    patches = tiles * grid[0] * grid[1]
    search = (patches * (SEARCH_MS_PER_PATCH + SEARCH_MS_PER_PATCH_ROW * per_bank_rows)
              * feature_dim / REFERENCE_DIM * (TOPK_SEARCH_FACTOR if cfg.image_score == "topk_mean" else 1.0))
    return CostEstimate(backbone, search, rows, PREPROCESS_MS * tiles + backbone + search)
