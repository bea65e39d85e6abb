"""The patch-feature graph's grid: the first tap's stride, or a finer one asked for with an "s<stride>" tap."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edgead.errors import EdgeadError  # noqa: E402
from edgead_export.backbones import build_backbone, split_grid_tap  # noqa: E402
from edgead_export.feature_graph import PatchFeatureGraph  # noqa: E402


def test_split_grid_tap():
    assert split_grid_tap([14, 19, "s8"]) == ([14, 19], 8)
    assert split_grid_tap([4, 10]) == ([4, 10], None)
    with pytest.raises(EdgeadError, match="at least one backbone tap"):
        split_grid_tap(["s8"])


@pytest.mark.parametrize("taps, grid, dim", [([4, 10], 16, 152), ([10, 14], 8, 304), ([10, 14, "s8"], 16, 304)])
def test_grid_follows_the_first_tap_or_the_stride_tap(taps, grid, dim):
    backbone = build_backbone("efficientnet-lite0", taps)
    with torch.no_grad():
        channels = [m.shape[1] for m in backbone(torch.zeros(1, 3, 128, 128))]
        graph = PatchFeatureGraph(backbone, "patchcore", channels).eval()
        out = graph(torch.rand(1, 3, 128, 128))
    # 128 px: stride 8 -> 16 x 16, stride 16 -> 8 x 8
    assert tuple(out.shape) == (1, dim, grid, grid)
