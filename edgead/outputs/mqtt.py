"""MQTT publisher (paho-mqtt): one JSON message per part, the station's availability with a last
will. docs/reference/mqtt.md documents the topics and payloads.

paho's network loop runs on its own thread (``loop_start``); ``publish`` only hands the message
to paho's queue, bounded by ``queue_size`` (``max_queued_messages_set``). While the broker is
unreachable QoS 1/2 messages wait there and go out after the reconnect; beyond the bound (or at
QoS 0, which paho does not queue) they are dropped and counted, so a dead broker never holds up
the inference thread.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
from datetime import datetime, timezone
from typing import Any

from edgead.outputs.sinks import PartResult, Station

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None  # JSON has no NaN


def payload(r: PartResult, base_url: str | None) -> dict[str, Any]:
    """The message body of one part (docs/reference/mqtt.md)."""
    base = base_url.rstrip("/") if base_url else None
    return {
        "part": r.part, "id": r.id, "timestamp": _iso(r.timestamp), "origin": r.origin, "source": r.source,
        "decision": r.decision, "score": _num(r.score), "normalized_score": _num(r.normalized_score),
        "threshold": _num(r.threshold), "latency_ms": _num(r.latency_ms),
        "model": {"name": r.model_name, "version": r.model_version}, "error": r.error,
        "image_url": f"{base}{r.image_path}" if base and r.image_path else None,
        "heatmap_url": f"{base}{r.heatmap_path}" if base and r.heatmap_path else None,
    }


class MqttSink:
    name = "mqtt"

    def __init__(self, config: Any, metrics: Any, token: str | None = None):  # the broker has its own login
        import paho.mqtt.client as mqtt

        self.config = c = config
        self.metrics = metrics
        self.topic_result = f"{c.topic_prefix}/result"
        self.topic_last = f"{c.topic_prefix}/last"
        self.topic_availability = f"{c.topic_prefix}/availability"
        self._mqtt = mqtt
        client_id = c.client_id or "edgead-" + c.topic_prefix.replace("/", "-")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=True)
        self.client.max_queued_messages_set(c.queue_size)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        # the broker tells the plant when the station vanishes without saying goodbye
        self.client.will_set(self.topic_availability, OFFLINE, qos=1, retain=True)
        if c.username is not None:
            self.client.username_pw_set(c.username, c.secret())
        if c.tls:
            self.client.tls_set(ca_certs=str(c.ca_file) if c.ca_file else None, cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.connected = False
        metrics.output_connected.labels(self.name).set(0)

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("mqtt: broker %s:%d refused the connection (%s)", self.config.host, self.config.port, reason)
            return
        self.connected = True
        self.metrics.output_connected.labels(self.name).set(1)
        client.publish(self.topic_availability, ONLINE, qos=1, retain=True)
        log.info("mqtt: connected to %s:%d", self.config.host, self.config.port)

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if self.connected:
            log.warning("mqtt: disconnected from the broker (%s); reconnecting", reason)
        self.connected = False
        self.metrics.output_connected.labels(self.name).set(0)

    def start(self, station: Station) -> None:
        # connect_async + loop_start: a broker that is down at start delays nothing; paho retries
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self.client.loop_start()

    def _send(self, topic: str, body: str, qos: int, retain: bool) -> bool:
        info = self.client.publish(topic, body, qos=qos, retain=retain)
        queued = info.rc == self._mqtt.MQTT_ERR_SUCCESS or (qos > 0 and info.rc == self._mqtt.MQTT_ERR_NO_CONN)
        if not queued:
            self.metrics.output_dropped.labels(self.name).inc()
        return queued

    def publish(self, result: PartResult) -> None:
        body = json.dumps(payload(result, self.config.base_url), separators=(",", ":"))
        if self._send(self.topic_result, body, self.config.qos, retain=False):
            self.metrics.output_published.labels(self.name).inc()
        if self.config.retain_last:
            self._send(self.topic_last, body, 1, retain=True)

    def close(self) -> None:
        """Say goodbye (availability offline, retained), give queued messages a moment, stop."""
        try:
            if self.connected:
                info = self.client.publish(self.topic_availability, OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout=2.0)
            self.client.disconnect()
        except Exception:
            log.exception("mqtt: while disconnecting")
        self.client.loop_stop()
        self.metrics.output_connected.labels(self.name).set(0)
