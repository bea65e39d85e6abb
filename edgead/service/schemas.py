"""Request and response bodies (they document the API at /docs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ModelIdentity(BaseModel):
    name: str
    version: str
    sha256: str
    precision: str | None = None


class ResultOut(BaseModel):
    """One scored frame (a /score response or a logged result)."""

    id: int | None = Field(description="inspection-log id; null if the log could not be written")
    timestamp: str = Field(description="capture/upload time, ISO 8601 UTC")
    origin: str = Field(description="capture | upload | continuous | gpio")
    source: str | None
    score: float
    normalized_score: float = Field(description="score / threshold: 1.0 is the decision boundary")
    threshold: float
    is_anomaly: bool
    decision: Literal["ok", "reject"]
    latency_ms: dict[str, float] = Field(description="queue, capture|decode, preprocess, backbone, search, score, "
                                                     "inference, log, total")
    model: ModelIdentity
    image_url: str | None = None
    heatmap_url: str | None = None


class ResultsOut(BaseModel):
    results: list[ResultOut]
    count: int
    next_before_id: int | None = Field(None, description="pass as before_id for the next (older) page")


class ErrorOut(BaseModel):
    error: str
    detail: str


class ReloadIn(BaseModel):
    model_config = ConfigDict(strict=True)  # no coercion: the body is what the schema says or a 400

    path: str | None = Field(None, min_length=1, max_length=4096,
                             description="artifact directory; default: reload the current path")

    @field_validator("path")
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        if v is not None and "\x00" in v:
            raise ValueError("a path cannot contain a NUL byte")
        return v


class ThresholdIn(BaseModel):
    model_config = ConfigDict(strict=True)  # ``true`` is no threshold of 1.0, nor "yes" a persist flag

    threshold: float | None = Field(..., gt=0, allow_inf_nan=False, description="new raw-score threshold; null resets"
                                                                                " to the artifact's")
    persist: bool = Field(True, description="keep it for this model across restarts")


class ThresholdOut(BaseModel):
    threshold: float
    previous: float
    source: str
    model_sha256: str
