"""HTTP endpoints of teaching on the line (``teach.enabled``): teach a new version, mark a
rejected part good, list versions, roll back. Every change needs the token; the fit runs in a
low-priority child process (edgead.teach.jobs) and the result is hot-swapped on success."""

from __future__ import annotations

import threading
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from edgead.errors import ArtifactError, EdgeadError
from edgead.service.api import _E, MAX_ID, get_runtime, require_token
from edgead.service.http import ApiError
from edgead.service.model_holder import ReloadInProgress
from edgead.teach import versions
from edgead.teach.jobs import TeachBusy, TeachJobs, TeachRequest

router = APIRouter(tags=["teach"])
_init_lock = threading.Lock()


class TeachIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["new", "add"] = Field("new", description="new: refit from the frames; add: join them to the bank")
    frames: int | None = Field(None, ge=1, description="capture this many good frames from the daemon's source")
    rate_hz: float = Field(2.0, gt=0, description="capture rate for frames")
    folder: str | None = Field(None, description="or a folder of good images (within teach.allowed_folders)")
    result_ids: list[int] = Field(default_factory=list, description="or the stored frames of these results")


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(None, description="the version to serve (default: the served one's parent)")


def jobs(request: Request) -> TeachJobs:
    """The daemon's teach jobs (made on first use); 403 while ``teach.enabled`` is false."""
    rt = get_runtime(request)
    if not rt.config.teach.enabled:
        raise ApiError(403, "teach_disabled", "teaching on the line is off (set teach.enabled = true)")
    with _init_lock:
        mgr = getattr(request.app.state, "teach_jobs", None)
        if mgr is None:
            sup = rt.supervisor
            mgr = TeachJobs(rt.holder.model.path, rt.config.teach, lambda: rt.holder.reload(None),
                            sup.capture if sup is not None else None, rt.store)
            request.app.state.teach_jobs = mgr
    return mgr


def _start(request: Request, req: TeachRequest) -> JSONResponse:
    mgr = jobs(request)
    try:
        job = mgr.start(req)
    except TeachBusy as exc:
        raise ApiError(409, "teach_running", str(exc)) from None
    except EdgeadError as exc:
        raise ApiError(400, "bad_teach_request", str(exc)) from None
    return JSONResponse(job.to_dict(), status_code=202, headers={"Location": f"/model/teach/{job.id}"})


@router.post("/model/teach", status_code=202, dependencies=[Depends(require_token)],
             responses={400: _E, 401: _E, 403: _E, 409: _E})
def post_teach(request: Request, body: TeachIn) -> JSONResponse:
    """Start a teach job (202 with its id): frames, folder or result_ids; poll GET /model/teach/{id}."""
    return _start(request, TeachRequest(**body.model_dump()))


@router.get("/model/teach/{job_id}", responses={403: _E, 404: _E})
def get_teach(request: Request, job_id: str) -> dict[str, Any]:
    job = jobs(request).jobs.get(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no teach job {job_id}")
    return job.to_dict()


@router.delete("/model/teach/{job_id}", dependencies=[Depends(require_token)], responses={401: _E, 403: _E, 404: _E})
def cancel_teach(request: Request, job_id: str) -> dict[str, Any]:
    """Stop a running teach; the served model stays as it is."""
    try:
        return jobs(request).cancel(job_id).to_dict()
    except KeyError:
        raise ApiError(404, "not_found", f"no teach job {job_id}") from None


@router.post("/results/{result_id}/good", status_code=202, dependencies=[Depends(require_token)],
             responses={400: _E, 401: _E, 403: _E, 404: _E, 409: _E})
def mark_good(request: Request, result_id: int = Path(ge=1, le=MAX_ID)) -> JSONResponse:
    """A false reject: its stored frame joins the memory bank (a teach job in mode add)."""
    if get_runtime(request).store.get(result_id) is None:
        raise ApiError(404, "not_found", f"no result {result_id}")
    return _start(request, TeachRequest(mode="add", result_ids=[result_id]))


@router.get("/model/versions", responses={403: _E})
def get_versions(request: Request) -> list[dict[str, Any]]:
    jobs(request)  # 403 while teaching is off
    return [v.to_dict() for v in versions.list_versions(get_runtime(request).holder.model.path)]


@router.post("/model/rollback", dependencies=[Depends(require_token)], responses={401: _E, 403: _E, 404: _E, 409: _E})
def post_rollback(request: Request, body: RollbackIn | None = Body(None)) -> dict[str, Any]:
    """Serve a kept version again (default: the served one's parent), atomically, and hot-swap it."""
    mgr, rt = jobs(request), get_runtime(request)
    if mgr.running():
        raise ApiError(409, "teach_running", "a teach job is running: wait for it or DELETE it first")
    try:
        done = versions.rollback(mgr.model_path, body.version if body else None, wait=False)
        rt.holder.reload(None)
    except versions.StoreBusy as exc:
        raise ApiError(409, "teach_running", str(exc)) from None
    except versions.VersionError as exc:
        raise ApiError(404, "unknown_version", str(exc)) from None
    except ReloadInProgress as exc:
        raise ApiError(409, "reload_in_progress", str(exc)) from None
    except ArtifactError as exc:
        raise ApiError(422, "bad_artifact", str(exc)) from None
    return {"version": done, "model": rt.holder.describe()}
