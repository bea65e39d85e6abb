"""`edgead export --method spade`: keep every training image's global feature and feature map."""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

from edgead.manifest import spade_file
from edgead.scorer.spade import SpadeGallery, gallery_arrays

TIMED_FRAMES = 5


def write_spade(cfg, writer, feats: np.ndarray, manifest: dict, log) -> None:
    """Write the gallery file and the manifest's ``spade`` section; log what it costs to serve."""
    n, d, h, w = feats.shape
    arrays = gallery_arrays(feats)
    path = writer.path(spade_file())
    np.savez(path, **arrays)
    scorer = SpadeGallery(arrays, cfg.spade_k, cfg.spade_map_images)
    decision, with_map = time_scorer(scorer, feats[:TIMED_FRAMES])
    manifest["spade"] = {"k": scorer.k, "map_images": scorer.map_images, "images": n,
                         "bytes_in_memory": int(scorer.nbytes), "decision_ms": round(decision, 3),
                         "map_ms": round(with_map, 2)}
    manifest["bank_size"] = int(n * h * w)
    log(f"SPADE gallery: {n} images x {h}x{w} patches x {d} = {n * h * w} rows, "
        f"{scorer.nbytes / 1e6:.1f} MB in memory (int8 codes; grows with the training images), "
        f"{path.stat().st_size / 1e6:.1f} MB on disk")
    log(f"SPADE scoring on this machine, one thread, after the backbone: decision {decision:.2f} ms "
        f"(global kNN, k={scorer.k}), map {with_map:.1f} ms (each of {h * w} patches against "
        f"{scorer.map_images} x {h * w} rows; a Pi 5 is roughly 5x slower)")


def time_scorer(scorer: SpadeGallery, feats: np.ndarray) -> tuple[float, float]:
    """Median ms of the decision (global kNN) and of the map, one thread."""
    decision, maps = [], []
    with threadpool_limits(1):
        for f in feats:
            t0 = time.perf_counter()
            _, images = scorer.nearest_images(f)
            t1 = time.perf_counter()
            scorer.patch_scores(f, images)
            decision.append((t1 - t0) * 1e3)
            maps.append((time.perf_counter() - t1) * 1e3)
    return float(np.median(decision)), float(np.median(maps))
