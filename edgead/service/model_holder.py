"""The model being served, swapped atomically on reload, and its threshold.

Threshold precedence for a loaded model: a value set through ``PUT /threshold`` and persisted
for that model's sha256 > ``model.threshold`` from the config (initial model only) > the
artifact's calibrated threshold.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable

from edgead.errors import ArtifactError, ConfigError
from edgead.heap import release_free_memory
from edgead.outputs.inspection_log import InspectionLog

log = logging.getLogger(__name__)

# A threshold this far from the artifact's calibrated one is a typo, and a tiny one makes every
# normalised score overflow to infinity (which JSON cannot carry).
THRESHOLD_RANGE = 1e6


def threshold_problem(value: float, base: float) -> str | None:
    """Why ``value`` cannot be the threshold of a model calibrated at ``base`` (None: it can)."""
    if not math.isfinite(value) or value <= 0:
        return f"threshold {value}: must be a positive finite number"
    low, high = base / THRESHOLD_RANGE, base * THRESHOLD_RANGE
    if not low <= value <= high:
        return (f"threshold {value:g}: outside {low:.3g} .. {high:.3g} (within a factor of {THRESHOLD_RANGE:g} of "
                f"the artifact's {base:.6g})")
    return None

ModelLoader = Callable[..., Any]


def identity_of(model: Any) -> dict[str, str]:
    """What a result records about the model that scored it."""
    return {"name": model.name, "version": model.version, "sha256": model.sha256, "precision": model.precision}


class ReloadInProgress(Exception):
    """Another reload is running."""


class ModelHolder:
    """Holds the current model; readers take ``holder.model`` once per job (a plain attribute
    read, so a swap never tears a job: in-flight jobs finish on the model they started with)."""

    def __init__(self, model: Any, loader: ModelLoader, *, precision: str | None, threads: int, search: str,
                 log_store: InspectionLog | None, config_threshold: float | None = None,
                 reload_roots: list[Path] | None = None):
        self._loader = loader
        self._load_args = {"precision": precision, "threads": threads, "search": search}
        self._store = log_store
        self._reload_lock = threading.Lock()
        roots = reload_roots or [Path(model.path).resolve().parent]
        self.reload_roots = [Path(r).resolve() for r in roots]
        self.model = model
        self.loaded_at = time.time()
        self.base_threshold = float(model.threshold)
        self.threshold_source = "artifact"
        self._apply_threshold(model, config_threshold)

    def _apply_threshold(self, model: Any, config_threshold: float | None) -> None:
        """Set the persisted or configured threshold on a freshly loaded ``model``."""
        stored = self._store.threshold_override(model.sha256) if self._store is not None else None
        base = float(model.threshold)
        if stored is not None and (problem := threshold_problem(stored, base)) is not None:
            log.warning("ignoring the stored threshold override: %s", problem)
            stored = None
        if stored is not None:
            model.set_threshold(stored)
            self.threshold_source = "override"
        elif config_threshold is not None:
            if (problem := threshold_problem(config_threshold, base)) is not None:
                raise ConfigError(f"model.threshold: {problem}")
            model.set_threshold(config_threshold)
            self.threshold_source = "config"
        else:
            self.threshold_source = "artifact"

    def resolve(self, path: str | Path | None) -> Path:
        """The artifact path to load: the current one, or ``path`` if it lies in a reload root."""
        if path is None:
            return Path(self.model.path)
        if "\x00" in str(path):
            raise ArtifactError("the model path contains a NUL byte")
        try:
            candidate = Path(path).expanduser().resolve()
        except (RuntimeError, OSError) as exc:  # ~nosuchuser, a symlink loop
            raise ArtifactError(f"{path}: cannot resolve the path ({exc})") from None
        if not any(candidate == root or root in candidate.parents for root in self.reload_roots):
            allowed = ", ".join(str(r) for r in self.reload_roots)
            raise ArtifactError(f"{path}: outside the allowed model directories ({allowed}; see model.reload_roots)")
        return candidate

    def reload(self, path: str | Path | None = None) -> Any:
        """Load an artifact beside the current model and swap it in. ArtifactError/ConfigError
        (current model untouched) for a bad artifact; ReloadInProgress if one is running."""
        if not self._reload_lock.acquire(blocking=False):
            raise ReloadInProgress("a model reload is already in progress")
        try:
            target = self.resolve(path)
            try:
                new = self._loader(target, **self._load_args)
            except (ArtifactError, ConfigError):
                raise
            except Exception as exc:  # e.g. a runtime error deep in onnxruntime: still the artifact's fault
                raise ArtifactError(f"{target}: cannot load ({type(exc).__name__}: {exc})") from None
            base = float(new.threshold)
            self._apply_threshold(new, None)  # a persisted override for this sha256, else the artifact's
            self.base_threshold, self.loaded_at = base, time.time()
            old, self.model = self.model, new  # the atomic swap
            log.info("model reloaded: %s %s (%s) -> %s %s (%s), threshold %.6g (%s)", old.name, old.version,
                     old.sha256[:12], new.name, new.version, new.sha256[:12], new.threshold, self.threshold_source)
            # the old model's banks and sessions go back to the heap here (a part being scored keeps
            # it until done; the worker trims again when idle): hand the pages to the OS, or each
            # reload of a different artifact leaves the heap a model larger
            del old
            release_free_memory()
            return new
        finally:
            self._reload_lock.release()

    def set_threshold(self, value: float | None, persist: bool = True) -> tuple[float, float]:
        """Set (or with None, reset to the artifact's) threshold; returns (previous, new)."""
        model = self.model
        previous = float(model.threshold)
        if value is None:
            model.set_threshold(self.base_threshold)
            self.threshold_source = "artifact"
        else:
            problem = threshold_problem(value, self.base_threshold)
            if problem is not None:
                raise ConfigError(problem)
            model.set_threshold(float(value))
            self.threshold_source = "override"
        if persist and self._store is not None:
            self._store.set_threshold_override(model.sha256, value)
        return previous, float(model.threshold)

    def identity(self) -> dict[str, Any]:
        return identity_of(self.model)

    def describe(self) -> dict[str, Any]:
        m = self.model
        manifest = getattr(m, "manifest", None)  # edgead.manifest.Manifest
        backbone = getattr(manifest, "backbone", None)
        return {
            **self.identity(),
            "path": str(m.path),
            "method": getattr(manifest, "method", None),
            "backbone": backbone.model_dump() if backbone is not None else None,
            "input_size": list(m.input_size),
            "threshold": float(m.threshold),
            "artifact_threshold": self.base_threshold,
            "threshold_source": self.threshold_source,
            "search": getattr(m, "search_backend", None),
            "parity": getattr(manifest, "parity", None),  # the export's INT8-vs-FP32 check
            "loaded_at": self.loaded_at,
            "reload_roots": [str(r) for r in self.reload_roots],
        }
