"""The daemon's ``teach`` config section (teaching on the line; off by default)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TeachConfig(BaseModel):
    """Teaching on the line: ``POST /model/teach``, ``POST /results/{id}/good``, ``POST /model/rollback``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(False, description="serve the teach, mark-good and rollback endpoints (token required)")
    keep_versions: int = Field(5, ge=1, le=100, description="model versions kept beside the served model "
                               "(<model.path>.versions/); the served one is never dropped")
    threads: int = Field(1, ge=1, le=64, description="onnxruntime and BLAS threads of the teach process "
                         "(keep below the cores the daemon's inference does not use)")
    nice: int = Field(10, ge=0, le=19, description="CPU niceness of the teach process: inspection keeps priority")
    memory_budget_mb: float = Field(256, gt=0, le=65536, description="patch features held in memory; beyond "
                                    "it they go to a scratch file beside the model")
    max_frames: int = Field(1000, ge=1, le=5000, description="most good frames one teach may use")
    max_rate_hz: float = Field(10.0, gt=0, le=120, description="fastest capture rate a teach from the source may ask")
    allowed_folders: list[str] = Field(default_factory=list, description="folders POST /model/teach may read good "
                                       "images from (empty: none; frames from the source or the log only)")
