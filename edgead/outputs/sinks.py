"""Plant-floor outputs ("sinks"): each one publishes every part's result to something on the
line (a Modbus register map, an OPC UA address space, an MQTT topic) and may offer a trigger.

A sink gets a :class:`Station` (what it may ask of the daemon: trigger a part, read its state)
at start and one :class:`PartResult` per inspected part. Sinks run their network servers on
their own threads; ``publish`` is called on the inference thread and must only hand the
result over (never block on the network). :class:`Outputs` fans results out, keeps the
part/ok/reject/error counters every sink reports, and isolates sinks from each other and
from scoring: a sink that raises is logged and counted, the line keeps running.

The registry names each sink's module and factory, imported only when the sink is enabled
(``asyncua`` is an optional extra): a new sink is one new file and one line here.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)

# name -> "module:factory"; factory(section_config, metrics, token) -> Sink (token: the daemon's own)
REGISTRY: dict[str, str] = {
    "modbus": "edgead.outputs.modbus:ModbusSink",
    "mqtt": "edgead.outputs.mqtt:MqttSink",
    "opcua": "edgead.outputs.opcua:OpcUaSink",
}


@dataclass(frozen=True)
class PartResult:
    """One inspected part as the plant sees it. ``decision`` is ok, reject or error (no result:
    capture or inference failed); ``part`` counts results since the daemon started, ``id`` is
    the inspection-log row (None when the row was not written)."""

    part: int
    timestamp: float  # unix time of capture
    origin: str
    decision: str
    score: float = math.nan
    normalized_score: float = math.nan
    threshold: float = math.nan
    latency_ms: float = math.nan
    id: int | None = None
    source: str = ""
    model_name: str = ""
    model_version: str = ""
    error: str | None = None
    image_path: str | None = None  # "/results/<id>/image" when the frame was stored
    heatmap_path: str | None = None


@dataclass(frozen=True)
class StationState:
    """The daemon's state as the line's status bits show it."""

    ready: bool
    busy: bool
    alarm: bool
    model_loaded: bool
    model_name: str
    model_version: str
    threshold: float
    parts: int = 0
    ok: int = 0
    reject: int = 0
    error: int = 0
    last: PartResult | None = None


class Station(Protocol):
    """What a sink may ask of the daemon."""

    def trigger(self, origin: str, answered: bool = True) -> Future:
        """Capture and score a part now, exactly as ``GET /score`` does; the future holds the
        outcome. ``answered``: the caller is given the part's log id (its row commits first).
        Raises QueueFull / WorkerStopped when it cannot be queued."""

    def state(self) -> StationState: ...


class Sink(Protocol):
    name: str

    def start(self, station: Station) -> None: ...

    def publish(self, result: PartResult) -> None: ...

    def close(self) -> None: ...


def load_sink(name: str, section: Any, metrics: Any, token: str | None) -> Sink:
    """Build the sink registered as ``name`` from its config section."""
    module_name, factory = REGISTRY[name].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, factory)(section, metrics, token)


@dataclass
class _Tally:
    parts: int = 0
    ok: int = 0
    reject: int = 0
    error: int = 0
    last: PartResult | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Outputs:
    """The enabled sinks, fed one result per part."""

    def __init__(self, sinks: list[Sink], state: Callable[[], StationState], trigger: Callable[..., Future],
                 on_error: Callable[[str], None]):
        self.sinks = sinks
        self._state = state
        self._trigger = trigger
        self._on_error = on_error
        self._tally = _Tally()

    def start(self) -> None:
        """Start every sink with this object as its Station; a sink that cannot start (port in
        use) stops the ones already started and raises."""
        started: list[Sink] = []
        try:
            for sink in self.sinks:
                sink.start(self)
                started.append(sink)
        except BaseException:
            for sink in reversed(started):
                sink.close()
            raise

    def trigger(self, origin: str, answered: bool = True) -> Future:
        return self._trigger(origin, answered)

    def state(self) -> StationState:
        t = self._tally
        return replace(self._state(), parts=t.parts, ok=t.ok, reject=t.reject, error=t.error, last=t.last)

    def publish(self, make: Callable[[int], PartResult]) -> PartResult:
        """Count the part, build its result with its part number and hand it to every sink."""
        t = self._tally
        with t.lock:
            t.parts += 1
            result = make(t.parts)
            setattr(t, result.decision, getattr(t, result.decision) + 1)
            t.last = result
        for sink in self.sinks:
            try:
                sink.publish(result)
            except Exception:  # one broken output must not stop the line or the others
                log.exception("%s: cannot publish part %d", sink.name, result.part)
                self._on_error(sink.name)
        return result

    def close(self) -> None:
        for sink in reversed(self.sinks):
            try:
                sink.close()
            except Exception:
                log.exception("%s: error while closing", sink.name)
