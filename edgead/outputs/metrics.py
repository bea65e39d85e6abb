"""Prometheus metrics, on a registry owned by one app (no global state, several apps per
process in tests). Point-in-time values (queue depth, source state, model) are read from the
service at scrape time by a collector, so nothing has to keep them up to date."""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

# 0.5 ms .. 10 s: covers a 64 px model on an x86 box and a 448 px model on a Pi 4
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCORE_BUCKETS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0)
STAGES = ("capture", "decode", "queue", "preprocess", "backbone", "search", "score", "inference", "log", "total")


class _StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict]):
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        s = self._snapshot()
        depth = GaugeMetricFamily("edgead_queue_depth", "Jobs waiting for the inference worker")
        depth.add_metric([], s["queue_depth"])
        capacity = GaugeMetricFamily("edgead_queue_capacity", "Bound of the inference queue")
        capacity.add_metric([], s["queue_capacity"])
        ready = GaugeMetricFamily("edgead_ready", "1 when the model is loaded and the source is usable")
        ready.add_metric([], 1.0 if s["ready"] else 0.0)
        threshold = GaugeMetricFamily("edgead_threshold", "Decision threshold on the raw score")
        threshold.add_metric([], s["threshold"])
        yield from (depth, capacity, ready, threshold)
        model = InfoMetricFamily("edgead_model", "The model being served")
        model.add_metric([], {k: str(v) for k, v in s["model"].items()})
        yield model
        src = s.get("source")
        if src is not None:
            up = GaugeMetricFamily("edgead_source_up", "1 when the frame source is open", labels=["source"])
            up.add_metric([src["spec"]], 1.0 if src["ok"] else 0.0)
            reconnects = CounterMetricFamily("edgead_source_reconnects", "Successful reopens of the frame source",
                                             labels=["source"])
            reconnects.add_metric([src["spec"]], src["reconnects"])
            failures = CounterMetricFamily("edgead_source_failures", "Failed opens/reads of the frame source",
                                           labels=["source"])
            failures.add_metric([src["spec"]], src["failures"])
            yield from (up, reconnects, failures)
            if src["last_frame_age_s"] is not None:
                age = GaugeMetricFamily("edgead_source_last_frame_age_seconds", "Age of the last captured frame",
                                        labels=["source"])
                age.add_metric([src["spec"]], src["last_frame_age_s"])
                yield age


class ServiceMetrics:
    """The daemon's metrics on its own CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram("edgead_stage_latency_seconds", "Latency per pipeline stage", ["stage"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.results = Counter("edgead_results", "Scored frames by decision", ["decision", "origin"], registry=r)
        self.normalized_score = Histogram("edgead_normalized_score", "Score / threshold (1.0 = decision boundary)",
                                          buckets=SCORE_BUCKETS, registry=r)
        self.errors = Counter("edgead_errors", "Failed score requests by cause", ["kind"], registry=r)
        self.rejected_requests = Counter("edgead_busy_rejections",
                                         "Requests refused with 503 because the queue was full", registry=r)
        self.dropped_triggers = Counter("edgead_dropped_triggers", "Continuous/GPIO triggers dropped (queue full)",
                                        ["origin"], registry=r)
        self.reloads = Counter("edgead_model_reloads", "Model reload attempts", ["outcome"], registry=r)
        self.pulses = Counter("edgead_reject_pulses", "Reject output pulses", registry=r)
        self.late_pulses = Counter("edgead_reject_pulses_late",
                                   "Reject pulses fired after their conveyor deadline had passed", registry=r)
        self.log_errors = Counter("edgead_inspection_log_errors", "Results that could not be written to the log",
                                  registry=r)
        self.failsafe_rejects = Counter("edgead_failsafe_rejects",
                                        "Parts rejected without a reject decision, by reason (deadline: no "
                                        "decision in time; undecided_at_ejector; error; capture; queue_full)",
                                        ["reason"], registry=r)
        self.late_results = Counter("edgead_late_results",
                                    "Decisions that arrived after their part had been rejected by the deadline",
                                    registry=r)
        self.parts_in_flight = Gauge("edgead_parts_in_flight", "Parts between the camera and the ejector",
                                     registry=r)
        # plant-floor outputs (Modbus, OPC UA, MQTT), labelled by output
        self.output_published = Counter("edgead_output_published", "Results handed to a plant output", ["output"],
                                        registry=r)
        self.output_errors = Counter("edgead_output_errors", "Results a plant output failed to take", ["output"],
                                     registry=r)
        self.output_dropped = Counter("edgead_output_dropped",
                                      "Results dropped because the output's bounded queue was full", ["output"],
                                      registry=r)
        self.output_triggers = Counter("edgead_output_triggers", "Parts triggered through a plant output",
                                       ["output", "outcome"], registry=r)
        self.output_connected = Gauge("edgead_output_connected",
                                      "Clients connected to a plant output (MQTT: 1 when connected to the broker)",
                                      ["output"], registry=r)
        for stage in STAGES:  # expose every series from the start
            self.latency.labels(stage)
        for decision in ("ok", "reject"):
            self.results.labels(decision, "capture")
            self.results.labels(decision, "upload")

    def attach_state(self, snapshot: Callable[[], dict]) -> None:
        """Register the scrape-time collector; ``snapshot()`` returns the service status dict."""
        self.registry.register(_StateCollector(snapshot))

    def observe_result(self, decision: str, origin: str, normalized_score: float, timings_ms: dict[str, float]) -> None:
        self.results.labels(decision, origin).inc()
        self.normalized_score.observe(normalized_score)
        for stage, ms in timings_ms.items():
            if stage in STAGES:
                self.latency.labels(stage).observe(ms / 1000.0)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
