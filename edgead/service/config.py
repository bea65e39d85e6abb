"""Daemon configuration: one TOML file, ``EDGEAD_*`` environment overrides, CLI flags on top.

Precedence (highest first): command-line flags, environment (``EDGEAD_<SECTION>__<FIELD>``,
e.g. ``EDGEAD_SERVER__PORT=8081``), the TOML file, defaults. Everything is validated at start;
``load_config`` raises ConfigError listing every bad field with where its value came from.
See deploy/edgead.toml for the documented example.
"""

from __future__ import annotations

import math
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from edgead.capture.registry import split_spec
from edgead.errors import ConfigError
from edgead.service.config_gpio import GpioConfig
from edgead.service.config_plant import ModbusConfig, MqttConfig, OpcUaConfig
from edgead.teach.settings import TeachConfig

ENV_PREFIX = "EDGEAD_"
MIN_TOKEN_CHARS = 16
_FILE_DATA: ContextVar[dict] = ContextVar("edgead_config_file_data", default={})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerConfig(_Section):
    """HTTP server. The default bind is loopback only; a LAN bind must be asked for."""

    host: str = Field(
        "127.0.0.1", description="bind address: loopback by default; 0.0.0.0 serves the plant network (set a token)")
    port: int = Field(8080, ge=0, le=65535, description="0 picks a free port (tests)")
    token: SecretStr | None = Field(None, description="bearer token (at least 16 characters) for everything that "
                                                       "moves the line or writes: /score, PUT /threshold, "
                                                       "POST /model/reload")
    token_file: Path | None = Field(None, description="read the token from this file (e.g. a systemd credential); "
                                                      "a missing, empty or short file stops the daemon at start")
    protect_score: bool = Field(True, description="with a token configured, /score needs it too. false: clients "
                                                  "without it may score, but their parts never move the reject "
                                                  "output and are not logged")
    max_connections: int = Field(256, ge=8, le=65536,
                                 description="open connections at most; more get 503 at once, before their request is "
                                             "read (GET /health/live is still answered). Keep it well under the "
                                             "unit's LimitNOFILE")
    backlog: int = Field(64, ge=8, le=4096,
                         description="connections the kernel queues until the daemon accepts them, and how many it "
                                     "accepts in one go. Small, so a burst of connections cannot queue far ahead of a "
                                     "health probe; lowered at start where it would not fit LimitNOFILE")
    max_concurrent_uploads: int = Field(8, ge=1, le=1024,
                                        description="POST /score bodies received at once; more get 503 at once, "
                                                    "so slow uploads cannot hold every connection")
    header_timeout_s: float = Field(10.0, gt=0, le=600,
                                    description="a connection that has not sent its request headers by then is "
                                                "closed")
    body_timeout_s: float = Field(10.0, gt=0, le=600,
                                  description="an upload whose body has not arrived by then gets 408")
    keep_alive_s: float = Field(5.0, gt=0, le=600, description="idle keep-alive connections are closed after this")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=1 << 30,
                               description="largest POST /score upload; larger -> 413")
    max_image_pixels: int = Field(50_000_000, ge=4096, description="refuse to decode larger images (upper cap)")
    frame_factor: float = Field(64.0, gt=0, le=100_000,
                                description="largest frame, in multiples of the frame pixels the model uses")
    max_concurrent_renders: int = Field(2, ge=1, le=64, description="heatmap pictures rendered at once; more -> 503")
    frame_memory_mb: float = Field(96.0, gt=0, description="memory one decoded frame and its copies may take")
    request_timeout_s: float = Field(30.0, gt=0, le=3600,
                                    description="a /score that waits longer for its result -> 504")
    access_log: bool = Field(False, description="log every HTTP request (uvicorn's access log)")

    @field_validator("token")
    @classmethod
    def _token_strength(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and v.get_secret_value() and len(v.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 24`)")
        return v or None

    def bearer_token(self) -> str | None:
        """The configured token (from ``token`` or ``token_file``), or None. Fails closed: a token
        file that is missing, unreadable, empty or short is a ConfigError, never "no auth"."""
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is None:
            return None
        try:
            value = self.token_file.read_text().strip()
        except FileNotFoundError:
            raise ConfigError(f"server.token_file {self.token_file}: cannot read it (no such file). Create it "
                              f"(`openssl rand -hex 24 > {self.token_file}`), or leave token_file out to serve on "
                              "loopback without a token "
                              "(deploy/edgead.toml is a Raspberry Pi's configuration; on a workstation start from "
                              "deploy/workstation.toml)") from None
        except OSError as exc:
            raise ConfigError(f"server.token_file {self.token_file}: cannot read it ({exc.strerror or exc})") from None
        if len(value) < MIN_TOKEN_CHARS:
            what = "is empty" if not value else f"holds {len(value)} characters"
            raise ConfigError(f"server.token_file {self.token_file}: {what}; a token needs at least "
                              f"{MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 24`)")
        return value


class ModelConfig(_Section):
    """The artifact the daemon serves and how it runs it."""

    path: Path | None = Field(None, description="artifact directory (required to serve)")
    precision: Literal["auto", "int8", "fp32"] = Field(
        "auto", description="auto: the artifact's default (INT8 when it passed the export's parity check), "
                            "or int8 / fp32")
    threads: int = Field(1, ge=1, le=64, description="onnxruntime/search threads")
    search: Literal["auto", "int8", "exact", "hnsw"] = Field(
        "auto", description="PatchCore nearest-neighbour search: auto (the artifact's choice), int8, "
                            "exact (float32) or hnsw")
    threshold: float | None = Field(None, gt=0, description="override the artifact's threshold")
    reload_roots: list[Path] = Field(default_factory=list,
                                     description="where POST /model/reload may load from (default: the model's parent)")

    @field_validator("threshold")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class SourceConfig(_Section):
    """Where frames come from. A failing source is reopened with exponential backoff."""

    spec: str = Field("none", description="folder:<dir> | opencv:<index|url|file> | picamera2[:<n>] | none")
    width: int | None = Field(None, ge=16, le=16384, description="capture width (picamera2 default: model input)")
    height: int | None = Field(None, ge=16, le=16384, description="capture height (set with width)")
    roi: tuple[int, int, int, int] | None = Field(None, description="picamera2 sensor crop x, y, w, h")
    mode: Literal["still", "video"] = Field(
        "video", description="picamera2: video (fast frames) or still (full ISP quality)")
    controls: dict[str, Any] = Field(default_factory=dict, description="picamera2 controls, e.g. ExposureTime")
    flush_frames: int = Field(1, ge=0, le=30,
                             description="opencv live sources: stale buffered frames dropped before each capture")
    loop: bool = Field(True, description="folder: start over after the last image")
    timeout_s: float = Field(5.0, gt=0, le=120, description="opencv streams: open/read timeout")
    reopen_initial_s: float = Field(0.5, gt=0, le=600, description="first wait before a failing source is reopened "
                                                                    "(doubling up to reopen_max_s)")
    reopen_max_s: float = Field(4.0, gt=0, le=3600, description="longest wait between reopen attempts")
    probe_interval_s: float = Field(0.5, ge=0, le=60, description="watch an idle source this often (0: off)")

    @field_validator("spec")
    @classmethod
    def _spec(cls, v: str) -> str:
        try:
            split_spec(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v.strip() or "none"

    @field_validator("roi")
    @classmethod
    def _roi(cls, v: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if v is not None and (min(v[:2]) < 0 or min(v[2:]) <= 0):
            raise ValueError("expected x, y >= 0 and width, height > 0")
        return v

    @model_validator(mode="after")
    def _sizes(self) -> "SourceConfig":
        if (self.width is None) != (self.height is None):
            raise ValueError("set both width and height, or neither")
        if self.reopen_max_s < self.reopen_initial_s:
            raise ValueError("reopen_max_s must be >= reopen_initial_s")
        return self

    @property
    def enabled(self) -> bool:
        return split_spec(self.spec) is not None


class TriggerConfig(_Section):
    """When a frame is captured and scored."""

    mode: Literal["on_demand", "continuous", "gpio"] = Field(
        "on_demand", description="on_demand: GET /score captures a frame; continuous: capture at rate_hz; "
                                 "gpio: one capture per gpio.trigger_pin activation")
    rate_hz: float = Field(2.0, gt=0, le=100, description="continuous mode: frames per second (at most)")


class InferenceConfig(_Section):
    """The single inference worker."""

    queue_size: int = Field(4, ge=1, le=256, description="jobs waiting beyond this -> 503 + Retry-After")


class InspectionConfig(_Section):
    """The inspection log: one SQLite row per scored part, frames and anomaly maps of some of them."""

    data_dir: Path = Field(Path("edgead-data"), description="database and images (systemd: /var/lib/edgead)")
    synchronous: Literal["normal", "full"] = Field(
        "normal", description="SQLite durability: normal survives kill -9 and crashes; full also power loss "
                              "(one fsync per result)")
    save_rejects: bool = Field(True, description="keep the frame and anomaly map of every reject")
    save_good_every: int = Field(0, ge=0, description="store every Nth good frame with its map (0: none)")
    image_format: Literal["jpg", "png"] = Field("jpg", description="format of stored frames")
    jpeg_quality: int = Field(90, ge=10, le=100, description="quality of stored JPEG frames")
    max_results: int = Field(1_000_000, ge=0, description="rows kept (0: unlimited)")
    max_images: int = Field(2000, ge=0, description="stored frames kept (0: unlimited)")
    max_image_mb: float = Field(1024.0, ge=0, description="disk for stored frames (0: unlimited)")
    max_stored_side: int = Field(1600, ge=64, le=16384, description="stored frames are shrunk to this longest side")
    commit_interval_s: float = Field(0.0, ge=0, le=60,
                                     description="low SD-card wear: rows of parts nobody waits for (continuous, "
                                                 "GPIO, Modbus triggers) commit together at most this often; rows "
                                                 "returned to a caller (HTTP, OPC UA) still commit before the "
                                                 "answer. A crash may lose the unanswered rows of the last "
                                                 "interval. 0: every row at once")


class EdgeadConfig(BaseSettings):
    """The whole daemon configuration."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                      validate_assignment=True)

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="daemon log level (to stderr; journald under systemd)")
    server: ServerConfig = Field(default_factory=ServerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    trigger: TriggerConfig = Field(default_factory=TriggerConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    gpio: GpioConfig = Field(default_factory=GpioConfig)
    inspection: InspectionConfig = Field(default_factory=InspectionConfig)
    modbus: ModbusConfig = Field(default_factory=ModbusConfig)
    opcua: OpcUaConfig = Field(default_factory=OpcUaConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    teach: TeachConfig = Field(default_factory=TeachConfig)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init) > environment > the TOML file; no .env or secrets directory."""
        return init_settings, env_settings, InitSettingsSource(settings_cls, _FILE_DATA.get())

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """Allow ``model = "/path"`` and ``source = "folder:..."`` as plain strings."""
        if isinstance(data, dict):
            data = dict(data)
            for key, field_name in (("model", "path"), ("source", "spec")):
                if isinstance(data.get(key), (str, Path)):
                    data[key] = {field_name: data[key]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "EdgeadConfig":
        if self.trigger.mode in ("continuous", "gpio") and not self.source.enabled:
            raise ValueError(f"trigger.mode = {self.trigger.mode!r} needs a frame source (source.spec)")
        if self.trigger.mode == "gpio" and not (self.gpio.enabled and self.gpio.trigger_pin is not None):
            raise ValueError("trigger.mode = 'gpio' needs gpio.enabled = true and gpio.trigger_pin")
        if self.server.token is not None and self.server.token_file is not None:
            raise ValueError("set server.token or server.token_file, not both")
        return self

    @property
    def token(self) -> str | None:
        return self.server.bearer_token()


def read_toml(path: str | Path) -> dict:
    """Parse a TOML config file; ConfigError naming the file and the syntax problem."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None


def _origin(loc: tuple, file_data: dict, overrides: dict, config_file: Path | None) -> str:
    def has(data: dict, keys: tuple) -> bool:
        for key in keys:
            if not isinstance(data, dict) or key not in data:
                return False
            data = data[key]
        return True

    keys = tuple(str(k) for k in loc if not isinstance(k, int))
    if keys and has(overrides, keys):
        return "command line"
    env_name = ENV_PREFIX + "__".join(keys).upper()
    if keys and any(k.upper() == env_name for k in os.environ):
        return f"environment {env_name}"
    if keys and has(file_data, keys):
        return str(config_file)
    return ""


def format_errors(exc: ValidationError, file_data: dict, overrides: dict, config_file: Path | None) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        origin = _origin(loc, file_data, overrides, config_file)
        shown = ""
        if "input" in err and not isinstance(err["input"], dict) and "token" not in where:
            shown = f" (got {err['input']!r})"
        lines.append(f"  {where}: {msg}{shown}" + (f" [from {origin}]" if origin else ""))
    return "invalid configuration:\n" + "\n".join(lines)


def load_config(config_file: str | Path | None = None, overrides: dict | None = None) -> EdgeadConfig:
    """Build the configuration from file + environment + overrides (nested dicts, e.g. the
    parsed CLI flags). ConfigError with one line per invalid field."""
    config_file = Path(config_file) if config_file else None
    file_data = read_toml(config_file) if config_file else {}
    overrides = overrides or {}
    token = _FILE_DATA.set(file_data)
    try:
        config = EdgeadConfig(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, file_data, overrides, config_file)) from None
    finally:
        _FILE_DATA.reset(token)
    if config.server.token_file is not None:
        try:
            config.token
        except OSError as exc:
            reason = exc.strerror or exc
            raise ConfigError(f"server.token_file {config.server.token_file}: cannot read ({reason})") from None
    return config
