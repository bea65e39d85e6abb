"""The [gpio] config section: reject pulse, ready and alarm outputs, trigger input, the
handshake outputs, the fail-safe deadline and the parts FIFO. The field descriptions are the
reference documentation."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Pin = int | str


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GpioConfig(_Section):
    """Pins of a Raspberry Pi (gpiozero): reject pulse, ready and alarm outputs, trigger input.
    Pins are BCM numbers or names like "GPIO17" or "BOARD11"; see docs/howto/install-pi.md for wiring."""

    enabled: bool = Field(
        False, description="drive GPIO pins (reject, ready, alarm, trigger); off: no pin is touched")
    pin_factory: Literal["auto", "lgpio", "rpigpio", "pigpio", "native", "mock"] = Field(
        "auto", description="gpiozero pin library: auto (lgpio on a Pi 5), lgpio, rpigpio, pigpio, native, "
                            "or mock (tests)")
    reject_pin: Pin | None = Field(None, description="output pulsed for every rejected part (the ejector)")
    reject_active_high: bool = Field(True, description="the reject pin is high while it fires (false: low)")
    reject_pulse_ms: float = Field(200.0, gt=0, le=60_000, description="how long the reject output fires")
    reject_delay_ms: float = Field(0.0, ge=0, le=600_000, description="conveyor travel camera -> ejector")
    reject_on_upload: bool = Field(True, description="pulse for rejected POST /score images too")
    ready_pin: Pin | None = Field(None, description="output on while the model is loaded and the source works")
    ready_active_high: bool = Field(True, description="the ready pin is high when ready (false: low)")
    alarm_pin: Pin | None = Field(
        None, description="output on while the source fails, or after alarm_after_rejects rejects in a row")
    alarm_active_high: bool = Field(True, description="the alarm pin is high when raised (false: low)")
    alarm_after_rejects: int = Field(0, ge=0, description="raise the alarm after N consecutive rejects (0: off)")
    trigger_pin: Pin | None = Field(
        None, description="input whose activation captures one frame (trigger.mode = gpio), e.g. a light barrier")
    trigger_pull: Literal["up", "down", "none"] = Field(
        "up", description="trigger input pull: up (active low, a switch to GND), down, or none (external pull)")
    trigger_active_high: bool | None = Field(None, description="required with trigger_pull = none")
    trigger_bounce_ms: float = Field(20.0, ge=0, le=10_000, description="trigger input debounce time")
    busy_pin: Pin | None = Field(None, description="handshake: on from a trigger until its result is out")
    busy_active_high: bool = Field(True, description="false: the busy output is low when active")
    result_valid_pin: Pin | None = Field(None, description="handshake: on once pass/fail hold the part's result; "
                                                           "off at the next trigger (the PLC latches on its "
                                                           "rising edge)")
    result_valid_active_high: bool = Field(True, description="false: the result_valid output is low when active")
    pass_pin: Pin | None = Field(None, description="handshake: on when the last part passed")
    pass_active_high: bool = Field(True, description="false: the pass output is low when active")
    fail_pin: Pin | None = Field(None, description="handshake: on when the last part was rejected or got no "
                                                   "result in time")
    fail_active_high: bool = Field(True, description="false: the fail output is low when active")
    part_deadline_ms: float = Field(0.0, ge=0, le=600_000,
                                    description="fail-safe: a part with no decision this long after its trigger "
                                                "is rejected anyway (slow inference, error, full queue, camera "
                                                "failure), counted in edgead_failsafe_rejects_total; 0: off. "
                                                "Keep it below reject_delay_ms")
    release: Literal["time", "encoder"] = Field("time", description="when a part reaches the ejector: "
                                                                    "reject_delay_ms after its trigger, or "
                                                                    "encoder_counts pulses on encoder_pin later")
    encoder_pin: Pin | None = Field(None, description="conveyor encoder input (release = encoder)")
    encoder_pull: Literal["up", "down", "none"] = Field("up", description="up: the encoder pulls the input low "
                                                                            "on each count (open collector)")
    encoder_active_high: bool | None = Field(None, description="required with encoder_pull = none")
    encoder_counts: int = Field(0, ge=0, le=10_000_000, description="encoder pulses from the camera to the "
                                                                    "ejector (release = encoder)")

    @property
    def tracks_parts(self) -> bool:
        """Parts are held in the FIFO (fail-safe deadline or encoder release)."""
        return self.part_deadline_ms > 0 or self.release == "encoder"

    @field_validator("reject_pin", "ready_pin", "alarm_pin", "trigger_pin", "busy_pin", "result_valid_pin",
                     "pass_pin", "fail_pin", "encoder_pin")
    @classmethod
    def _pin(cls, v: Pin | None) -> Pin | None:
        if isinstance(v, bool):
            raise ValueError("expected a BCM number or a pin name like 'GPIO17'")
        if isinstance(v, int) and not 0 <= v <= 53:
            raise ValueError("BCM pin numbers are 0..53")
        if isinstance(v, str) and not v.strip():
            raise ValueError("empty pin name")
        return v

    @model_validator(mode="after")
    def _pins(self) -> "GpioConfig":
        used = [(name, getattr(self, name)) for name in ("reject_pin", "ready_pin", "alarm_pin", "trigger_pin",
                                                         "busy_pin", "result_valid_pin", "pass_pin", "fail_pin",
                                                         "encoder_pin")]
        seen: dict[str, str] = {}
        for name, pin in used:
            if pin is None:
                continue
            key = str(pin).upper().removeprefix("GPIO").removeprefix("BCM")
            if key in seen:
                raise ValueError(f"{name} and {seen[key]} use the same pin {pin}")
            seen[key] = name
        if self.trigger_pull == "none" and self.trigger_pin is not None and self.trigger_active_high is None:
            raise ValueError("trigger_pull = 'none' needs trigger_active_high (true or false)")
        if self.release == "encoder" and (self.encoder_pin is None or self.encoder_counts < 1):
            raise ValueError("release = 'encoder' needs encoder_pin and encoder_counts >= 1")
        if self.encoder_pull == "none" and self.encoder_pin is not None and self.encoder_active_high is None:
            raise ValueError("encoder_pull = 'none' needs encoder_active_high (true or false)")
        return self
