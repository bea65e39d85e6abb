"""Line I/O through gpiozero: the reject output pulse, optional ready/alarm outputs and an
optional trigger input (e.g. a light barrier).

Pulses never block scoring: ``pulse_reject`` only queues the pulse. One small scheduler thread
(started on first use, asleep on a condition variable in between) switches the output at
``deadline`` and ``deadline + pulse``. Overlapping pulses for parts close together on the
conveyor merge: the output stays active until the last one ends.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgead.errors import ConfigError

log = logging.getLogger(__name__)

PIN_FACTORIES = ("auto", "lgpio", "rpigpio", "pigpio", "native", "mock")


def _is_pi5() -> bool:
    try:
        return "Raspberry Pi 5" in Path("/proc/device-tree/model").read_text(errors="ignore")
    except OSError:
        return False


def make_pin_factory(name: str) -> Any:
    """A gpiozero pin factory by name; ``auto`` is lgpio on a Pi 5 (the only driver that works
    there), else gpiozero's own default order. ConfigError naming the missing package."""
    if name not in PIN_FACTORIES:
        raise ConfigError(f"gpio.pin_factory {name!r}: expected one of {', '.join(PIN_FACTORIES)}")
    try:
        if name == "mock":
            from gpiozero.pins.mock import MockFactory

            return MockFactory()
        if name == "lgpio" or (name == "auto" and _is_pi5()):
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory()
        if name == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
        if name == "pigpio":
            from gpiozero.pins.pigpio import PiGPIOFactory

            return PiGPIOFactory()
        if name == "native":
            from gpiozero.pins.native import NativeFactory

            return NativeFactory()
        from gpiozero import Device

        return Device._default_pin_factory()
    except Exception as exc:
        raise ConfigError(
            f"gpio.pin_factory {name!r} is not usable here ({exc}); on a Pi install python3-lgpio, "
            "elsewhere set gpio.pin_factory = \"mock\" or gpio.enabled = false"
        ) from None


@dataclass(frozen=True)
class GpioSettings:
    """Pins (BCM numbers or gpiozero names like "GPIO17"/"BOARD11") and their behaviour."""

    reject_pin: int | str | None = None
    reject_active_high: bool = True
    pulse_ms: float = 200.0
    delay_ms: float = 0.0
    ready_pin: int | str | None = None
    ready_active_high: bool = True
    alarm_pin: int | str | None = None
    alarm_active_high: bool = True
    trigger_pin: int | str | None = None
    trigger_pull_up: bool | None = True
    trigger_active_high: bool | None = None
    trigger_bounce_ms: float | None = 20.0
    # handshake outputs by name (busy, result_valid, pass, fail): (pin, active_high)
    handshake: tuple[tuple[str, int | str, bool], ...] = ()
    encoder_pin: int | str | None = None
    encoder_pull_up: bool | None = True
    encoder_active_high: bool | None = None


class PulseScheduler:
    """Drives one output with timed pulses from a single sleeping thread."""

    def __init__(self, device: Any, name: str = "edgead-gpio", clock: Callable[[], float] = time.monotonic):
        self._device = device
        self._clock = clock
        self._cond = threading.Condition()
        self._events: list[tuple[float, int, int]] = []  # (time, seq, +1 on / -1 off)
        self._seq = itertools.count()
        self._active = 0
        self._stopping = False
        self._name = name
        self._thread: threading.Thread | None = None

    def schedule(self, start: float, length: float) -> None:
        """Activate the output from monotonic time ``start`` for ``length`` seconds."""
        with self._cond:
            if self._stopping:
                return
            heapq.heappush(self._events, (start, next(self._seq), +1))
            heapq.heappush(self._events, (start + length, next(self._seq), -1))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopping:
                if not self._events:
                    self._cond.wait()
                    continue
                due, _, delta = self._events[0]
                wait = due - self._clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._events)
                self._active += delta
                try:
                    if delta > 0 and self._active == 1:
                        self._device.on()
                    elif delta < 0 and self._active == 0:
                        self._device.off()
                except Exception:  # a GPIO driver error must not kill the scheduler
                    log.exception("reject output: cannot switch the pin")

    def close(self) -> None:
        """Stop the thread; the output is left inactive."""
        with self._cond:
            self._stopping = True
            self._events.clear()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._active = 0
        try:
            self._device.off()
        except Exception:
            pass


