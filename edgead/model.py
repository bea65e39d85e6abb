"""An inspection model loaded from an artifact: preprocess -> backbone -> scorer -> decision.

Runtime only: numpy + onnxruntime (+ hnswlib). Never imports torch.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from edgead.artifact import manifest_sha256, verify_artifact
from edgead.backbone import Backbone
from edgead.decision import Decision
from edgead.errors import ArtifactError, ConfigError
from edgead.images import decode_image
from edgead.preprocess import PreprocessConfig, map_to_frame, preprocess
from edgead.result import ScoreResult
from edgead.scorer.anomaly_map import upsample_and_smooth
from edgead.scorer.padim import PadimScorer
from edgead.scorer.patchcore import PatchCoreScorer

PRECISIONS = ("int8", "fp32")
BACKBONE_FILES = {"fp32": "backbone.onnx", "int8": "backbone.int8.onnx"}


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable array ({exc})") from None


def _load_scorer(model_dir: Path, manifest: dict, search: str, threads: int):
    method = manifest["method"]
    if method == "patchcore":
        pc = manifest.get("patchcore", {})
        index = model_dir / "hnsw.bin"
        return PatchCoreScorer(
            _load_npy(model_dir / "memory.npy"),
            num_neighbors=pc.get("num_neighbors", 9),
            backend=search,
            index_path=index if index.is_file() else None,
            hnsw_params=pc.get("hnsw"),
            threads=threads,
        )
    if method == "padim":
        try:
            with np.load(model_dir / "gaussian.npz", allow_pickle=False) as g:
                return PadimScorer(g["mean"], g["precision"])
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{model_dir / 'gaussian.npz'}: unreadable ({exc})") from None
    raise ArtifactError(f"{model_dir / 'manifest.json'}: unknown method {method!r}")


class InspectionModel:
    """Scores frames with one exported artifact. Not re-entrant: serialise calls (the daemon
    runs one inference worker); a lock guards against accidental concurrent use."""

    def __init__(self, path: str | Path, precision: str | None = None, threads: int = 1, search: str = "auto"):
        self.path = Path(path)
        self.manifest = verify_artifact(self.path)
        self.sha256 = manifest_sha256(self.path)
        precision = precision or self.manifest.get("default_precision", "int8")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        onnx_file = self.path / BACKBONE_FILES[precision]
        if BACKBONE_FILES[precision] not in self.manifest["files"]:
            raise ArtifactError(f"{onnx_file}: this artifact has no {precision} backbone")
        self.precision = precision
        self.preprocess_cfg = PreprocessConfig.from_dict(self.manifest["preprocess"])
        self.backbone = Backbone(onnx_file, threads=threads)
        self.scorer = _load_scorer(self.path, self.manifest, search, threads)
        thresholds = self.manifest.get("thresholds", {})
        self.decision = Decision(float(thresholds.get(precision, self.manifest["threshold"])))
        self.map_sigma = float(self.manifest.get("map_sigma", 4.0))
        self._input = np.empty((1, 3, *self.preprocess_cfg.input_size), dtype=np.float32)
        self._lock = threading.Lock()

    # -- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def version(self) -> str:
        return str(self.manifest.get("model_version", self.manifest.get("created", "")))

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
        return search.name if search is not None else "mahalanobis"

    # -- scoring ----------------------------------------------------------------------------
    def features(self, image: np.ndarray) -> tuple[np.ndarray, object, dict]:
        """Frame -> (patch features (D, h, w), geometry, timings)."""
        t0 = time.perf_counter()
        batch, geometry = preprocess(image, self.preprocess_cfg, out=self._input)
        t1 = time.perf_counter()
        feats = self.backbone(batch)[0]
        t2 = time.perf_counter()
        return feats, geometry, {"preprocess": (t1 - t0) * 1e3, "backbone": (t2 - t1) * 1e3}

    def score_features(self, feats: np.ndarray, with_map: bool = True) -> tuple[float, np.ndarray | None, dict]:
        """Patch features (D, h, w) -> (image score, anomaly map at input size or None, timings)."""
        t0 = time.perf_counter()
        if isinstance(self.scorer, PatchCoreScorer):
            patch_dist, nn_idx, patches = self.scorer.patch_scores(feats)
            t1 = time.perf_counter()
            score = self.scorer.image_score(patch_dist, nn_idx, patches)
            amap = upsample_and_smooth(patch_dist, self.input_size, self.map_sigma) if with_map else None
        else:
            patch_dist = self.scorer.patch_scores(feats)
            t1 = time.perf_counter()
            amap = upsample_and_smooth(patch_dist, self.input_size, self.map_sigma)
            score = float(amap.max())
        t2 = time.perf_counter()
        return score, amap, {"search": (t1 - t0) * 1e3, "score": (t2 - t1) * 1e3}

    def score(self, image: np.ndarray, with_map: bool = True) -> ScoreResult:
        """Score one frame (BGR uint8 HxWx3 or grey HxW, any size)."""
        with self._lock:
            t_start = time.perf_counter()
            feats, geometry, timings = self.features(image)
            score, amap, score_timings = self.score_features(feats, with_map)
            t0 = time.perf_counter()
            frame_map = map_to_frame(amap, geometry) if amap is not None else None
            timings.update(score_timings)
            timings["score"] += (time.perf_counter() - t0) * 1e3
            timings["total"] = (time.perf_counter() - t_start) * 1e3
            return self.decision.result(score, frame_map, timings)

    def score_bytes(self, data: bytes, with_map: bool = True, name: str = "upload") -> ScoreResult:
        t0 = time.perf_counter()
        image = decode_image(data, name)
        decode_ms = (time.perf_counter() - t0) * 1e3
        result = self.score(image, with_map=with_map)
        result.timings_ms = {"decode": decode_ms, **result.timings_ms, "total": result.timings_ms["total"] + decode_ms}
        return result


def load_model(path: str | Path, precision: str | None = None, threads: int = 1, search: str = "auto") -> InspectionModel:
    """Load and verify an artifact directory; ArtifactError names the file and problem."""
    return InspectionModel(path, precision=precision, threads=threads, search=search)
