"""An inspection model loaded from an artifact: preprocess -> backbone -> scorer -> decision.

Runtime only: numpy + onnxruntime (+ hnswlib). Never imports torch.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgead.artifact import manifest_sha256, verify_artifact
from edgead.backbone import Backbone
from edgead.decision import Decision
from edgead.errors import ArtifactError, ConfigError, EdgeadError
from edgead.heap import release_free_memory
from edgead.images import decode_image
from edgead.manifest import BACKBONE_FILES, MANIFEST, PRECISIONS, Manifest, SpadeInfo, scorer_files
from edgead.result import ScoreResult
from edgead.scorer.anomaly_map import upsample_and_smooth
from edgead.scorer.bank_store import load_bank, load_bank_knn
from edgead.scorer.padim import PadimScorer
from edgead.scorer.patchcore import PatchCoreScorer, topk_mean
from edgead.scorer.simplenet import SimpleNetScorer
from edgead.scorer.spade import SpadeScorer
from edgead.threads import limit_threads
from edgead.tiling import frame_inputs, merge_maps

log = logging.getLogger(__name__)


def _load_scorers(model_dir: Path, manifest: Manifest, search: str, threads: int) -> list:
    """One scorer (shared by every tile) or one per tile position."""
    return [_load_scorer(model_dir, manifest, scorer_files(manifest.method, t), search, threads)
            for t in manifest.scorer_tiles()]


def _load_scorer(model_dir: Path, manifest: Manifest, files: dict[str, str], search: str, threads: int):
    method = manifest.method
    if method == "patchcore":
        pc = manifest.pc
        index = model_dir / files["index"]
        bank, quantized = load_bank(model_dir, manifest.files, files["tag"], dequantize=False)
        rows = len(bank) if bank is not None else len(quantized[0])
        return PatchCoreScorer(
            bank,
            quantized=quantized,
            bank_knn=load_bank_knn(model_dir, manifest.files, rows, files["tag"]),
            image_score=pc.image_score.model_dump(exclude_none=True),
            num_neighbors=pc.num_neighbors,
            backend=search,
            index_path=index if index.is_file() else None,
            hnsw_params=pc.hnsw.model_dump(exclude_none=True) if pc.hnsw is not None else None,
            threads=threads,
        )
    if method == "padim":
        try:
            with np.load(model_dir / files["gaussian"], allow_pickle=False) as g:
                return PadimScorer(g["mean"], g["precision"])
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{model_dir / files['gaussian']}: unreadable ({exc})") from None
    if method == "spade":
        section = manifest.spade or SpadeInfo()
        return SpadeScorer.load(model_dir / files["gallery"], section.k, section.map_images)
    if method == "simplenet":
        section = manifest.simplenet
        return SimpleNetScorer(section.image_score.model_dump() if section is not None else None)
    raise ArtifactError(f"{model_dir / MANIFEST}: unknown method {method!r}")


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
        # tiles through onnxruntime as one batch, or one run per tile (default: 7-20 % faster at 1-2
        # threads on x86, bench/tile_batching.py; the exported ONNX has a dynamic batch axis for both)
        self.batch_tiles = batch_tiles
        limit_threads(threads)  # BLAS (exact search) and OpenCV: the same budget as onnxruntime
        self.backbone = Backbone(onnx_file, threads=threads)
        self.scorers = _load_scorers(self.path, self.manifest, search, threads)
        self.scorer = self.scorers[0]
        self.decision = Decision(self.manifest.threshold_for(precision))
        self.map_sigma = self.manifest.map_sigma
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
        search = getattr(self.scorer, "search", None)
        if search is not None:
            return search.name
        return {"padim": "mahalanobis", "simplenet": "none", "spade": "exact"}[self.scorer.method]

    # -- scoring ----------------------------------------------------------------------------
    def inputs(self, image: np.ndarray) -> tuple[np.ndarray, list]:
        """Frame -> (backbone batch (tiles, 3, H, W), one geometry per tile): the export's own function."""
        return frame_inputs(image, self.preprocess_cfg, self.tiling, out=self._input)

    def features(self, image: np.ndarray) -> tuple[np.ndarray, list, dict]:
        """Frame -> (patch features (tiles, D, h, w), geometries, timings)."""
        t0 = time.perf_counter()
        batch, geometries = self.inputs(image)
        t1 = time.perf_counter()
        if self.batch_tiles or len(batch) == 1:
            feats = self.backbone(batch)
        else:
            feats = np.concatenate([self.backbone(batch[i : i + 1]) for i in range(len(batch))])
        t2 = time.perf_counter()
        return feats, geometries, {"preprocess": (t1 - t0) * 1e3, "backbone": (t2 - t1) * 1e3}

    @staticmethod
    def _stacked(feats: np.ndarray) -> np.ndarray:
        """(tiles, D, h, w) -> (D, tiles*h, w): every tile's patches, for one search of a shared bank."""
        n, d, h, w = feats.shape
        return feats[0] if n == 1 else feats.transpose(1, 0, 2, 3).reshape(d, n * h, w)

    def _tile_scorers(self, tiles: int) -> list:
        """The scorer of each tile: one per tile position, or the shared one for every tile."""
        return self.scorers if len(self.scorers) > 1 else self.scorers * tiles

    def _patchcore_tiles(self, feats: np.ndarray) -> list[tuple]:
        """Per tile: (scorer, patch distances (h, w), NN indices, patches); a shared bank is
        searched once for all tiles' patches."""
        n, d, h, w = feats.shape
        if len(self.scorers) > 1:
            return [(s, *s.patch_scores(f)) for s, f in zip(self.scorers, feats)]
        dist, idx, patches = self.scorer.patch_scores(self._stacked(feats))
        dist, idx, patches = dist.reshape(n, h, w), idx.reshape(n, h * w), patches.reshape(n, h * w, d)
        return [(self.scorer, dist[i], idx[i], patches[i]) for i in range(n)]

    def _maps(self, patch_dists: list[np.ndarray]) -> np.ndarray:
        return np.stack([upsample_and_smooth(d, self.input_size, self.map_sigma) for d in patch_dists])

    def score_features(self, feats: np.ndarray, with_map: bool = True,
                       lazy: bool = False) -> tuple[float, np.ndarray | Callable | None, dict]:
        """Patch features (tiles, D, h, w) or (D, h, w) -> (image score, anomaly maps at input size
        (tiles, H, W) or None, timings).  Image score: reweighted = max over tiles, topk_mean =
        over all tiles' patches.  ``lazy``: PatchCore scores with the certified largest distances
        alone (int8 search) and returns a function that computes the maps instead (they need
        every patch's nearest neighbour, the score does not)."""
        feats = feats[None] if feats.ndim == 3 else feats
        t0 = time.perf_counter()
        patchcore = isinstance(self.scorer, PatchCoreScorer)
        if patchcore and lazy and hasattr(self.scorer.search, "topk_nn"):
            # the decision needs the image score only: the largest patch distances, certified
            # without searching every patch; the maps (every patch searched) wait until asked for
            if self.scorer.rule == "topk_mean":  # the k largest over the whole frame, all tiles
                groups = [(self.scorer, self._stacked(feats))] if len(self.scorers) == 1 else zip(self.scorers, feats)
                tops = [s.top_distances(f) for s, f in groups]
                score = topk_mean(np.concatenate([t[0] for t in tops]), self.scorer.topk)
                results = [(score, t[1]) for t in tops]
            else:  # reweighted: per tile, image score = max over tiles
                results = [s.image_score_only(f) for s, f in zip(self._tile_scorers(len(feats)), feats)]
                score = max(r[0] for r in results)
            t1 = t0 + sum(r[1] for r in results) / 1e3  # search time; the rest is the reweighting
            maps = (lambda: self._maps([t[1] for t in self._patchcore_tiles(feats)])) if with_map else None
        elif isinstance(self.scorer, SpadeScorer):  # one tile: the decision from the global kNN alone
            score, images = self.scorer.nearest_images(feats[0])
            t1 = time.perf_counter()
            map_fn = lambda: self._maps([self.scorer.patch_scores(feats[0], images)])  # noqa: E731
            maps = None if not with_map else map_fn if lazy else map_fn()
        elif patchcore:
            tiles = self._patchcore_tiles(feats)
            t1 = time.perf_counter()
            if self.scorer.rule == "topk_mean":
                score = topk_mean(np.concatenate([t[1].reshape(-1) for t in tiles]), self.scorer.topk)
            else:
                score = max(s.image_score(dist, idx, patches) for s, dist, idx, patches in tiles)
            dists = [t[1] for t in tiles]
            maps = None if not with_map else (lambda: self._maps(dists)) if lazy else self._maps(dists)
        else:
            dists = [s.patch_scores(f) for s, f in zip(self._tile_scorers(len(feats)), feats)]
            t1 = time.perf_counter()
            maps = self._maps(dists)
            score = self.scorer.image_score(dists, maps) if isinstance(self.scorer, SimpleNetScorer) \
                else float(maps.max())
        t2 = time.perf_counter()
        return score, maps, {"search": (t1 - t0) * 1e3, "score": (t2 - t1) * 1e3}

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
        if callable(maps):  # PatchCore, SPADE: upsampled and smoothed when first asked for (after the decision)
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
