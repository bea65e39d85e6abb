"""What happens on the line to a part that moves it (an actuating job): the handshake outputs,
the reject pulse, and with a fail-safe deadline or encoder release the part FIFO that rejects
a part whose decision did not come in time and ejects the right part when several are in
flight between camera and ejector."""

from __future__ import annotations

import logging
from typing import Any

from edgead.outputs.fifo import REASONS, Part, PartFifo
from edgead.outputs.gpio import LineIO
from edgead.outputs.handshake import Handshake
from edgead.outputs.metrics import ServiceMetrics
from edgead.service.worker import Job

log = logging.getLogger(__name__)


class PartFlow:
    def __init__(self, config: Any, line: LineIO, metrics: ServiceMetrics):  # config: GpioConfig
        self.line = line
        self.metrics = metrics
        self.handshake = Handshake(line) if line.handshake else None
        self.fifo: PartFifo | None = None
        for reason in REASONS:  # every series from the start
            metrics.failsafe_rejects.labels(reason)
        if config.tracks_parts:
            counts = config.encoder_counts if config.release == "encoder" else None
            deadline = config.part_deadline_ms / 1000.0 if config.part_deadline_ms > 0 else None
            self.fifo = PartFifo(eject=self._eject, on_final=self._final, deadline_s=deadline,
                                 delay_s=config.reject_delay_ms / 1000.0, counts=counts,
                                 on_late=metrics.late_results.inc)
            if counts is not None:
                line.on_encoder(self.fifo.encoder_step)
            metrics.parts_in_flight.set_function(lambda: self.fifo.in_flight if self.fifo else 0)

    def enter(self, job: Job) -> None:
        """A trigger: the part is on its way to the ejector."""
        if self.handshake is not None:
            self.handshake.started()
        if self.fifo is not None:
            job.part = self.fifo.enter(job.received).id

    def decided(self, job: Job, reject: bool, reference: float) -> None:
        """The part's decision (on the inference thread, before the log is written)."""
        if self.fifo is not None and job.part is not None:
            self.fifo.decide(job.part, reject)
            return
        if reject and self.line.reject is not None:
            if not self.line.pulse_reject(reference):
                self.metrics.late_pulses.inc()
            self.metrics.pulses.inc()
        if self.handshake is not None:
            self.handshake.finished("reject" if reject else "ok")

    def failed(self, job: Job, reason: str) -> None:
        """The part will get no decision: reject it (with the FIFO) and say so on the handshake."""
        if self.fifo is not None and job.part is not None:
            self.fifo.fail(job.part, reason)
            return
        if self.handshake is not None:
            self.handshake.finished("error")

    def _final(self, part: Part) -> None:
        if part.reason is not None:
            self.metrics.failsafe_rejects.labels(part.reason).inc()
        if self.handshake is not None:
            self.handshake.finished(part.decision or "reject")

    def _eject(self, part: Part) -> None:
        self.line.eject()
        self.metrics.pulses.inc()

    def close(self) -> None:
        if self.fifo is not None:
            self.fifo.close()
