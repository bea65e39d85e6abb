"""The daemon's side of the plant-floor outputs: which sinks the config enables, and the
:class:`PartResult` each scored (or failed) job becomes."""

from __future__ import annotations

import time
from typing import Any, Callable

from edgead.outputs.metrics import ServiceMetrics
from edgead.outputs.sinks import REGISTRY, Outputs, PartResult, StationState, load_sink
from edgead.service.config import EdgeadConfig
from edgead.service.worker import Job


def build_outputs(config: EdgeadConfig, metrics: ServiceMetrics, state: Callable[[], StationState],
                  trigger: Callable[[str], Any], token: str | None) -> Outputs:
    sinks = [load_sink(name, getattr(config, name), metrics, token) for name in REGISTRY if getattr(config, name).enabled]
    return Outputs(sinks, state, trigger, lambda name: metrics.output_errors.labels(name).inc())


def scored(outcome: Any) -> Callable[[int], PartResult]:
    """The result of a scored job (an edgead.service.pipeline.Outcome)."""
    r = outcome.result

    def make(part: int) -> PartResult:
        rid = outcome.id
        return PartResult(part=part, timestamp=outcome.timestamp, origin=outcome.origin, decision=r.decision,
                          score=float(r.score), normalized_score=float(r.normalized_score),
                          threshold=float(r.threshold), latency_ms=float(outcome.latency_ms.get("total", 0.0)),
                          id=rid, source=outcome.source, model_name=outcome.model.get("name", ""),
                          model_version=outcome.model.get("version", ""),
                          image_path=f"/results/{rid}/image" if outcome.image_stored else None,
                          heatmap_path=f"/results/{rid}/heatmap" if outcome.heatmap_stored else None)

    return make


def failed(job: Job, exc: BaseException, model: dict[str, str]) -> Callable[[int], PartResult]:
    """A part that got no result (camera or inference failure)."""

    def make(part: int) -> PartResult:
        return PartResult(part=part, timestamp=job.received_wall, origin=job.origin, decision="error",
                          latency_ms=(time.monotonic() - job.received) * 1e3, source=job.name if job.data else "",
                          model_name=model.get("name", ""), model_version=model.get("version", ""),
                          error=f"{type(exc).__name__}: {exc}")

    return make
