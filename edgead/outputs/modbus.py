"""Modbus TCP server (pymodbus): the station's status bits, a trigger coil and the last result
as registers, for PLCs that poll. docs/reference/modbus.md is the register map; the addresses
below are the code's half of it.

The server runs on its own thread and event loop. Registers are not stored and kept up to date:
pymodbus calls :meth:`ModbusSink._access` on every request and the registers are filled from
the station's state at that moment, so a PLC never reads a half-updated result (one snapshot
per request).
"""

from __future__ import annotations

import logging
import math
import struct
import threading
from typing import Any

from edgead.errors import ConfigError
from edgead.outputs.server_thread import ServerThread
from edgead.outputs.sinks import PartResult, Station, StationState

log = logging.getLogger(__name__)

# discrete inputs (function 2) and the status word (input register 22)
DI_READY, DI_BUSY, DI_RESULT_VALID, DI_ALARM, DI_MODEL_LOADED, DI_OK, DI_REJECT, DI_ERROR = range(8)
N_BITS = 16
COIL_TRIGGER = 0
# input registers (function 4), mirrored read-only as holding registers (function 3)
IR_PART = 0  # u32
IR_DECISION = 2  # 0 none, 1 ok, 2 reject, 3 error
IR_SCORE_X1000 = 3  # u32
IR_NORM_X1000 = 5  # u32
IR_SCORE_F32 = 7
IR_NORM_F32 = 9
IR_THRESHOLD_F32 = 11
IR_LATENCY_MS = 13  # u16
IR_LOG_ID = 14  # u32
IR_OK, IR_REJECT, IR_ERROR = 16, 18, 20  # u32 counters
IR_STATUS = 22  # the discrete inputs as one word
IR_VERSION_CHARS = 23  # 16 registers: model version, ASCII, 2 characters a register
VERSION_REGS = 16
N_REGS = IR_VERSION_CHARS + VERSION_REGS
DECISION_CODES = {"ok": 1, "reject": 2, "error": 3}
U32_MAX, U16_MAX = 2**32 - 1, 2**16 - 1


def _u32(value: float) -> list[int]:
    v = 0 if not math.isfinite(value) else int(min(max(round(value), 0), U32_MAX))
    return [v >> 16, v & 0xFFFF]