class LineIO:
    """The daemon's GPIO: reject pulses, ready/alarm outputs, trigger input callback."""

    def __init__(self, settings: GpioSettings, pin_factory: Any):
        from gpiozero import DigitalInputDevice, DigitalOutputDevice

        self.settings = s = settings
        self.factory = pin_factory
        self.reject = self.ready = self.alarm = self.trigger = self.encoder = None
        self.handshake: dict[str, Any] = {}
        self._scheduler: PulseScheduler | None = None
        self.pulses = 0
        self.late_pulses = 0
        try:
            if s.reject_pin is not None:
                self.reject = DigitalOutputDevice(s.reject_pin, active_high=s.reject_active_high,
                                                  initial_value=False, pin_factory=pin_factory)
                self._scheduler = PulseScheduler(self.reject)
            if s.ready_pin is not None:
                self.ready = DigitalOutputDevice(s.ready_pin, active_high=s.ready_active_high,
                                                 initial_value=False, pin_factory=pin_factory)
            if s.alarm_pin is not None:
                self.alarm = DigitalOutputDevice(s.alarm_pin, active_high=s.alarm_active_high,
                                                 initial_value=False, pin_factory=pin_factory)
            for name, pin, active_high in s.handshake:
                self.handshake[name] = DigitalOutputDevice(pin, active_high=active_high, initial_value=False,
                                                           pin_factory=pin_factory)
            if s.encoder_pin is not None:  # no debounce: an encoder's edges are clean and come fast
                active = s.encoder_active_high if s.encoder_pull_up is None else None
                self.encoder = DigitalInputDevice(s.encoder_pin, pull_up=s.encoder_pull_up, active_state=active,
                                                  pin_factory=pin_factory)
            if s.trigger_pin is not None:
                bounce = s.trigger_bounce_ms / 1000.0 if s.trigger_bounce_ms else None
                active = s.trigger_active_high if s.trigger_pull_up is None else None  # a pull implies it
                self.trigger = DigitalInputDevice(s.trigger_pin, pull_up=s.trigger_pull_up, active_state=active,
                                                  bounce_time=bounce, pin_factory=pin_factory)
        except Exception as exc:
            self.close()
            raise ConfigError(f"gpio: cannot set up the pins ({type(exc).__name__}: {exc})") from None

    def pulse_reject(self, reference: float | None = None) -> bool:
        """Queue a reject pulse ``delay_ms`` after ``reference`` (monotonic capture time; now if
        None). Returns False when the deadline had already passed (the pulse fires at once)."""
        if self._scheduler is None:
            return True
        now = time.monotonic()
        if self.settings.delay_ms <= 0:  # no conveyor delay configured: the pulse is due now, never "late"
            self._scheduler.schedule(now, self.settings.pulse_ms / 1000.0)
            self.pulses += 1
            return True
        start = (reference if reference is not None else now) + self.settings.delay_ms / 1000.0
        on_time = start >= now
        if not on_time:
            self.late_pulses += 1
            log.warning("reject pulse %.0f ms late (scoring took longer than the conveyor delay)", (now - start) * 1e3)
        self._scheduler.schedule(max(start, now), self.settings.pulse_ms / 1000.0)
        self.pulses += 1
        return on_time

    def eject(self) -> None:
        """Fire the ejector now (the part FIFO did the timing)."""
        if self._scheduler is not None:
            self._scheduler.schedule(time.monotonic(), self.settings.pulse_ms / 1000.0)
            self.pulses += 1

    def set_output(self, name: str, value: bool) -> None:
        """Drive a handshake output (busy, result_valid, pass, fail) if it is wired."""
        _set(self.handshake.get(name), value)

    def on_encoder(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` on each encoder count (activation of the encoder input)."""
        if self.encoder is not None:
            self.encoder.when_activated = (lambda: callback()) if callback else None

    def set_ready(self, value: bool) -> None:
        _set(self.ready, value)

    def set_alarm(self, value: bool) -> None:
        _set(self.alarm, value)

    def on_trigger(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` (from gpiozero's thread) on each activation of the trigger input."""
        if self.trigger is not None:
            self.trigger.when_activated = (lambda: callback()) if callback else None

    def status(self) -> dict:
        def pin(dev: Any) -> dict | None:
            return None if dev is None else {"pin": str(dev.pin), "active": bool(dev.value)}

        return {"reject": pin(self.reject), "ready": pin(self.ready), "alarm": pin(self.alarm),
                "trigger": pin(self.trigger), "encoder": pin(self.encoder),
                **{name: pin(dev) for name, dev in self.handshake.items()},
                "pulses": self.pulses, "late_pulses": self.late_pulses}

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()
        for dev in (self.trigger, self.encoder, *self.handshake.values(), self.alarm, self.ready, self.reject):
            if dev is not None:
                try:
                    if hasattr(dev, "off"):
                        dev.off()
                    dev.close()
                except Exception:
                    pass


def _set(device: Any, value: bool) -> None:
    if device is not None and bool(device.value) != bool(value):
        device.value = bool(value)
