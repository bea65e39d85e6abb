"""Teach jobs of the daemon: gather good frames, fit in a separate low-priority process, then
install the new version and hot-swap it through the model holder's reload.

The fit runs as ``edgead teach`` in a child process at ``teach.nice`` with ``teach.threads``
onnxruntime/BLAS threads, so the serving process never imports the fitting code's heavy paths,
keeps its own thread pools and latency, and survives a fit that runs out of memory. A job that
fails or is stopped leaves the served model as it was (the version is written atomically into
the store first and installed only on success).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgead.errors import EdgeadError
from edgead.teach import frames, versions
from edgead.teach.settings import TeachConfig

log = logging.getLogger(__name__)


class TeachBusy(EdgeadError):
    """A teach job is already running."""


@dataclass
class TeachRequest:
    mode: str = "new"                   # new | add
    frames: int | None = None           # capture this many from the daemon's source ...
    rate_hz: float = 2.0                # ... at this rate
    folder: str | None = None           # or read a folder (within teach.allowed_folders)
    result_ids: list[int] = field(default_factory=list)   # or the stored frames of these results


@dataclass
class TeachJob:
    id: str
    request: dict
    state: str = "queued"               # queued, capturing, fitting, installing, done, failed, cancelled
    created: float = field(default_factory=time.time)
    finished: float | None = None
    frames: int = 0
    version: str | None = None
    parent: str | None = None
    bank_size: int | None = None
    threshold: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TeachJobs:
    """One teach at a time; ``reload`` swaps the installed version in (the holder's reload)."""

    def __init__(self, model_path: str | Path, config: TeachConfig, reload: Callable[[], Any],
                 grab: Callable[[], Any] | None, store: Any):
        self.model_path = Path(model_path).resolve()
        self.config, self._reload, self._grab, self._store = config, reload, grab, store
        self.jobs: dict[str, TeachJob] = {}
        self._lock = threading.Lock()
        self._current: tuple[TeachJob, threading.Event] | None = None
        self._proc: subprocess.Popen | None = None

    # -- requests -----------------------------------------------------------------------------
    def check(self, req: TeachRequest) -> None:
        """EdgeadError for a request that cannot run (before any job starts)."""
        c = self.config
        given = [req.frames is not None, req.folder is not None, bool(req.result_ids)]
        if sum(given) != 1:
            raise EdgeadError("name exactly one of frames (from the source), folder, result_ids")
        if req.mode not in ("new", "add"):
            raise EdgeadError(f"mode {req.mode!r}: expected new or add")
        if req.frames is not None:
            if self._grab is None:
                raise EdgeadError("frames: the daemon has no frame source (source.spec)")
            if not 1 <= req.frames <= c.max_frames:
                raise EdgeadError(f"frames {req.frames}: expected 1 .. {c.max_frames} (teach.max_frames)")
            if not 0 < req.rate_hz <= c.max_rate_hz:
                raise EdgeadError(f"rate_hz {req.rate_hz}: expected > 0 and <= {c.max_rate_hz} (teach.max_rate_hz)")
        if req.folder is not None:
            folder = Path(req.folder).resolve()
            roots = [Path(r).resolve() for r in c.allowed_folders]
            if not any(folder == r or r in folder.parents for r in roots):
                raise EdgeadError(f"{req.folder}: not within teach.allowed_folders")
        if len(req.result_ids) > c.max_frames:
            raise EdgeadError(f"{len(req.result_ids)} results: at most {c.max_frames} (teach.max_frames)")

    def start(self, req: TeachRequest) -> TeachJob:
        self.check(req)
        with self._lock:
            if self._current is not None:
                raise TeachBusy(f"teach job {self._current[0].id} is running")
            job = TeachJob(id=uuid.uuid4().hex[:12], request=asdict(req))
            stop = threading.Event()
            self._current = (job, stop)
            self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job, req, stop), name=f"teach-{job.id}", daemon=True).start()
        return job

    def cancel(self, job_id: str) -> TeachJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        with self._lock:
            if self._current is not None and self._current[0] is job:
                self._current[1].set()
                if self._proc is not None and self._proc.poll() is None:
                    self._proc.send_signal(signal.SIGTERM)
        return job

    def running(self) -> bool:
        return self._current is not None

    def close(self) -> None:
        if self._current is not None:
            self.cancel(self._current[0].id)

    # -- the job ------------------------------------------------------------------------------
    def _run(self, job: TeachJob, req: TeachRequest, stop: threading.Event) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=".teach-frames-", dir=self.model_path.parent))
        try:
            paths, added = self._frames(job, req, tmp, stop)
            job.frames, job.state = len(paths), "fitting"
            folder = tmp / "good"
            folder.mkdir(exist_ok=True)
            for i, p in enumerate(paths):   # one folder of the frames, in order, whatever their origin
                target = folder / f"{i:05d}{p.suffix.lower()}"
                if p.parent != folder:
                    versions.link_file(p, target)
            out = self._fit(job, req, folder, added, stop)
            job.state = "installing"
            with versions.locked(self.model_path):
                versions.install(self.model_path, out["version"])
            self._reload()
            job.version, job.parent = out["version"], out["parent"]
            job.bank_size, job.threshold, job.state = out["bank_size"], out["threshold"], "done"
            log.info("teach %s: serving %s (from %s, %d frames)", job.id, job.version, job.parent, job.frames)
        except Exception as exc:   # the job reports why; the served model is untouched
            job.state = "cancelled" if stop.is_set() else "failed"
            job.error = str(exc) if isinstance(exc, EdgeadError) else f"{type(exc).__name__}: {exc}"
            log.warning("teach %s %s: %s", job.id, job.state, job.error)
        finally:
            job.finished = time.time()
            shutil.rmtree(tmp, ignore_errors=True)
            with self._lock:
                self._current, self._proc = None, None

    def _frames(self, job: TeachJob, req: TeachRequest, tmp: Path, stop: threading.Event) -> tuple[list[Path], str]:
        if req.folder is not None:
            return frames.folder_frames(req.folder), f"folder {req.folder}"
        if req.result_ids:
            ids = ", ".join(map(str, req.result_ids))
            return frames.result_frames(self._store, req.result_ids), f"results {ids} marked good"
        job.state = "capturing"
        grab = self._grab
        return (frames.capture_frames(lambda: grab().image, req.frames, req.rate_hz, tmp / "good", stop),
                f"{req.frames} frames from the source at {req.rate_hz:g}/s")

    def _fit(self, job: TeachJob, req: TeachRequest, folder: Path, added: str, stop: threading.Event) -> dict:
        c = self.config
        cmd = [sys.executable, "-m", "edgead.cli", "teach", "--model", str(self.model_path), "--folder", str(folder),
               "--mode", req.mode, "--threads", str(c.threads), "--memory-mb", str(c.memory_budget_mb),
               "--keep", str(c.keep_versions), "--no-install", "--request", f"api:{job.id}", "--added", added,
               "--nice", str(c.nice), "--json"]
        if req.result_ids:
            cmd += ["--result-ids", ",".join(map(str, req.result_ids))]
        env = {**os.environ, **{v: str(c.threads) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}}
        with self._lock:
            if stop.is_set():
                raise EdgeadError("teach stopped: the served model is unchanged")
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        out, err = self._proc.communicate()
        if stop.is_set():
            raise EdgeadError("teach stopped: the served model is unchanged")
        if self._proc.returncode != 0:
            lines = [ln for ln in err.strip().splitlines() if ln.strip()]
            raise EdgeadError(lines[-1] if lines else f"teach process exited with {self._proc.returncode}")
        return json.loads(out.strip().splitlines()[-1])
