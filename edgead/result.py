"""The result of scoring one frame."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ScoreResult:
    """Score of one frame.

    ``normalized_score`` is ``score / threshold``: 1.0 is the decision boundary.
    ``anomaly_map`` (float32, H x W) is in the pixel coordinates of the frame that was
    scored (the full frame, before ROI crop / resize), or None when not requested.
    ``timings_ms`` holds per-stage latency: preprocess, backbone, search, score, total
    (and decode when the model decoded the bytes itself).
    """

    score: float
    normalized_score: float
    threshold: float
    is_anomaly: bool
    anomaly_map: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

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
