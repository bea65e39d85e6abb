"""The HTTP API. Every failure is a JSON ``{"error", "detail"}`` with a 4xx status for client
mistakes (400 bad image, 413 too large, 415 media type, 401 token, 409/422 conflicts) and 503 +
Retry-After when the service is busy or the camera is down."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Security
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import UploadFile

from edgead.capture.base import CaptureError, SourceUnavailable
from edgead.errors import ArtifactError, ConfigError, EdgeadError, ImageError
from edgead.service.frame_limits import FrameTooLarge
from edgead.service.heatmaps import RendererBusy
from edgead.service.http import ApiError, bearer_ok, check_bearer, content_type
from edgead.service.model_holder import ReloadInProgress
from edgead.service.pipeline import NoSource, Outcome
from edgead.service.runtime import Runtime
from edgead.service.schemas import (
    ErrorOut,
    ReloadIn,
    ResultOut,
    ResultsOut,
    ThresholdIn,
    ThresholdOut,
)
from edgead.service.worker import Job, QueueFull, WorkerStopped
from edgead.teach import versions

router = APIRouter()

IMAGE_TYPES = ("image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/bmp", "image/x-ms-bmp", "image/tiff",
               "image/webp", "image/x-portable-graymap", "image/x-portable-pixmap")
MEDIA = {"jpg": "image/jpeg", "png": "image/png"}
_E = {"model": ErrorOut}
SCORE_ERRORS: dict[int | str, dict[str, Any]] = {400: _E, 401: _E, 409: _E, 413: _E, 415: _E, 422: _E, 503: _E, 504: _E}
UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    **{t: {"schema": {"type": "string", "format": "binary"}} for t in ("image/jpeg", "image/png")},
    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}},
                                       "required": ["file"]}},
}}}


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


# the largest id SQLite stores; larger ones cannot exist (and would overflow its integer)
MAX_ID = 2**63 - 1
bearer = HTTPBearer(auto_error=False, scheme_name="token",
                    description="the daemon's token (server.token or server.token_file), when one is configured")


def require_token(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
    """Endpoints that change the daemon: the bearer token when one is configured."""
    check_bearer(credentials, get_runtime(request).token)


def score_access(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> bool:
    """/score: True when the caller may move the line and be logged. With a token configured a
    caller without it gets 401, or with ``server.protect_score = false`` an answer only (False)."""
    rt = get_runtime(request)
    if bearer_ok(credentials, rt.token):
        return True
    if rt.config.server.protect_score:
        check_bearer(credentials, rt.token)  # raises 401
    return False


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _links(request: Request, rid: int | None, image: bool, heatmap: bool) -> dict[str, str | None]:
    return {
        "image_url": str(request.url_for("result_image", result_id=rid)) if rid is not None and image else None,
        "heatmap_url": str(request.url_for("result_heatmap", result_id=rid)) if rid is not None and heatmap else None,
    }


def outcome_json(request: Request, o: Outcome) -> dict[str, Any]:
    r = o.result
    return {
        "id": o.id, "timestamp": iso(o.timestamp), "origin": o.origin, "source": o.source,
        "score": float(r.score), "normalized_score": float(r.normalized_score), "threshold": float(r.threshold),
        "is_anomaly": bool(r.is_anomaly), "decision": r.decision, "latency_ms": o.latency_ms, "model": o.model,
        **_links(request, o.id, o.image_stored, o.heatmap_stored),
    }


def row_json(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "timestamp": iso(row["ts"]), "origin": row["origin"], "source": row["source"],
        "score": row["score"], "normalized_score": row["normalized_score"], "threshold": row["threshold"],
        "is_anomaly": row["is_anomaly"], "decision": row["decision"], "latency_ms": row["latency_ms"],
        "model": {"name": row["model_name"], "version": row["model_version"], "sha256": row["model_sha256"]},
        **_links(request, row["id"], bool(row["image_path"]), bool(row["heatmap_path"])),
    }


async def run_job(request: Request, job: Job) -> dict[str, Any]:
    """Queue a job on the inference worker, await it, map failures to HTTP errors."""
    rt = get_runtime(request)
    try:
        future = rt.submit(job)
    except QueueFull as exc:
        rt.metrics.rejected_requests.inc()
        raise ApiError(503, "busy", f"{exc}; retry later", {"Retry-After": str(exc.retry_after)}) from None
    except WorkerStopped as exc:
        raise ApiError(503, "shutting_down", str(exc), {"Retry-After": "5"}) from None
    try:
        outcome = await asyncio.wait_for(asyncio.wrap_future(future), rt.config.server.request_timeout_s)
    except TimeoutError:
        raise ApiError(504, "timeout", f"no result within {rt.config.server.request_timeout_s} s "
                                       "(server.request_timeout_s)") from None
    except FrameTooLarge as exc:
        raise ApiError(413, "image_too_large", str(exc)) from None
    except ImageError as exc:
        raise ApiError(400, "bad_image", str(exc)) from None
    except NoSource as exc:
        raise ApiError(409, "no_source", str(exc)) from None
    except SourceUnavailable as exc:
        retry = str(max(1, math.ceil(exc.retry_after)))
        raise ApiError(503, "source_unavailable", str(exc), {"Retry-After": retry}) from None
    except CaptureError as exc:
        raise ApiError(503, "source_unavailable", str(exc), {"Retry-After": "1"}) from None
    except WorkerStopped as exc:
        raise ApiError(503, "shutting_down", str(exc), {"Retry-After": "5"}) from None
    except EdgeadError as exc:
        if job.data is not None:  # the uploaded image cannot be scored by this model (e.g. ROI outside it)
            raise ApiError(422, "image_not_scorable", str(exc)) from None
        raise
    return outcome_json(request, outcome)


# -- scoring -----------------------------------------------------------------------------------
@router.get("/score", response_model=ResultOut, responses=SCORE_ERRORS, tags=["score"])
async def score_capture(request: Request, heatmap: bool = Query(False, description="store and link the heatmap"),
                        trusted: bool = Depends(score_access)):
    """Capture a frame from the configured source now and score it."""
    return await run_job(request, Job(origin="capture", heatmap=heatmap and trusted, actuate=trusted,
                                      record=trusted))


@router.post("/score", response_model=ResultOut, responses=SCORE_ERRORS, tags=["score"], openapi_extra=UPLOAD_BODY)
async def score_upload(request: Request, heatmap: bool = Query(False, description="store and link the heatmap"),
                       name: str | None = Query(None, max_length=200, description="label for the inspection log"),
                       trusted: bool = Depends(score_access)):
    """Score the image in the body: ``image/jpeg`` or ``image/png`` (also BMP, TIFF, WebP), or
    multipart/form-data with a ``file`` part."""
    rt = get_runtime(request)
    media = content_type(request)
    if media == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=16, max_part_size=rt.config.server.max_body_bytes)
        try:
            upload = form.get("file") or form.get("image")
            if not isinstance(upload, UploadFile):
                upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
            if upload is None:
                raise ApiError(400, "bad_request", "multipart body without a file part (curl -F file=@part.png)")
            data = await upload.read()
            name = name or upload.filename or "upload"
        finally:
            await form.close()
    elif media in IMAGE_TYPES:
        data = await request.body()
    else:
        got = media or "no Content-Type"
        raise ApiError(415, "unsupported_media_type",
                       f"{got}: send image/jpeg or image/png (curl -H 'Content-Type: image/png' "
                       "--data-binary @part.png) or multipart/form-data (curl -F file=@part.png)")
    if not data:
        raise ApiError(400, "bad_image", "empty image body")
    actuate = trusted and rt.config.gpio.reject_on_upload
    return await run_job(request, Job(origin="upload", data=data, name=name or "upload", heatmap=heatmap and trusted,
                                      actuate=actuate, record=trusted))


# -- service state -----------------------------------------------------------------------------
@router.get("/health", tags=["service"], responses={503: {"description": "alive but not ready"}})
def health(request: Request) -> JSONResponse:
    """Liveness and readiness: model loaded, worker alive, source open, age of the last frame.
    200 when ready, 503 (same body) when not."""
    body = get_runtime(request).health()
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/health/live", tags=["service"])
def live(request: Request) -> JSONResponse:
    alive = get_runtime(request).worker.alive
    return JSONResponse({"live": alive}, status_code=200 if alive else 503)


@router.get("/metrics", tags=["service"], response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    content, media_type = get_runtime(request).metrics.render()
    return Response(content, media_type=media_type)


# -- model -------------------------------------------------------------------------------------
@router.get("/model", tags=["model"])
def model_info(request: Request) -> dict[str, Any]:
    rt = get_runtime(request)
    kept = [v.to_dict() for v in versions.list_versions(rt.holder.model.path)] if rt.config.teach.enabled else None
    return {**rt.holder.describe(), "versions": kept}


@router.post("/model/reload", tags=["model"], dependencies=[Depends(require_token)],
             responses={401: _E, 409: _E, 422: {"model": ErrorOut, "description": "bad artifact; old model serves on"}})
def reload_model(request: Request, body: ReloadIn | None = Body(None)) -> dict[str, Any]:
    """Load an artifact (default: the current path again) beside the serving model and swap it
    in atomically. A bad artifact -> 422 with the reason; the old model keeps serving."""
    rt = get_runtime(request)
    previous = rt.holder.identity()
    try:
        rt.holder.reload(body.path if body else None)
    except ReloadInProgress as exc:
        raise ApiError(409, "reload_in_progress", str(exc)) from None
    except (ArtifactError, ConfigError) as exc:
        rt.metrics.reloads.labels("error").inc()
        serving = f"{previous['name']} {previous['sha256'][:12]}"
        raise ApiError(422, "bad_artifact", f"{exc} (still serving {serving})") from None
    rt.metrics.reloads.labels("ok").inc()
    return {"reloaded": True, "previous": previous, "model": rt.holder.describe()}


@router.put("/threshold", response_model=ThresholdOut, tags=["model"], dependencies=[Depends(require_token)],
            responses={400: _E, 401: _E})
def put_threshold(request: Request, body: ThresholdIn) -> dict[str, Any]:
    """Set the decision threshold (raw score) of the serving model; null resets to the artifact's."""
    rt = get_runtime(request)
    try:
        previous, new = rt.holder.set_threshold(body.threshold, persist=body.persist)
    except ConfigError as exc:
        raise ApiError(400, "invalid_threshold", str(exc)) from None
    return {"threshold": new, "previous": previous, "source": rt.holder.threshold_source,
            "model_sha256": rt.holder.model.sha256}


