"""HTTP plumbing: JSON errors for every failure, bounds on request bodies (size, time, how many
at once), bearer tokens."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               406: "not_acceptable", 408: "request_timeout", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
               422: "unprocessable", 429: "too_many_requests", 503: "unavailable"}


class ApiError(Exception):
    """An error response: ``{"error": code, "detail": message}`` with ``status``."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


class BodyTimeout(ApiError):
    def __init__(self, limit: float):
        super().__init__(408, "request_timeout", f"request body not received within {limit:g} s "
                                                 "(server.body_timeout_s)", {"Connection": "close"})


class BodyTooLarge(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, "payload_too_large",
                         f"request body over the limit of {limit} bytes (server.max_body_bytes)")


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}"), detail,
                              headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        return error_response(400, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # a client that hangs up mid-upload is the network's business, not an error of ours
        log.debug("client %s went away during %s %s", request.client, request.method, request.url.path)
        return error_response(400, "bad_request", "client disconnected")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # the details stay in the journal: an exception's text is no answer for a stranger on the network
        return error_response(500, "internal_error", "internal error; the daemon's log has the details")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes on this path: Starlette's 405 names only the first route's
    (GET /score and POST /score are two routes)."""
    methods: set[str] = set()
    routes = list(request.app.router.routes)
    while routes:
        route = routes.pop()
        included = getattr(route, "original_router", None)  # FastAPI wraps an included router (no prefix here)
        if included is not None:
            routes.extend(included.routes)
        elif getattr(route, "methods", None) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return sorted(methods)


class UploadGuard:
    """Bounds every request body: over ``max_bytes`` -> 413 (at once from Content-Length, or
    while a chunked body streams in); not complete within ``timeout_s`` -> 408; more than
    ``max_concurrent`` bodies arriving at once -> 503 without reading, so slow uploads cannot
    tie up every connection the daemon has."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 10.0, max_concurrent: int = 8):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_concurrent = max_concurrent
        self.receiving = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length")
        length = 0
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                await error_response(400, "bad_request", "invalid Content-Length header")(scope, receive, send)
                return
            if length > self.max_bytes:
                await _drain_some(receive, self.max_bytes)
                await error_response(413, "payload_too_large", BodyTooLarge(self.max_bytes).detail,
                                     {"Connection": "close"})(scope, receive, send)
                return
        has_body = length > 0 or b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if not has_body:
            await self.app(scope, receive, send)
            return
        if self.receiving >= self.max_concurrent:
            await error_response(503, "busy", f"{self.receiving} uploads already arriving "
                                              "(server.max_concurrent_uploads); retry later",
                                 {"Retry-After": "1", "Connection": "close"})(scope, receive, send)
            return
        self.receiving += 1
        receiving = True
        deadline = time.monotonic() + self.timeout_s
        seen = 0

        async def guarded() -> Message:
            nonlocal seen, receiving
            if not receiving:  # the body is in: later receives wait for the disconnect, unbounded
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BodyTimeout(self.timeout_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                if not message.get("more_body", False):
                    self._done()
                    receiving = False
            else:
                self._done()
                receiving = False
            return message

        try:
            await self.app(scope, guarded, send)
        finally:
            if receiving:
                self._done()

    def _done(self) -> None:
        self.receiving -= 1


async def _drain_some(receive: Receive, budget: int) -> None:
    """Read (and drop) up to ``budget`` bytes of the refused body, so the client that is still
    sending usually sees the 413 instead of a connection reset."""
    seen = 0
    while seen <= budget:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def bearer_ok(credentials: HTTPAuthorizationCredentials | None, token: str | None) -> bool:
    """True when no token is configured, or the request carries ``Authorization: Bearer <token>``."""
    if token is None:
        return True
    if credentials is None or credentials.scheme.lower() != "bearer":
        return False
    return secrets.compare_digest(credentials.credentials.strip().encode(), token.encode())


def check_bearer(credentials: HTTPAuthorizationCredentials | None, token: str | None) -> None:
    """ApiError 401 unless :func:`bearer_ok`."""
    if not bearer_ok(credentials, token):
        raise ApiError(401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)",
                       {"WWW-Authenticate": "Bearer"})


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()
