"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from edgead import __version__
from edgead.capture.base import FrameSource
from edgead.outputs import sd_notify
from edgead.outputs.metrics import ServiceMetrics
from edgead.service.api import router
from edgead.service.teach_api import router as teach_router
from edgead.service.web import router as web_router
from edgead.service.config import EdgeadConfig
from edgead.service.http import UploadGuard, install_error_handlers
from edgead.service.model_holder import ModelLoader
from edgead.service import openapi_doc
from edgead.service.runtime import _UNSET, Runtime

log = logging.getLogger(__name__)


async def _watchdog(runtime: Runtime, interval: float) -> None:
    """Ping systemd's watchdog from the event loop (so a blocked loop stops the pings) while
    the inference worker is alive and not stuck in one job for a whole interval."""
    while True:
        if runtime.watchdog_ok(stall_limit=interval):
            sd_notify.notify("WATCHDOG=1")
        else:
            log.error("watchdog: inference worker dead or stuck for %.0f s; not pinging systemd",
                      runtime.worker.busy_for())
        await asyncio.sleep(interval / 3)


def create_app(config: EdgeadConfig, *, model: Any = None, model_loader: ModelLoader | None = None,
               source: FrameSource | None | object = _UNSET, pin_factory: Any = None,
               registry: CollectorRegistry | None = None) -> FastAPI:
    """Build the daemon's app. ``model``: an already-loaded model (else ``model_loader`` or
    ``edgead.model.load_model`` loads ``config.model.path``); ``model_loader`` also serves
    reloads. ``source``: a FrameSource (or None) instead of ``config.source.spec``.
    ``pin_factory``: a gpiozero factory (tests: MockFactory) instead of ``gpio.pin_factory``.
    Components start and stop with the app's lifespan."""
    runtime = Runtime(config, model=model, model_loader=model_loader, source=source, pin_factory=pin_factory,
                      metrics=ServiceMetrics(registry))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(runtime.start)  # opening a camera may take a second
        interval = sd_notify.watchdog_interval()
        task = asyncio.create_task(_watchdog(runtime, interval)) if interval else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            if getattr(app.state, "teach_jobs", None) is not None:
                app.state.teach_jobs.close()   # a running fit stops; the served model stays
            await run_in_threadpool(runtime.stop)

    # /docs and /redoc from files shipped in a package: a Pi on an isolated plant network has no CDN
    app = FastAPIOffline(title="edgead", version=__version__, lifespan=lifespan,
                         swagger_ui_parameters={"persistAuthorization": True, "validatorUrl": None},
                         description="Visual anomaly detection at the edge: score frames, drive the reject "
                                     "output, browse the inspection log.")
    app.state.runtime = runtime
    server = config.server
    app.add_middleware(UploadGuard, max_bytes=server.max_body_bytes, timeout_s=server.body_timeout_s,
                       max_concurrent=server.max_concurrent_uploads)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(teach_router)
    app.include_router(web_router)
    openapi_doc.install(app)
    return app