def _f32(value: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def _ascii(text: str, regs: int) -> list[int]:
    raw = text.encode("ascii", "replace")[: regs * 2].ljust(regs * 2, b"\0")
    return list(struct.unpack(f">{regs}H", raw))


def status_bits(s: StationState) -> list[bool]:
    last = s.last
    bits = [s.ready, s.busy, last is not None and not s.busy, s.alarm, s.model_loaded,
            last is not None and last.decision == "ok", last is not None and last.decision == "reject",
            last is not None and last.decision == "error"]
    return bits + [False] * (N_BITS - len(bits))


def registers(s: StationState) -> list[int]:
    """The input register image for one state snapshot."""
    r: PartResult | None = s.last
    regs = [0] * N_REGS
    if r is not None:
        regs[IR_PART:IR_PART + 2] = _u32(r.part)
        regs[IR_DECISION] = DECISION_CODES[r.decision]
        regs[IR_SCORE_X1000:IR_SCORE_X1000 + 2] = _u32(r.score * 1000)
        regs[IR_NORM_X1000:IR_NORM_X1000 + 2] = _u32(r.normalized_score * 1000)
        regs[IR_SCORE_F32:IR_SCORE_F32 + 2] = _f32(r.score)
        regs[IR_NORM_F32:IR_NORM_F32 + 2] = _f32(r.normalized_score)
        regs[IR_LATENCY_MS] = 0 if not math.isfinite(r.latency_ms) else min(round(r.latency_ms), U16_MAX)
        regs[IR_LOG_ID:IR_LOG_ID + 2] = _u32(r.id or 0)
    regs[IR_THRESHOLD_F32:IR_THRESHOLD_F32 + 2] = _f32(s.threshold)
    for addr, value in ((IR_OK, s.ok), (IR_REJECT, s.reject), (IR_ERROR, s.error)):
        regs[addr:addr + 2] = _u32(value)
    regs[IR_STATUS] = sum(1 << i for i, bit in enumerate(status_bits(s)) if bit)
    regs[IR_VERSION_CHARS:IR_VERSION_CHARS + VERSION_REGS] = _ascii(s.model_version, VERSION_REGS)
    return regs


class ModbusSink:
    """The Modbus TCP server, on its own thread."""

    name = "modbus"

    def __init__(self, config: Any, metrics: Any, token: str | None = None):  # Modbus has no authentication
        self.config = config
        self.metrics = metrics
        self.port: int | None = None  # the bound port (config port 0: a free one)
        self._station: Station | None = None
        self._pending = 0  # triggered parts not yet scored: the trigger coil reads 1 meanwhile
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: ServerThread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, station: Station) -> None:
        self._station = station
        self._thread = ServerThread("edgead-modbus")
        try:
            self._thread.start(self._serve)
        except Exception as exc:
            raise ConfigError(f"modbus: cannot listen on {self.config.host}:{self.config.port} ({exc})") from None
        log.info("modbus: listening on %s:%d", self.config.host, self.port)

    async def _serve(self, started: threading.Event) -> None:
        from pymodbus.pdu.device import ModbusDeviceIdentification
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        from edgead import __version__

        def bits() -> list:
            return [SimData(0, count=N_BITS, values=False, datatype=DataType.BITS)]

        def regs() -> list:
            return [SimData(0, count=N_REGS, values=0, datatype=DataType.REGISTERS)]

        identity = ModbusDeviceIdentification(info_name={"VendorName": "edgead", "ProductCode": "edgead",
                                                         "ProductName": "edgead anomaly detection",
                                                         "MajorMinorRevision": __version__})
        # id 0: answer every unit id (a gateway's or a PLC's default, whatever it is)
        device = SimDevice(id=0, simdata=(bits(), bits(), regs(), regs()), action=self._access, identity=identity)
        self._server = ModbusTcpServer(device, address=(self.config.host, self.config.port))
        await self._server.serve_forever(background=True)
        self.port = self._server.transport.sockets[0].getsockname()[1]
        started.set()
        await self._server.serving

    def close(self) -> None:
        if self._thread is None:
            return
        if self._server is not None and self._thread.running:
            try:
                self._thread.run(self._server.shutdown(), 5)
            except Exception:
                log.exception("modbus: shutdown")
        self._thread.join(5)
        self._thread = None

    # -- results -------------------------------------------------------------------------------
    def publish(self, result: PartResult) -> None:
        # nothing to push: requests read the station's state; only the trigger coil's hold ends
        self.metrics.output_published.labels(self.name).inc()

    def _done(self, _future: Any) -> None:
        with self._lock:
            self._pending = max(0, self._pending - 1)

    def _trigger(self) -> Any:
        from pymodbus.constants import ExcCodes

        if not self.config.allow_trigger:
            self.metrics.output_triggers.labels(self.name, "refused").inc()
            return ExcCodes.ILLEGAL_ADDRESS
        try:
            future = self._station.trigger(self.name, answered=False)  # the PLC polls; nobody awaits the row
        except Exception as exc:  # queue full / shutting down: Modbus's own "busy" answer
            log.warning("modbus: trigger refused (%s)", exc)
            self.metrics.output_triggers.labels(self.name, "busy").inc()
            return ExcCodes.DEVICE_BUSY
        with self._lock:
            self._pending += 1
        future.add_done_callback(self._done)
        self.metrics.output_triggers.labels(self.name, "queued").inc()
        return None

    async def _access(self, function_code: int, start_address: int, address: int, count: int,
                      current_registers: list[int], set_values: list | None) -> Any:
        """pymodbus's per-request hook: fill the registers from one state snapshot; a 1 written
        to the trigger coil queues a part; holding registers are read-only."""
        from pymodbus.constants import ExcCodes

        if function_code in (6, 16, 22, 23):
            return ExcCodes.ILLEGAL_ADDRESS
        if function_code in (5, 15):
            first = COIL_TRIGGER - address
            if set_values is not None and 0 <= first < len(set_values) and set_values[first]:
                return self._trigger()
            return None
        state = self._station.state()
        if function_code == 2:
            current_registers[0] = sum(1 << i for i, bit in enumerate(status_bits(state)) if bit)
        elif function_code == 1:
            with self._lock:
                current_registers[0] = 1 if self._pending else 0
        elif function_code in (3, 4):
            image = registers(state)
            current_registers[: len(image)] = image
        return None
