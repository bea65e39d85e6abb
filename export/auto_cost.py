"""What a candidate will cost on the Pi, known before any feature is extracted.

`--auto` keeps every candidate inside a latency budget without exporting it: the time to the
decision is estimated from the candidate's shape (backbone multiply-accumulates per tile, tiles,
query patches, bank rows, feature dimension), with constants fitted to one-thread INT8
measurements of exported models (docs/benchmarks.md, "What a candidate costs"), then scaled by
the Pi factor. The estimate is deterministic, so a loaded
workstation does not push candidates out of the budget (a timed estimate did).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgead.fit.coreset import coreset_size
from edgead.orientations import bank_share

# One-thread INT8 on the workstation, in units of the default model's backbone (2.33 ms on a quiet
# host, docs/benchmarks.md "Latency per stage"); every other constant is a ratio to it measured in
# the same run (bench/auto_cost_check.py, docs/benchmarks.md "What a candidate costs").
BACKBONE_MS_DEFAULT = 2.33
REFERENCE_MACS = 243_268_928  # conv_macs of the default graph (Lite0, taps 4 + 10, 224 px); a test checks it
PREPROCESS_MS = 0.7           # resize + normalise of one tile
# The search of the top-k image score meets every query patch with every bank row (the int8
# GEMM, then an argmax per patch and the certified distances): a cost per query patch plus one
# per patch and bank row.  Twice the feature dimension measured 1.35x the time (the GEMM's share).
SEARCH_MS_PER_PATCH = 0.92e-3
SEARCH_MS_PER_PATCH_ROW = 0.88e-6
SEARCH_DIM_SHARE = 0.35       # the share of the search that grows with the feature dimension
REFERENCE_DIM = 152
# PaDiM: a d x d Mahalanobis product per position (1.4 ms for 784 positions at d = 100 where the
# default's backbone took 3.4 ms) and the smoothed map its score is the maximum of
PADIM_MS_PER_POSITION = 1.0 / 784
PADIM_REFERENCE_D = 100
PADIM_MAP_MS = 0.2


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
    patches = tiles * grid[0] * grid[1]
    if cfg.method == "padim":  # no bank: the Gaussians' products, one per position and tile
        rows = 0
        search = patches * PADIM_MS_PER_POSITION * (feature_dim / PADIM_REFERENCE_D) ** 2 + PADIM_MAP_MS * tiles
    else:
        rows = bank_rows(cfg, fit_images, grid)
        dim = 1.0 - SEARCH_DIM_SHARE + SEARCH_DIM_SHARE * feature_dim / REFERENCE_DIM
        search = patches * (SEARCH_MS_PER_PATCH + SEARCH_MS_PER_PATCH_ROW * rows / cfg.tiling.bank_count) * dim
    return CostEstimate(backbone, search, rows, PREPROCESS_MS * tiles + backbone + search)
