"""`edgead export --auto`: candidate specs, the budgeted choice and the small pseudo-defects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgead.errors import ConfigError
from edgead.preprocess import PreprocessConfig

pytest.importorskip("torch")
from edgead_export.auto import apply_spec, choose  # noqa: E402
from edgead_export.pseudo_defects import small_pseudo_defect  # noqa: E402
from edgead_export.pipeline import ExportConfig  # noqa: E402


def test_apply_spec_sets_size_tiles_coreset_and_roi():
    base = ExportConfig(data=Path("d"), out=Path("o"), coreset=0.1)
    cfg = apply_spec(base, "size=256x320 tiles=2x3 banks=per_tile coreset=0.01 coreset_max=0 resize=letterbox roi=auto")
    assert cfg.preprocess.input_size == (256, 320) and cfg.preprocess.resize_mode == "letterbox"
    assert cfg.tiling.grid == (2, 3) and cfg.tiling.overlap == 0.25 and cfg.tiling.banks == "per_tile"
    assert cfg.coreset == 0.01 and cfg.coreset_max is None and cfg.roi_auto
    assert apply_spec(base, "roi=0.1,0.1,0.5,0.5").preprocess.roi_units == "fraction"
    fast = apply_spec(base, "interp=linear seed=3")
    assert fast.preprocess.interpolation == "linear" and base.preprocess.interpolation == "area" and fast.seed == 3
    eq = apply_spec(base, "photometric=equalize")
    assert eq.preprocess.photometric == "equalize" and base.preprocess.photometric == "none"
    assert apply_spec(base, "") == base
    for bad in ("size=100", "tiles=0x1", "depth=3", "size", "interp=cubic", "photometric=gamma"):
        with pytest.raises(ConfigError):
            apply_spec(base, bad)


def test_choose_best_auroc_within_budget_ties_to_faster():
    rows = [{"spec": "a", "auroc": 0.90, "pi_ms_estimate": 50}, {"spec": "b", "auroc": 0.95, "pi_ms_estimate": 200},
            {"spec": "c", "auroc": 0.949, "pi_ms_estimate": 120}, {"spec": "d", "auroc": 0.80, "pi_ms_estimate": 30}]
    assert choose(rows, None)[0]["spec"] == "c"      # 0.949 ties with 0.95 (within 0.002) and is faster
    assert choose(rows, 100) == (rows[0], True)
    assert choose(rows, 10) == (rows[3], False)       # nothing fits: the fastest, flagged


def test_small_pseudo_defect_stays_small_and_inside_the_roi():
    img = np.full((200, 300, 3), 120, np.uint8)
    pre = PreprocessConfig(roi=(100, 50, 150, 100))
    rng = np.random.default_rng(0)
    for _ in range(10):
        changed = np.any(small_pseudo_defect(img, rng, pre) != img, axis=2)
        ys, xs = np.nonzero(changed)
        assert changed.sum() > 0 and changed.mean() < 0.02
        assert xs.min() >= 100 - 15 and xs.max() < 250 + 15 and ys.min() >= 50 - 15 and ys.max() < 150 + 15
