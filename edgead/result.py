"""The result of scoring one frame."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


class ScoreResult:
    """Score of one frame.

    ``normalized_score`` is ``score / threshold``: 1.0 is the decision boundary.
    ``anomaly_map`` (float32, H x W) is in the pixel coordinates of the frame that was
    scored (the full frame, before ROI crop / resize), or None when not requested.  The model
    passes ``map_fn`` instead of a map: the upsampling and smoothing then run on first access
    (timed as ``timings_ms["map"]``), after the decision -- the reject pulse does not wait for
    a heatmap that only the log and the API may want.
    ``timings_ms`` holds per-stage latency: preprocess, backbone, search, score, total
    (and decode when the model decoded the bytes itself, map once computed).
    """

    def __init__(self, score: float, normalized_score: float, threshold: float, is_anomaly: bool,
                 anomaly_map: np.ndarray | None = None, timings_ms: dict[str, float] | None = None,
                 map_fn: Callable[[], np.ndarray] | None = None):
        self.score = score
        self.normalized_score = normalized_score
        self.threshold = threshold
        self.is_anomaly = is_anomaly
        self.timings_ms = {} if timings_ms is None else timings_ms
        self._map = anomaly_map
        self._map_fn = map_fn

    @property
    def anomaly_map(self) -> np.ndarray | None:
        if self._map is None and self._map_fn is not None:
            t0 = time.perf_counter()
            self._map, self._map_fn = self._map_fn(), None
            self.timings_ms["map"] = (time.perf_counter() - t0) * 1e3
        return self._map

    @property
    def has_map(self) -> bool:
        return self._map is not None or self._map_fn is not None

    @property
    def decision(self) -> str:
        return "reject" if self.is_anomaly else "ok"

    def to_dict(self) -> dict:
        return {
            "score": float(self.score),
            "normalized_score": float(self.normalized_score),
            "threshold": float(self.threshold),
            "is_anomaly": bool(self.is_anomaly),
            "decision": self.decision,
            "latency_ms": {k: round(float(v), 3) for k, v in self.timings_ms.items()},
        }

    def __repr__(self) -> str:
        return (f"ScoreResult(score={self.score!r}, normalized_score={self.normalized_score!r}, "
                f"decision={self.decision!r}, map={'yes' if self.has_map else 'no'})")
