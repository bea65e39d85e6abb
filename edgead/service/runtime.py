"""Builds the daemon's parts from the config and runs them: model holder, frame source
supervisor, inspection log, GPIO, metrics, the inference worker and the trigger loops."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from typing import Any

from edgead.capture.base import FrameSource, SourceOptions
from edgead.capture.registry import parse_source
from edgead.capture.supervisor import SourceSupervisor
from edgead.errors import ConfigError
from edgead.outputs.gpio import GpioSettings, LineIO, make_pin_factory
from edgead.outputs.handshake import OUTPUTS as HANDSHAKE
from edgead.outputs.inspection_log import InspectionLog, Retention
from edgead.outputs.metrics import ServiceMetrics
from edgead.outputs.sinks import StationState
from edgead.service.config import EdgeadConfig
from edgead.service.heatmaps import HeatmapRenderer
from edgead.service.model_holder import ModelHolder, ModelLoader
from edgead.service.live import LiveFeed
from edgead.service.parts import PartFlow
from edgead.service.pipeline import Inspector, Outcome, error_kind
from edgead.service.plant import build_outputs, failed, scored
from edgead.service.triggers import ContinuousTrigger, GpioTrigger
from edgead.service.worker import InferenceWorker, Job, QueueFull, WorkerStopped

log = logging.getLogger(__name__)

_UNSET = object()


def _default_loader(path: Any, **kwargs: Any) -> Any:
    from edgead.model import load_model

    return load_model(path, warm_up=True, **kwargs)


def source_options(config: EdgeadConfig, model: Any) -> SourceOptions:
    """Source settings; a Pi camera defaults to delivering the model's input size (the ISP scales
    for free), unless the artifact crops a ROI in frame pixels: then set source.width/height to
    the size of the training frames."""
    s = config.source
    size: tuple[int, int] | None = None
    if s.width is not None and s.height is not None:
        size = (s.width, s.height)
    elif s.spec.startswith("picamera2"):
        preprocess = getattr(model, "preprocess_cfg", None)
        if preprocess is not None and preprocess.roi is not None and preprocess.roi_units == "px":
            log.warning("the model crops a ROI in pixels: set source.width/height to the training frame size")
        h, w = model.input_size
        size = (w, h)
    return SourceOptions(size=size, roi=s.roi, mode=s.mode, controls=s.controls, flush_frames=s.flush_frames,
                         loop=s.loop, timeout_s=s.timeout_s)


def gpio_settings(config: EdgeadConfig) -> GpioSettings:
    g = config.gpio
    pull = {"up": True, "down": False, "none": None}[g.trigger_pull]
    return GpioSettings(reject_pin=g.reject_pin, reject_active_high=g.reject_active_high, pulse_ms=g.reject_pulse_ms,
                        delay_ms=g.reject_delay_ms, ready_pin=g.ready_pin, ready_active_high=g.ready_active_high,
                        alarm_pin=g.alarm_pin, alarm_active_high=g.alarm_active_high, trigger_pin=g.trigger_pin,
                        trigger_pull_up=pull, trigger_active_high=g.trigger_active_high,
                        trigger_bounce_ms=g.trigger_bounce_ms or None,
                        handshake=tuple((name, getattr(g, f"{name}_pin"), getattr(g, f"{name}_active_high"))
                                        for name in HANDSHAKE if getattr(g, f"{name}_pin") is not None),
                        encoder_pin=g.encoder_pin, encoder_pull_up={"up": True, "down": False, "none": None}[g.encoder_pull],
                        encoder_active_high=g.encoder_active_high)


class Runtime:
    """Everything the HTTP layer talks to. ``start``/``stop`` bracket the server's lifetime."""

    def __init__(self, config: EdgeadConfig, *, model: Any = None, model_loader: ModelLoader | None = None,
                 source: FrameSource | None | object = _UNSET, pin_factory: Any = None,
                 metrics: ServiceMetrics | None = None):
        self.config = config
        self.token = config.token  # read once (token_file) at start
        self.started_at = time.monotonic()
        self.state = "starting"
        loader = model_loader or _default_loader
        precision = None if config.model.precision == "auto" else config.model.precision
        if model is None:
            if config.model.path is None:
                raise ConfigError("model.path is required (--model DIR, [model] path = ... or EDGEAD_MODEL__PATH)")
            model = loader(config.model.path, precision=precision, threads=config.model.threads,
                           search=config.model.search)
        self.metrics = metrics or ServiceMetrics()
        c = config.inspection
        self.store = InspectionLog(c.data_dir, synchronous=c.synchronous, image_format=c.image_format,
                                   jpeg_quality=c.jpeg_quality, commit_interval_s=c.commit_interval_s,
                                   retention=Retention(c.max_results, c.max_images, int(c.max_image_mb * 1024 * 1024)))
        self.heatmaps = HeatmapRenderer(self.store, config.server.max_concurrent_renders, c.max_stored_side)
        self.holder = ModelHolder(model, loader, precision=precision, threads=config.model.threads,
                                  search=config.model.search, log_store=self.store,
                                  config_threshold=config.model.threshold, reload_roots=config.model.reload_roots)
        if source is _UNSET:
            source = parse_source(config.source.spec, source_options(config, model))
        self.supervisor = (SourceSupervisor(source, config.source.reopen_initial_s, config.source.reopen_max_s,
                                            probe_interval=config.source.probe_interval_s,
                                            on_change=self.update_outputs)
                           if source is not None else None)
        self.line: LineIO | None = None
        if config.gpio.enabled:
            factory = pin_factory if pin_factory is not None else make_pin_factory(config.gpio.pin_factory)
            self.line = LineIO(gpio_settings(config), factory)
        self.parts = PartFlow(config.gpio, self.line, self.metrics) if self.line is not None else None
        self.inspector = Inspector(config, self.holder, self.supervisor, self.store,
                                   self.parts.decided if self.parts is not None else None, self.metrics,
                                   on_state=self.update_outputs)
        self.live = LiveFeed()
        self.worker = InferenceWorker(self._inspect, maxsize=config.inference.queue_size)
        self.continuous: ContinuousTrigger | None = None
        self.gpio_trigger: GpioTrigger | None = None
        # Modbus / OPC UA / MQTT: results out, triggers in through submit() like GET /score
        self.outputs = build_outputs(config, self.metrics, self.station_state, self.trigger, self.token)
        self.metrics.attach_state(self.snapshot)
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.worker.start()
        if self.supervisor is not None:
            if self.supervisor.start():
                log.info("source %s open", self.supervisor.spec)
            self.supervisor.watch()
        mode = self.config.trigger.mode
        if mode == "continuous":
            self.continuous = ContinuousTrigger(self.submit, self.config.trigger.rate_hz,
                                                lambda: self.metrics.dropped_triggers.labels("continuous").inc())
            self.continuous.start()
        elif mode == "gpio" and self.line is not None:
            self.gpio_trigger = GpioTrigger(self.submit, lambda: self.metrics.dropped_triggers.labels("gpio").inc())
            self.line.on_trigger(self.gpio_trigger)
        self.state = "running"
        self.outputs.start()  # after the source opened: the plant's first look shows the real state
        self.update_outputs()

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.state = "stopping"
        if self.line is not None:
            self.line.on_trigger(None)
            self.line.set_ready(False)
        if self.continuous is not None:
            self.continuous.stop()
        self.worker.stop()
        self.outputs.close()
        if self.supervisor is not None:
            self.supervisor.close()
        if self.parts is not None:
            self.parts.close()
        if self.line is not None:
            self.line.close()
        self.store.close()
        self.state = "stopped"

    def _inspect(self, job: Job) -> Outcome:
        try:
            outcome = self.inspector(job)
        except Exception as exc:
            if self.parts is not None and job.actuate:
                self.parts.failed(job, error_kind(exc))
            if job.record and job.data is None:  # a part without a result (a bad upload is the client's 400)
                self.outputs.publish(failed(job, exc, self.holder.identity()))
            raise
        if job.record:  # what the line saw; an answer-only request is nobody else's business
            self.outputs.publish(scored(outcome))
            r = outcome.result
            self.live.publish(
                {"id": outcome.id, "timestamp": outcome.timestamp, "origin": outcome.origin, "source": outcome.source,
                 "decision": r.decision, "score": float(r.score), "normalized_score": float(r.normalized_score),
                 "threshold": float(r.threshold), "latency_ms": outcome.latency_ms.get("total")},
                outcome.image, r.anomaly_map, float(r.threshold))
        return outcome

    def submit(self, job: Job) -> Future:
        """Queue a job; a part that moves the line enters the handshake and the ejector FIFO at
        once, so a full queue or a stuck worker still ends in a (fail-safe) reject."""
        if self.parts is None or not job.actuate:
            return self.worker.submit(job)
        self.parts.enter(job)
        try:
            return self.worker.submit(job)
        except (QueueFull, WorkerStopped):
            self.parts.failed(job, "queue_full")
            raise

    def trigger(self, origin: str, answered: bool = True) -> Future:
        """A part triggered by a plant output (Modbus coil, OPC UA method): the job GET /score
        queues, with the output's name as its origin. ``answered``: the trigger's caller gets
        the log id back (so the row commits before the answer)."""
        return self.submit(Job(origin=origin, answered=answered))

    def station_state(self) -> StationState:
        identity = self.holder.identity()
        return StationState(ready=self.ready, busy=self.worker.busy_for() > 0 or self.worker.depth > 0,
                            alarm=self.alarm, model_loaded=True, model_name=str(identity.get("name", "")),
                            model_version=str(identity.get("version", "")),
                            threshold=float(self.holder.model.threshold))

    # -- state -------------------------------------------------------------------------------
    @property
    def source_ok(self) -> bool:
        return self.supervisor is None or self.supervisor.state == "ok"

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.worker.alive and self.source_ok

    def update_outputs(self) -> None:
        """Drive the ready and alarm outputs from the current state."""
        if self.line is None:
            return
        self.line.set_ready(self.ready)
        self.line.set_alarm(self.alarm)

    @property
    def alarm(self) -> bool:
        """The source is down, or too many rejects in a row (gpio.alarm_after_rejects)."""
        n = self.config.gpio.alarm_after_rejects
        return not self.source_ok or (n > 0 and self.inspector.consecutive_rejects >= n)

    def watchdog_ok(self, stall_limit: float) -> bool:
        """For the systemd watchdog: the worker thread lives and no job hangs."""
        return self.worker.alive and self.worker.busy_for() < stall_limit

    def snapshot(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "queue_depth": self.worker.depth,
            "queue_capacity": self.worker.capacity,
            "threshold": float(self.holder.model.threshold),
            "model": self.holder.identity(),
            "source": self.supervisor.status() if self.supervisor is not None else None,
        }

    def health(self) -> dict[str, Any]:
        ready = self.ready
        status = "ok" if ready else ("degraded" if self.state == "running" else self.state)
        return {
            "status": status,
            "live": self.worker.alive,
            "ready": ready,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "model": {"loaded": True, **self.holder.identity(), "threshold": float(self.holder.model.threshold)},
            "source": self.supervisor.status() if self.supervisor is not None else None,
            "trigger": self.config.trigger.mode,
            "queue": {"depth": self.worker.depth, "capacity": self.worker.capacity},
            "worker": {"alive": self.worker.alive, "busy_s": round(self.worker.busy_for(), 3),
                       "jobs": self.worker.jobs_done},
            "gpio": self.line.status() if self.line is not None else None,
            "inspection_log": self.store.stats(),
        }