# -- inspection log ----------------------------------------------------------------------------
@router.get("/results", response_model=ResultsOut, tags=["results"])
def list_results(request: Request, limit: int = Query(50, ge=1, le=1000),
                 decision: Literal["ok", "reject"] | None = Query(None),
                 before_id: int | None = Query(None, ge=1, le=MAX_ID, description="page: results older than this id")):
    """Newest first."""
    rows = get_runtime(request).store.list(limit=limit, decision=decision, before_id=before_id)
    items = [row_json(request, r) for r in rows]
    return {"results": items, "count": len(items), "next_before_id": items[-1]["id"] if len(items) == limit else None}


ResultId = Path(ge=1, le=MAX_ID, description="inspection-log id")


def _row(request: Request, result_id: int) -> dict[str, Any]:
    row = get_runtime(request).store.get(result_id)
    if row is None:
        raise ApiError(404, "not_found", f"no result {result_id}")
    return row


@router.get("/results/{result_id}", response_model=ResultOut, tags=["results"], responses={404: _E})
def get_result(request: Request, result_id: int = ResultId):
    return row_json(request, _row(request, result_id))


@router.get("/results/{result_id}/image", tags=["results"], response_class=FileResponse, responses={404: _E})
def result_image(request: Request, result_id: int = ResultId):
    """The stored frame (rejects, sampled good frames, ``?heatmap=true`` requests)."""
    row = _row(request, result_id)
    path = get_runtime(request).store.file(row["image_path"])
    if path is None:
        raise ApiError(404, "not_stored", f"result {result_id} has no stored image (only rejects, sampled good "
                                          "frames and ?heatmap=true requests keep one, within retention)")
    return FileResponse(path, media_type=MEDIA.get(path.suffix.lstrip("."), "application/octet-stream"))


@router.get("/results/{result_id}/heatmap.png", tags=["results"],
            responses={404: _E, 503: _E, 200: {"content": {"image/png": {}}}})
def result_heatmap(request: Request, result_id: int = ResultId,
                   overlay_image: bool = Query(True, alias="overlay", description="draw over the frame")) -> Response:
    """The anomaly map (blue = 0, middle = threshold, red >= 2 x threshold) over the frame."""
    row = _row(request, result_id)
    try:
        png = get_runtime(request).heatmaps.render(row["heatmap_path"], row["image_path"], overlay_image)
    except RendererBusy as exc:
        raise ApiError(503, "busy", f"{exc}; retry later", {"Retry-After": "1"}) from None
    if png is None:
        raise ApiError(404, "not_stored", f"result {result_id} has no stored heatmap")
    return Response(png, media_type="image/png")
