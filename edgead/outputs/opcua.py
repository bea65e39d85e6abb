"""OPC UA server (asyncua): a small information model in the spirit of the OPC UA Machine Vision
companion specification (OPC 40100-1). docs/reference/opcua.md lists the nodes.

Objects/VisionSystem
  State (String: Preoperational | Operational | Error), ModelName, ModelVersion, Threshold
  Trigger() -> Decision, Score, NormalizedScore, ResultId   (captures and scores like GET /score)
  LastResult/ PartCounter, ResultId, Decision, Score, NormalizedScore, LatencyMs, Timestamp
  Counters/   Ok, Reject, Error
  events of InspectionResultEventType, one per part, emitted by VisionSystem

The server runs on its own thread and event loop. ``publish`` (inference thread) only queues
the result for that loop; a bounded queue drops and counts results the loop cannot keep up with.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import threading
from typing import Any

from edgead.errors import ConfigError
from edgead.outputs.server_thread import ServerThread
from edgead.outputs.sinks import PartResult, Station, StationState

log = logging.getLogger(__name__)

QUEUE = 256
STATE_POLL_S = 0.5
EVENT_FIELDS = (("PartCounter", "UInt32"), ("ResultId", "Int64"), ("Decision", "String"), ("Score", "Double"),
                ("NormalizedScore", "Double"), ("LatencyMs", "Double"), ("ModelVersion", "String"))


def station_state_name(s: StationState) -> str:
    """The Machine Vision state: Error while the camera is down or the alarm is raised."""
    if s.alarm:
        return "Error"
    return "Operational" if s.ready else "Preoperational"


class _Users:
    """One user (name + password); anonymous sessions are off when it is configured."""

    def __init__(self, username: str, password: str):
        self._username, self._password = username, password

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        import hmac

        from asyncua.crypto.permission_rules import User, UserRole

        if username == self._username and password is not None and hmac.compare_digest(password, self._password):
            return User(role=UserRole.User, name=username)
        return None


class OpcUaSink:
    name = "opcua"

    def __init__(self, config: Any, metrics: Any, token: str | None = None):
        try:
            import asyncua  # noqa: F401
        except ImportError:
            raise ConfigError("opcua.enabled needs asyncua: pip install 'edgead[plant]'") from None
        self.config = config
        self.metrics = metrics
        self.password = config.password.get_secret_value() if config.password is not None else token
        self.endpoint = f"opc.tcp://{config.host}:{config.port}/edgead/"
        self._station: Station | None = None
        self._queue: asyncio.Queue | None = None
        self._stop: asyncio.Event | None = None
        self._thread: ServerThread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, station: Station) -> None:
        self._station = station
        self._thread = ServerThread("edgead-opcua")
        try:
            self._thread.start(self._serve)
        except Exception as exc:
            raise ConfigError(f"opcua: cannot serve {self.endpoint} ({exc})") from None
        log.info("opcua: serving %s", self.endpoint)

    async def _serve(self, started: threading.Event) -> None:
        from asyncua import Server, ua

        c = self.config
        server = Server(user_manager=_Users(c.username, self.password) if self.password else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("edgead vision system")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.password:  # a password configured: no anonymous sessions
            server.set_identity_tokens([ua.UserNameIdentityToken])
        idx = await server.register_namespace(c.namespace)
        nodes = await self._build(server, idx)
        self._queue = asyncio.Queue(QUEUE)
        self._stop = asyncio.Event()
        async with server:
            started.set()
            updater = asyncio.create_task(self._update(server, nodes))
            await self._stop.wait()
            updater.cancel()

    async def _build(self, server: Any, idx: int) -> dict[str, Any]:
        from asyncua import ua

        s = self._station.state()
        vs = await server.nodes.objects.add_object(idx, "VisionSystem")
        n: dict[str, Any] = {"system": vs}
        n["State"] = await vs.add_variable(idx, "State", station_state_name(s), ua.VariantType.String)
        n["ModelName"] = await vs.add_variable(idx, "ModelName", s.model_name, ua.VariantType.String)
        n["ModelVersion"] = await vs.add_variable(idx, "ModelVersion", s.model_version, ua.VariantType.String)
        n["Threshold"] = await vs.add_variable(idx, "Threshold", float(s.threshold), ua.VariantType.Double)
        last = await vs.add_object(idx, "LastResult")
        for name, vtype, value in (("PartCounter", ua.VariantType.UInt32, 0), ("ResultId", ua.VariantType.Int64, -1),
                                   ("Decision", ua.VariantType.String, ""),
                                   ("Score", ua.VariantType.Double, math.nan),
                                   ("NormalizedScore", ua.VariantType.Double, math.nan),
                                   ("LatencyMs", ua.VariantType.Double, math.nan),
                                   ("Timestamp", ua.VariantType.DateTime, dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))):
            n[name] = await last.add_variable(idx, name, value, vtype)
        counters = await vs.add_object(idx, "Counters")
        for name in ("Ok", "Reject", "Error"):
            n[name] = await counters.add_variable(idx, name, 0, ua.VariantType.UInt32)
        outputs = [ua.Argument(Name=name, DataType=ua.NodeId(vt, 0), ValueRank=-1)
                   for name, vt in (("Decision", ua.ObjectIds.String), ("Score", ua.ObjectIds.Double),
                                    ("NormalizedScore", ua.ObjectIds.Double), ("ResultId", ua.ObjectIds.Int64))]
        await vs.add_method(idx, "Trigger", self._trigger, [], outputs)
        etype = await server.create_custom_event_type(
            idx, "InspectionResultEventType", ua.ObjectIds.BaseEventType,
            [(name, getattr(ua.VariantType, vt)) for name, vt in EVENT_FIELDS])
        n["events"] = await server.get_event_generator(etype, vs)
        return n

    def close(self) -> None:
        if self._thread is None:
            return
        if self._stop is not None:
            self._thread.call(self._stop.set)
        self._thread.join(10)
        self._thread = None

    # -- results -------------------------------------------------------------------------------
    def publish(self, result: PartResult) -> None:
        if self._thread is not None and self._queue is not None:
            self._thread.call(self._enqueue, result)

    def _enqueue(self, result: PartResult) -> None:
        try:
            self._queue.put_nowait(result)
        except asyncio.QueueFull:
            self.metrics.output_dropped.labels(self.name).inc()

    async def _update(self, server: Any, n: dict[str, Any]) -> None:
        from asyncua import ua

        async def write(name: str, value: Any, vtype: Any) -> None:
            await n[name].write_value(ua.Variant(value, vtype))

        V = ua.VariantType
        while True:
            try:
                r = await asyncio.wait_for(self._queue.get(), STATE_POLL_S)
            except TimeoutError:
                r = None
            s = self._station.state()
            await write("State", station_state_name(s), V.String)
            await write("ModelName", s.model_name, V.String)
            await write("ModelVersion", s.model_version, V.String)
            await write("Threshold", float(s.threshold), V.Double)
            for name, value in (("Ok", s.ok), ("Reject", s.reject), ("Error", s.error)):
                await write(name, value, V.UInt32)
            if r is None:
                continue
            await write("PartCounter", r.part, V.UInt32)
            await write("ResultId", -1 if r.id is None else r.id, V.Int64)
            await write("Decision", r.decision, V.String)
            await write("Score", r.score, V.Double)
            await write("NormalizedScore", r.normalized_score, V.Double)
            await write("LatencyMs", r.latency_ms, V.Double)
            await write("Timestamp", dt.datetime.fromtimestamp(r.timestamp, dt.timezone.utc), V.DateTime)
            ev = n["events"].event
            ev.PartCounter, ev.ResultId, ev.Decision = r.part, -1 if r.id is None else r.id, r.decision
            ev.Score, ev.NormalizedScore, ev.LatencyMs = r.score, r.normalized_score, r.latency_ms
            ev.ModelVersion = r.model_version
            ev.Severity = 500 if r.decision != "ok" else 100
            await n["events"].trigger(message=f"part {r.part}: {r.decision}")
            self.metrics.output_published.labels(self.name).inc()

    async def _trigger(self, parent: Any) -> list:
        """The Trigger method: queue a part like GET /score and answer with its result."""
        from asyncua import ua

        if not self.config.allow_trigger:
            self.metrics.output_triggers.labels(self.name, "refused").inc()
            raise ua.UaStatusCodeError(ua.StatusCodes.BadUserAccessDenied)
        try:
            future = self._station.trigger(self.name)
        except Exception as exc:
            log.warning("opcua: trigger refused (%s)", exc)
            self.metrics.output_triggers.labels(self.name, "busy").inc()
            raise ua.UaStatusCodeError(ua.StatusCodes.BadResourceUnavailable) from None
        self.metrics.output_triggers.labels(self.name, "queued").inc()
        try:
            outcome = await asyncio.wrap_future(future)
        except Exception as exc:  # camera or inference failure: the part has no result
            log.warning("opcua: triggered part failed (%s)", exc)
            raise ua.UaStatusCodeError(ua.StatusCodes.BadInternalError) from None
        r = outcome.result
        return [ua.Variant(r.decision, ua.VariantType.String), ua.Variant(float(r.score), ua.VariantType.Double),
                ua.Variant(float(r.normalized_score), ua.VariantType.Double),
                ua.Variant(-1 if outcome.id is None else outcome.id, ua.VariantType.Int64)]
