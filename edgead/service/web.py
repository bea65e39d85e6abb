"""The operators' page, served by the daemon itself: static files shipped in the package (no
CDN, no build step), a server-sent-event stream of scored parts, the latest frame for the live
view and small thumbnails for the results list. Everything that changes the daemon goes
through the API's own token-protected endpoints (PUT /threshold, POST /model/reload)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cv2
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from edgead import __version__
from edgead.outputs.heatmap import encode
from edgead.service.api import ResultId, _E, _row, get_runtime
from edgead.service.http import ApiError
from edgead.service.live import TooManyViewers

STATIC = Path(__file__).with_name("web_static")
THUMB_SIDE = 160
STATE_EVERY_S = 2.0  # the station's state (ready, camera, queue) in the stream, even when no part comes

router = APIRouter()


@router.get("/", include_in_schema=False)
def index(request: Request) -> Any:
    """The page for a browser; a small JSON pointer for API clients."""
    if "text/html" in request.headers.get("accept", ""):
        return FileResponse(STATIC / "index.html", media_type="text/html")
    return {"service": "edgead", "version": __version__, "docs": "/docs", "ui": "/",
            "endpoints": ["/score", "/health", "/metrics", "/model", "/results", "/live/events"]}


@router.get("/ui/{name}", include_in_schema=False)
def static_file(name: str) -> FileResponse:
    path = (STATIC / name).resolve()
    if path.parent != STATIC.resolve() or not path.is_file():
        raise ApiError(404, "not_found", f"no file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "max-age=300"})


def state_summary(request: Request) -> dict[str, Any]:
    rt = get_runtime(request)
    snap = rt.snapshot()
    source = snap["source"]
    return {"ready": snap["ready"], "state": rt.state, "queue": snap["queue_depth"],
            "queue_capacity": snap["queue_capacity"], "camera": source["state"] if source else "none",
            "model": snap["model"], "threshold": snap["threshold"], "viewers": rt.live.viewers}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@router.get("/live/events", tags=["live"], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}, 503: {"description": "every live slot is taken"}})
async def live_events(request: Request) -> StreamingResponse:
    """Server-sent events: ``part`` for each scored part (id, decision, score, normalised score,
    latency), ``state`` every few seconds (ready, camera, queue, model, threshold)."""
    feed = get_runtime(request).live
    try:
        queue = feed.subscribe()
    except TooManyViewers as exc:
        raise ApiError(503, "busy", str(exc), {"Retry-After": "10"}) from None

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield _event("state", state_summary(request))
            latest = feed.latest_summary()
            if latest is not None:
                yield _event("part", latest)
            while not await request.is_disconnected():
                try:
                    part = await asyncio.wait_for(queue.get(), STATE_EVERY_S)
                except TimeoutError:
                    yield _event("state", state_summary(request))
                    continue
                yield _event("part", part)
        finally:
            feed.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/live/frame.jpg", tags=["live"], responses={200: {"content": {"image/jpeg": {}}}, 404: _E})
def live_frame(request: Request, heatmap: bool = True) -> Response:
    """The latest scored frame, downscaled for a browser, with its heatmap over it."""
    data = get_runtime(request).live.frame_jpeg(with_map=heatmap)
    if data is None:
        raise ApiError(404, "no_frame", "no part scored yet")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/results/{result_id}/thumb.jpg", tags=["results"],
            responses={200: {"content": {"image/jpeg": {}}}, 404: _E})
def result_thumb(request: Request, result_id: int = ResultId) -> Response:
    """A small JPEG of the stored frame, for lists."""
    row = _row(request, result_id)
    path = get_runtime(request).store.file(row["image_path"])
    if path is None:
        raise ApiError(404, "not_stored", f"result {result_id} has no stored image")
    # decode at a quarter of the size where the format allows: a 12 MP reject never lands in RAM
    image = cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_4)
    if image is None:
        raise ApiError(404, "not_stored", f"result {result_id}: the stored image cannot be read")
    scale = THUMB_SIDE / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
    return Response(encode(image, "jpg", 80), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})
