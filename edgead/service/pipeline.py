"""What the worker does for one job: capture or decode -> score -> reject pulse -> log -> metrics."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable


from edgead.capture.base import CaptureError
from edgead.capture.supervisor import SourceSupervisor
from edgead.errors import ImageError
from edgead.images import decode_image, shrink_to
from edgead.outputs.inspection_log import InspectionLog, Record
from edgead.outputs.metrics import ServiceMetrics
from edgead.service.config import EdgeadConfig
from edgead.service.frame_limits import check_frame_size, check_header, frame_pixel_limit
from edgead.service.model_holder import ModelHolder, identity_of
from edgead.service.worker import Job

log = logging.getLogger(__name__)


class NoSource(CaptureError):
    """The daemon has no frame source configured."""


def error_kind(exc: Exception) -> str:
    """The ``kind`` label of edgead_errors_total."""
    if isinstance(exc, ImageError):
        return "decode"
    if isinstance(exc, NoSource):
        return "no_source"
    if isinstance(exc, CaptureError):
        return "capture"
    return "inference"


@dataclass
class Outcome:
    """A scored job, as returned to the HTTP layer."""

    id: int | None
    timestamp: float
    origin: str
    source: str
    result: Any  # edgead.result.ScoreResult
    latency_ms: dict[str, float]
    model: dict[str, str]
    image_stored: bool = False
    heatmap_stored: bool = False
    image: Any = field(default=None, repr=False)  # the frame (for the live view; never serialised)


class Inspector:
    """The per-job pipeline. Runs on the inference worker thread only."""

    def __init__(self, config: EdgeadConfig, holder: ModelHolder, supervisor: SourceSupervisor | None,
                 store: InspectionLog, decided: Callable[[Job, bool, float], None] | None, metrics: ServiceMetrics,
                 on_state: Callable[[], None] | None = None):
        self.config = config
        self.holder = holder
        self.supervisor = supervisor
        self.store = store
        self.decided = decided  # the line's side of a decision (reject pulse, handshake, part FIFO)
        self.metrics = metrics
        self.on_state = on_state or (lambda: None)
        self._good_seen = 0
        self.consecutive_rejects = 0

    def _wants_map(self, job: Job) -> bool:
        c = self.config.inspection
        next_good_sampled = c.save_good_every > 0 and (self._good_seen + 1) % c.save_good_every == 0
        return job.heatmap or c.save_rejects or next_good_sampled

    def __call__(self, job: Job) -> Outcome:
        t_start = time.perf_counter()
        timings: dict[str, float] = {"queue": (time.monotonic() - job.received) * 1e3}
        model = self.holder.model  # one snapshot for the whole job (reload-safe)
        try:
            if job.data is None:
                if self.supervisor is None:
                    raise NoSource("no frame source configured (source.spec = none): POST an image to /score instead")
                t0 = time.perf_counter()
                try:
                    frame = self.supervisor.capture()
                finally:
                    self.on_state()
                timings["capture"] = (time.perf_counter() - t0) * 1e3
                image, reference, ts = frame.image, frame.monotonic, frame.timestamp
                source = frame.name
            else:
                t0 = time.perf_counter()
                limit = frame_pixel_limit(model, self.config.server)
                check_header(job.data, limit, job.name)  # refused before a decode could take the memory
                image = decode_image(job.data, job.name)
                check_frame_size(image.shape[1], image.shape[0], limit, job.name)  # a header that did not say
                timings["decode"] = (time.perf_counter() - t0) * 1e3
                reference, ts, source = job.received, job.received_wall, job.name
            # a heatmap asked for is needed anyway: one search for score and map; otherwise the
            # decision (and the reject pulse) first, the map only if the log keeps this frame
            result = model.score(image, with_map=self._wants_map(job), defer_map=not job.heatmap)
        except Exception as exc:
            self.metrics.errors.labels(error_kind(exc)).inc()
            raise
        reject = bool(result.is_anomaly)
        if self.decided is not None and job.actuate:
            self.decided(job, reject, reference)
        stage = dict(result.timings_ms)
        stage["inference"] = stage.pop("total", sum(stage.values()))
        stage.pop("decode", None)  # the service decodes; a model-side decode would be double-counted
        timings.update(stage)

        store_image = job.heatmap or (reject and self.config.inspection.save_rejects)
        if not reject:
            self._good_seen += 1
            every = self.config.inspection.save_good_every
            store_image = store_image or (every > 0 and self._good_seen % every == 0)
        identity = identity_of(model)  # the model that scored this job, even if a reload swapped it since
        t_log = time.perf_counter()
        record = Record(ts=ts, origin=job.origin, source=source, score=float(result.score),
                        normalized_score=float(result.normalized_score), threshold=float(result.threshold),
                        decision=result.decision, model_name=identity["name"], model_version=identity["version"],
                        model_sha256=identity["sha256"], latency_ms=timings)
        stored = None
        try:
            if job.record:
                kept = shrink_to(image, self.config.inspection.max_stored_side) if store_image else None
                stored = self.store.record(record, kept, result.anomaly_map if store_image else None,
                                           durable=job.answered)
        except Exception:  # a full/broken disk must not stop the line: the decision still goes out
            log.exception("inspection log: cannot record a result")
            self.metrics.log_errors.inc()
        timings["log"] = (time.perf_counter() - t_log) * 1e3
        timings["total"] = (time.perf_counter() - t_start) * 1e3 + timings["queue"]
        self.metrics.observe_result(result.decision, job.origin, float(result.normalized_score), timings)
        self.consecutive_rejects = self.consecutive_rejects + 1 if reject else 0
        self.on_state()
        return Outcome(id=stored.id if stored else None, timestamp=ts, origin=job.origin, source=source,
                       result=result, latency_ms={k: round(v, 3) for k, v in timings.items()}, model=identity,
                       image_stored=bool(stored and stored.image_path),
                       heatmap_stored=bool(stored and stored.heatmap_path), image=image)
