"""An inspection model loaded from an artifact: preprocess -> backbone -> scorer -> decision.

The model composes the stages; what a scorer does inside is its own (:mod:`edgead.scorer.protocol`).
Runtime only: numpy + onnxruntime (+ hnswlib for the largest banks). Never imports torch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgead.artifact import manifest_sha256, verify_artifact
from edgead.backbone import Backbone
from edgead.decision import Decision
from edgead.errors import ArtifactError, ConfigError, EdgeadError
from edgead.heap import release_free_memory
from edgead.images import decode_image
from edgead.manifest import BACKBONE_FILES, MANIFEST, PRECISIONS
from edgead.orientations import oriented
from edgead.result import ScoreResult
from edgead.scorer.protocol import Scorer
from edgead.scorer.registry import scorer_class
from edgead.threads import limit_threads
from edgead.tiling import frame_inputs, merge_maps

log = logging.getLogger(__name__)


class InspectionModel:
    """Scores frames with one exported artifact. Not re-entrant: serialise calls (the daemon
    runs one inference worker); a lock guards against accidental concurrent use."""

    def __init__(self, path: str | Path, precision: str | None = None, threads: int = 1, search: str = "auto",
                 batch_tiles: bool = False):
        self.path = Path(path)
        self.manifest = verify_artifact(self.path)
        self.sha256 = manifest_sha256(self.path)
        precision = precision or self.manifest.default_precision
        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        onnx_file = self.path / BACKBONE_FILES[precision]
        if BACKBONE_FILES[precision] not in self.manifest.files:
            hint = " (INT8 passed parity at export; export with --keep-fp32 to keep FP32)" if precision == "fp32" else ""
            raise ArtifactError(f"{onnx_file}: this artifact has no {precision} backbone{hint}")
        self.precision = precision
        self.preprocess_cfg = self.manifest.preprocess
        self.tiling = self.manifest.tiling
        # tiles through onnxruntime as one batch, or one run per tile (the default: measured faster,
        # bench/tile_batching.py, docs/benchmarks.md; the exported ONNX has a dynamic batch axis for both)
        self.batch_tiles = batch_tiles
        limit_threads(threads)  # BLAS (exact search) and OpenCV: the same budget as onnxruntime
        self.backbone = Backbone(onnx_file, threads=threads, integer=precision == "int8")
        scorer = scorer_class(self.manifest.method, self.path / MANIFEST)
        self.scorer: Scorer = scorer.from_artifact(self.path, self.manifest, search=search, threads=threads)
        self.decision = Decision(self.manifest.threshold_for(precision))
        self._input = np.empty((self.tiling.count, 3, *self.preprocess_cfg.input_size), dtype=np.float32)
        self._lock = threading.Lock()

    # -- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest.name or self.path.name

    @property
    def version(self) -> str:
        return self.manifest.model_version or self.manifest.created or ""

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocess_cfg.input_size

    @property
    def threshold(self) -> float:
        return self.decision.threshold

    def set_threshold(self, value: float) -> None:
        self.decision = Decision(value)

    @property
    def search_backend(self) -> str:
        return self.scorer.backend

    # -- scoring ----------------------------------------------------------------------------
    def inputs(self, image: np.ndarray) -> tuple[np.ndarray, list]:
        """Frame -> (backbone batch (tiles, 3, H, W), one geometry per tile): the export's own function."""
        return frame_inputs(image, self.preprocess_cfg, self.tiling, out=self._input)

    def features(self, image: np.ndarray, orientations: str = "fixed") -> tuple[np.ndarray, list, dict]:
        """Frame -> (patch features (tiles, D, h, w), geometries, timings); ``orientations`` other
        than "fixed" (a training frame's turned copies, edgead.orientations): (orientations x
        tiles, D, h, w)."""
        t0 = time.perf_counter()
        batch, geometries = self.inputs(image)
        batch = oriented(batch, orientations)
        t1 = time.perf_counter()
        if self.batch_tiles or len(batch) == 1:
            feats = self.backbone(batch)
        else:
            feats = np.concatenate([self.backbone(batch[i : i + 1]) for i in range(len(batch))])
        t2 = time.perf_counter()
        return feats, geometries, {"preprocess": (t1 - t0) * 1e3, "backbone": (t2 - t1) * 1e3}

    def score_features(self, feats: np.ndarray, with_map: bool = True,
                       lazy: bool = False) -> tuple[float, np.ndarray | Callable | None, dict]:
        """Patch features (tiles, D, h, w) or (D, h, w) -> (image score, anomaly maps at input size
        (tiles, H, W) or None, timings).  ``lazy``: the maps may come as a function that computes
        them, for a scorer whose image score alone costs less (see the scorer protocol)."""
        feats = feats[None] if feats.ndim == 3 else feats
        scored = self.scorer.score(feats, with_map=with_map, lazy=lazy)
        return scored.score, scored.maps, {"search": scored.search_ms, "score": scored.score_ms}

    def score(self, image: np.ndarray, with_map: bool = True, defer_map: bool = True) -> ScoreResult:
        """Score one frame (BGR uint8 HxWx3 or grey HxW, any size).

        ``defer_map`` (default): the decision comes first and the map is computed when
        ``result.anomaly_map`` is first read -- right for a daemon that keeps the maps of rejects
        and a sample of goods.  ``defer_map=False`` when every map will be read anyway (eval,
        an explicit heatmap request): one full search serves both the score and the map."""
        with self._lock:
            t_start = time.perf_counter()
            feats, geometries, timings = self.features(image)
            score, maps, score_timings = self.score_features(feats, with_map, lazy=defer_map)
            timings.update(score_timings)
            timings["total"] = (time.perf_counter() - t_start) * 1e3
        merge = self.tiling.merge
        if maps is None:
            return self.decision.result(score, None, timings)
        if callable(maps):  # PatchCore: upsampled and smoothed when first asked for (after the decision)
            return self.decision.result(score, None, timings, map_fn=lambda: merge_maps(maps(), geometries, merge))
        return self.decision.result(score, merge_maps(maps, geometries, merge), timings)

    def warm_up(self) -> None:
        """Score one mid-grey frame with its map (onnxruntime allocates its buffers, the int8
        search its scratch), then give the load's freed memory back to the OS: the first
        inspected part is then as fast as the rest, and RSS shows what serving needs.  The frame
        holds a pixel ROI; a warm-up that fails anyway is logged, never fatal."""
        h, w = self.input_size
        cfg = self.preprocess_cfg
        if cfg.roi is not None and cfg.roi_units == "px":
            h, w = max(h, int(np.ceil(cfg.roi[1] + cfg.roi[3]))), max(w, int(np.ceil(cfg.roi[0] + cfg.roi[2])))
        try:
            self.score(np.full((h, w, 3), 128, np.uint8), with_map=True, defer_map=False).anomaly_map
        except EdgeadError as exc:
            log.warning("model warm-up skipped: %s", exc)
        release_free_memory()

    def score_bytes(self, data: bytes, with_map: bool = True, name: str = "upload",
                    defer_map: bool = True) -> ScoreResult:
        t0 = time.perf_counter()
        image = decode_image(data, name)
        decode_ms = (time.perf_counter() - t0) * 1e3
        result = self.score(image, with_map=with_map, defer_map=defer_map)
        result.timings_ms = {"decode": decode_ms, **result.timings_ms, "total": result.timings_ms["total"] + decode_ms}
        return result


def load_model(path: str | Path, precision: str | None = None, threads: int = 1, search: str = "auto",
               batch_tiles: bool = False, warm_up: bool = False) -> InspectionModel:
    """Load and verify an artifact directory; ArtifactError names the file and problem.
    ``warm_up``: score one frame before returning (:meth:`InspectionModel.warm_up`; the daemon)."""
    model = InspectionModel(path, precision=precision, threads=threads, search=search, batch_tiles=batch_tiles)
    if warm_up:
        model.warm_up()
    else:
        release_free_memory()
    return model
