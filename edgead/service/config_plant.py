"""Config sections of the plant-floor outputs: Modbus TCP, OPC UA, MQTT. Each is off by default;
the field descriptions are the reference documentation."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModbusConfig(_Section):
    """Modbus TCP server: status bits, a trigger coil, the last result and counters as registers
    (docs/reference/modbus.md). Modbus has no authentication: bind it to the PLC's network only."""

    enabled: bool = Field(False, description="serve the register map over Modbus TCP")
    host: str = Field("127.0.0.1", description="address to listen on: loopback by default; the PLC network "
                                               "interface's address (or 0.0.0.0) to let the PLC in")
    port: int = Field(5020, ge=0, le=65535, description="TCP port (0 picks a free one). Modbus's own port 502 "
                                                        "is below 1024: the hardened systemd unit holds no "
                                                        "capabilities, so binding it needs a drop-in with "
                                                        "AmbientCapabilities=CAP_NET_BIND_SERVICE and "
                                                        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE")
    allow_trigger: bool = Field(True, description="a 1 written to coil 0 captures and scores a part, like "
                                                  "GET /score; false: the map is read-only")


class MqttConfig(_Section):
    """MQTT publisher (docs/reference/mqtt.md): one JSON message per part, the station's
    availability with a last will. A broker that is down never slows scoring: messages wait in a
    bounded queue and the ones beyond it are dropped and counted."""

    enabled: bool = Field(False, description="publish results to an MQTT broker")
    host: str = Field("localhost", description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (8883 with tls = true)")
    client_id: str = Field("", max_length=128, description="MQTT client id (empty: edgead-<topic_prefix>)")
    username: str | None = Field(None, description="broker user name")
    password: SecretStr | None = Field(None, description="broker password (prefer password_file)")
    password_file: Path | None = Field(None, description="read the broker password from this file")
    tls: bool = Field(False, description="connect with TLS, verifying the broker against the system's CAs "
                                         "(or ca_file)")
    ca_file: Path | None = Field(None, description="CA certificate bundle for tls")
    topic_prefix: str = Field("edgead/station1", min_length=1, max_length=200,
                              description="topics are <topic_prefix>/result, <topic_prefix>/availability")
    qos: Literal[0, 1, 2] = Field(1, description="QoS of result messages: 1 (at least once, the default) rides "
                                                 "out a reconnect; 0 is lost while the broker is away")
    retain_last: bool = Field(True, description="also publish each result, retained, on <topic_prefix>/last so a "
                                                "dashboard that connects later sees the latest part at once")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive; the broker publishes the last will "
                                                            "about 1.5 times this after the station vanishes")
    queue_size: int = Field(1000, ge=1, le=1_000_000, description="results kept while the broker is unreachable; "
                                                                  "more are dropped and counted "
                                                                  "(edgead_output_dropped_total)")
    base_url: str | None = Field(None, description="the daemon's URL as the plant reaches it (e.g. "
                                                   "http://cam1:8080): messages then carry image_url/heatmap_url "
                                                   "links to stored frames")

    @field_validator("topic_prefix")
    @classmethod
    def _topic(cls, v: str) -> str:
        v = v.strip().strip("/")
        if not v or any(c in v for c in "#+\0"):
            raise ValueError("a topic prefix without wildcards (# +), e.g. 'plant/line2/cam1'")
        return v

    @model_validator(mode="after")
    def _secret(self) -> "MqttConfig":
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        return self

    def secret(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        return None


class OpcUaConfig(_Section):
    """OPC UA server (docs/reference/opcua.md) modelled on the Machine Vision companion
    specification: a VisionSystem object with its state, a Trigger method, the last result as
    variables and one event per part. Needs the ``plant`` extra (asyncua)."""

    enabled: bool = Field(False, description="serve the vision system over OPC UA (pip install 'edgead[plant]')")
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0: every interface)")
    port: int = Field(4840, ge=1, le=65535, description="TCP port; 4840 is OPC UA's own")
    namespace: str = Field("urn:edgead:vision", description="namespace URI of the edgead nodes")
    username: str = Field("edgead", min_length=1, description="user name clients log in with when server.token "
                                                             "(or password) is set")
    password: SecretStr | None = Field(None, description="password for username (default: the daemon's server "
                                                         "token); with either set, anonymous access is off")
    allow_trigger: bool = Field(True, description="clients may call the Trigger method (capture and score a "
                                                  "part, like GET /score)")
