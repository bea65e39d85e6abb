"""GPIO line I/O on gpiozero's MockFactory: reject pulses (polarity, merging, delay, never
blocking), ready/alarm outputs, the trigger input, pin factory selection."""

from __future__ import annotations

import time

import pytest
from gpiozero.pins.mock import MockFactory
from service_harness import wait_for

from edgead.errors import ConfigError
from edgead.outputs.gpio import GpioSettings, LineIO, make_pin_factory


def states(pin) -> list[bool]:
    return [s.state for s in pin.states]


@pytest.fixture()
def factory():
    return MockFactory()


def test_active_high_pulse(factory):
    line = LineIO(GpioSettings(reject_pin=17, pulse_ms=20), factory)
    pin = factory.pin(17)
    assert states(pin) == [False]
    assert line.pulse_reject() is True
    wait_for(lambda: len(pin.states) >= 3)
    assert states(pin) == [False, True, False]
    assert line.pulses == 1
    line.close()


def test_active_low_pulse(factory):
    line = LineIO(GpioSettings(reject_pin="GPIO5", reject_active_high=False, pulse_ms=20), factory)
    pin = factory.pin(5)
    assert pin.state is True  # inactive = high from the start
    pin.clear_states()
    line.pulse_reject()
    wait_for(lambda: len(pin.states) >= 3)
    pin.assert_states([True, False, True])
    assert states(pin) == [True, False, True]
    line.close()


def test_pulse_does_not_block_and_respects_the_conveyor_delay(factory):
    line = LineIO(GpioSettings(reject_pin=17, pulse_ms=10, delay_ms=60_000), factory)
    line.pulse_reject()  # returns at once: a blocking pulse would sleep a minute here and fire
    assert states(factory.pin(17)) == [False]  # the part has not reached the ejector yet
    line.close()  # shutdown drops pending pulses and leaves the output inactive
    assert states(factory.pin(17)) == [False]


def test_overlapping_pulses_merge(factory):
    line = LineIO(GpioSettings(reject_pin=17, pulse_ms=300, delay_ms=50), factory)
    pin = factory.pin(17)
    part = time.monotonic() + 0.3  # parts seen a little ahead: a stalled test thread cannot make a pulse late
    line.pulse_reject(part)
    line.pulse_reject(part + 0.01)  # the next part, 10 ms behind: windows overlap
    wait_for(lambda: len(pin.states) >= 3)
    time.sleep(0.1)
    assert states(pin) == [False, True, False]  # one long pulse, not on-off-on
    assert line.pulses == 2
    line.close()


def test_separate_pulses(factory):
    line = LineIO(GpioSettings(reject_pin=17, pulse_ms=10), factory)
    pin = factory.pin(17)
    line.pulse_reject()
    wait_for(lambda: len(pin.states) >= 3)
    line.pulse_reject()
    wait_for(lambda: len(pin.states) >= 5)
    assert states(pin) == [False, True, False, True, False]
    line.close()


def test_late_pulse_fires_at_once_and_is_counted(factory):
    line = LineIO(GpioSettings(reject_pin=17, pulse_ms=10, delay_ms=100), factory)
    assert line.pulse_reject(time.monotonic() - 5.0) is False  # scoring took longer than the conveyor
    wait_for(lambda: len(factory.pin(17).states) >= 3)
    assert line.late_pulses == 1
    line.close()


def test_ready_alarm_and_status(factory):
    line = LineIO(GpioSettings(ready_pin=27, alarm_pin=22, alarm_active_high=False), factory)
    factory.pin(22).clear_states()
    line.set_ready(True)
    line.set_ready(True)  # no glitch on repeated sets
    line.set_alarm(True)
    line.set_alarm(False)
    assert states(factory.pin(27)) == [False, True]
    assert states(factory.pin(22)) == [True, False, True]  # active low
    status = line.status()
    assert status["ready"]["active"] is True and status["reject"] is None
    line.close()
    assert factory.pin(27).state is False


def test_trigger_input_calls_back(factory):
    line = LineIO(GpioSettings(trigger_pin=23, trigger_pull_up=True, trigger_bounce_ms=None), factory)
    fired = []
    line.on_trigger(lambda: fired.append(1))
    pin = factory.pin(23)
    assert pin.state is True  # pulled up
    pin.drive_low()  # light barrier interrupted
    pin.drive_high()
    pin.drive_low()
    wait_for(lambda: len(fired) == 2)
    line.on_trigger(None)
    pin.drive_high()
    pin.drive_low()
    assert len(fired) == 2
    line.close()


def test_trigger_active_high_without_pull(factory):
    line = LineIO(GpioSettings(trigger_pin=24, trigger_pull_up=None, trigger_active_high=True,
                               trigger_bounce_ms=None), factory)
    fired = []
    line.on_trigger(lambda: fired.append(1))
    factory.pin(24).drive_high()
    wait_for(lambda: fired)
    line.close()


def test_pin_factories():
    assert type(make_pin_factory("mock")).__name__ == "MockFactory"
    with pytest.raises(ConfigError, match="pin_factory"):
        make_pin_factory("bogus")


def test_pin_conflict_is_a_config_error(factory):
    with pytest.raises(ConfigError, match="gpio"):
        LineIO(GpioSettings(reject_pin=17, ready_pin=17), factory)
