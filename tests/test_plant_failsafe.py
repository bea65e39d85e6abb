"""The digital handshake, the fail-safe reject and the part FIFO on gpiozero's MockFactory with
the real daemon: parts triggered on the trigger input, a model held back so that no decision
comes in time, an encoder driving three parts in flight to the ejector."""

from __future__ import annotations

import threading

import cv2
import httpx
from gpiozero.pins.mock import MockFactory
from prometheus_client.parser import text_string_to_metric_families
from service_harness import FakeModel, serve, solid, wait_for

from edgead.service.app import create_app
from edgead.service.config import EdgeadConfig

TRIGGER, REJECT, ENCODER, BUSY, VALID, PASS, FAIL = 23, 17, 24, 5, 6, 13, 19
HANDSHAKE = {"busy_pin": BUSY, "result_valid_pin": VALID, "pass_pin": PASS, "fail_pin": FAIL}


def frames(tmp_path, *values):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, v in enumerate(values):
        cv2.imwrite(str(folder / f"{i}.png"), solid(v))
    return folder


def daemon(tmp_path, folder, factory, model, queue_size=4, **gpio):
    cfg = EdgeadConfig(source={"spec": f"folder:{folder}"}, trigger={"mode": "gpio"},
                       inference={"queue_size": queue_size}, inspection={"data_dir": str(tmp_path / "data")},
                       gpio={"enabled": True, "reject_pin": REJECT, "reject_pulse_ms": 20, "trigger_pin": TRIGGER,
                             "trigger_bounce_ms": 0, **HANDSHAKE, **gpio})
    return create_app(cfg, model=model, pin_factory=factory)


def fire(pin):
    pin.drive_low()  # light barrier interrupted (active low with the pull-up)
    pin.drive_high()


def pulses(pin) -> int:
    return [s.state for s in pin.states].count(True)


def metric(http, name, **labels) -> float:
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(name)


def test_every_late_part_is_rejected_and_counted(tmp_path):
    gate = threading.Event()  # the model answers only when the test allows: every decision is late
    factory = MockFactory()
    app = daemon(tmp_path, frames(tmp_path, 20), factory, FakeModel(gate=gate), queue_size=1,
                 part_deadline_ms=50)
    fifo = app.state.runtime.parts.fifo
    trigger, reject, fail, ok, valid = (factory.pin(p) for p in (TRIGGER, REJECT, FAIL, PASS, VALID))
    with serve(app) as url, httpx.Client(base_url=url) as http:
        worker = app.state.runtime.worker
        fire(trigger)  # good parts all: one scoring (held by the model), one queued, one refused: queue full
        wait_for(lambda: worker.busy_for() > 0 and worker.depth == 0)
        fire(trigger)
        wait_for(lambda: worker.depth == 1)
        fire(trigger)
        wait_for(lambda: fifo.ejected == [1, 2, 3])  # all three rejected, none let through
        assert metric(http, "edgead_failsafe_rejects_total", reason="deadline") == 2
        assert metric(http, "edgead_failsafe_rejects_total", reason="queue_full") == 1
        wait_for(lambda: pulses(reject) >= 1 and reject.state is False)
        assert app.state.runtime.line.pulses == 3
        assert fail.state is True and ok.state is False and valid.state is True  # the handshake says fail
        gate.set()  # the slow model answers now: "ok", too late
        wait_for(lambda: metric(http, "edgead_late_results_total") == 2)
        rows = http.get("/results").json()["results"]
        assert [r["decision"] for r in rows] == ["ok", "ok"]  # what the model said is logged...
        assert fail.state is True and ok.state is False  # ...but the parts stay rejected
        assert metric(http, "edgead_parts_in_flight") == 0


def test_handshake_sequence_for_a_good_part(tmp_path):
    factory = MockFactory()
    app = daemon(tmp_path, frames(tmp_path, 20), factory, FakeModel(), part_deadline_ms=60_000)
    busy, valid, ok, fail = (factory.pin(p) for p in (BUSY, VALID, PASS, FAIL))
    with serve(app) as url, httpx.Client(base_url=url) as http:
        fire(factory.pin(TRIGGER))
        wait_for(lambda: valid.state is True)
        assert ok.state is True and fail.state is False and busy.state is False
        assert [s.state for s in busy.states] == [False, True, False]
        assert pulses(factory.pin(REJECT)) == 0
        assert metric(http, "edgead_failsafe_rejects_total", reason="deadline") == 0


def test_encoder_fifo_ejects_the_right_parts_with_three_in_flight(tmp_path):
    factory = MockFactory()
    # the folder replays bright (reject), dark (ok), bright (reject)
    app = daemon(tmp_path, frames(tmp_path, 250, 20, 250), factory, FakeModel(), release="encoder",
                 encoder_pin=ENCODER, encoder_counts=10, part_deadline_ms=60_000)
    fifo = app.state.runtime.parts.fifo
    trigger, encoder, reject = factory.pin(TRIGGER), factory.pin(ENCODER), factory.pin(REJECT)

    def move(counts):  # the belt moves: encoder pulses
        target = fifo.position + counts
        for _ in range(counts):
            fire(encoder)
        wait_for(lambda: fifo.position == target)

    with serve(app) as url, httpx.Client(base_url=url) as http:
        for n in (1, 2, 3):  # parts at counts 0, 3, 6
            fire(trigger)
            wait_for(lambda: http.get("/results").json()["count"] == n)
            if n < 3:
                move(3)
        assert fifo.in_flight == 3
        assert [r["decision"] for r in http.get("/results").json()["results"][::-1]] == ["reject", "ok", "reject"]
        assert pulses(reject) == 0  # decided, but nothing has reached the ejector yet
        move(4)  # count 10: part 1 at the ejector
        wait_for(lambda: fifo.in_flight == 2 and pulses(reject) == 1 and reject.state is False)
        assert fifo.ejected == [1]
        move(3)  # count 13: part 2 (good) passes
        wait_for(lambda: fifo.in_flight == 1)
        assert pulses(reject) == 1 and fifo.ejected == [1]
        move(3)  # count 16: part 3
        wait_for(lambda: fifo.in_flight == 0 and pulses(reject) == 2)
        assert fifo.ejected == [1, 3]


def test_fifo_by_time_ejects_only_the_rejected_parts_in_flight():
    from edgead.outputs.fifo import PartFifo

    ejected, final = [], []
    fifo = PartFifo(eject=lambda p: ejected.append(p.id), on_final=lambda p: final.append((p.id, p.decision)),
                    deadline_s=None, delay_s=0.3)
    try:
        parts = [fifo.enter() for _ in range(3)]  # three parts on the belt before the first arrives
        for part, reject in zip(parts, (True, False, True)):
            fifo.decide(part.id, reject)
        wait_for(lambda: fifo.in_flight == 0)
        assert ejected == [1, 3]
        assert final == [(1, "reject"), (2, "ok"), (3, "reject")]
    finally:
        fifo.close()


def test_a_part_undecided_at_the_ejector_is_rejected_there():
    from edgead.outputs.fifo import PartFifo

    ejected, reasons = [], []
    fifo = PartFifo(eject=lambda p: ejected.append(p.id), on_final=lambda p: reasons.append(p.reason),
                    deadline_s=None, delay_s=0.05)
    try:
        part = fifo.enter()
        wait_for(lambda: ejected == [part.id])
        assert reasons == ["undecided_at_ejector"]
        fifo.decide(part.id, False)  # the decision comes after the part has gone: it stays rejected
        assert fifo.late_results == 1
    finally:
        fifo.close()
