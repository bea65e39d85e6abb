"""Connection hygiene on a shared plant network: a flood of connections, or clients that never
finish their request headers, must neither hold file descriptors for ever nor run the process
out of them, and ``/health/live`` must still answer.

- **Accept in small batches.** asyncio accepts up to ``backlog`` connections in one go before
  any of them is served; a burst larger than the free descriptors fails ``accept()`` with EMFILE,
  after which asyncio stops accepting for a second and logs a traceback for every failed call.
  :func:`listen_backlog` keeps the backlog small enough that the connections the daemon keeps
  plus a few batches in flight fit under the process's descriptor limit; a small kernel queue
  also means a health probe never waits behind a long queue of hostile connections.
- **Shed before parsing.** uvicorn's own ``limit_concurrency`` parses each request, runs an ASGI
  app and logs a warning per refused connection. Here a connection accepted beyond
  ``server.max_connections`` gets a fixed 503 with ``Retry-After`` as soon as its first bytes
  arrive (or after a second of silence) and is closed, unparsed and unlogged. A liveness probe
  (``GET /health/live``) is still served on it, so a flood cannot make the daemon look dead.
- **Bound the headers.** uvicorn cancels its keep-alive timer on any byte received and nothing
  bounds the time to the end of the headers, so a slow client (a scanner with a broken stack, a
  port scan, a slow-loris) keeps its socket. A connection whose next request's headers have not
  arrived within ``header_timeout_s`` is closed; the body is bounded by
  :class:`edgead.service.http.UploadGuard`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

FD_RESERVE = 64  # descriptors beyond connections: model, log database, images, camera, pipes
BATCHES_IN_FLIGHT = 4  # accepted, connection made, answered, closed: batches alive at once
MIN_BACKLOG = 8
SHED_AFTER_S = 1.0  # an over-limit connection that sends nothing is answered and closed by then
LIVENESS = (b"GET /health/live ", b"GET /health/live?")


def listen_backlog(backlog: int, max_connections: int, nofile: int | None = None) -> int:
    """``backlog`` (server.backlog), shrunk where ``max_connections`` open connections plus
    :data:`BATCHES_IN_FLIGHT` accept batches would not fit under the soft descriptor limit
    ``nofile`` (RLIMIT_NOFILE by default)."""
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile == resource.RLIM_INFINITY:
        return backlog
    room = (nofile - max_connections - FD_RESERVE) // BATCHES_IN_FLIGHT
    if room < backlog:
        log.warning("server.backlog %d lowered to %d: %d connections (server.max_connections) and the accept "
                    "queue must fit the limit of %d open files (LimitNOFILE)", backlog, max(MIN_BACKLOG, room),
                    max_connections, nofile)
    return max(MIN_BACKLOG, min(backlog, room))


def shed_response(max_connections: int) -> bytes:
    """The fixed answer to a connection over the limit: the API's error body, 503, Retry-After."""
    body = json.dumps({"error": "busy", "detail": f"more than {max_connections} connections open "
                                                  "(server.max_connections); retry later"}).encode()
    head = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"retry-after: 1\r\nconnection: close\r\n\r\n" % len(body))
    return head + body


def guarded_h11(header_timeout_s: float, max_connections: int | None = None) -> type[H11Protocol]:
    """An h11 protocol class that sheds connections beyond ``max_connections`` before parsing
    them and closes connections which do not deliver request headers in time."""
    shed_bytes = shed_response(max_connections or 0)

    class GuardedH11Protocol(H11Protocol):
        _header_deadline: asyncio.TimerHandle | None = None
        _over_limit = False  # accepted beyond max_connections: answered at once, never kept
        _probe = False  # ... unless it is a liveness probe, which is served and then closed

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if max_connections is not None and len(self.connections) > max_connections:
                self._over_limit = True
                self._header_deadline = self.loop.call_later(min(SHED_AFTER_S, header_timeout_s), self._shed)
            else:
                self._arm_header_deadline()

        def data_received(self, data: bytes) -> None:
            if self._over_limit and not self._probe:
                if not data.startswith(LIVENESS):
                    self._shed()
                    return
                self._probe = True
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_deadline()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:  # a request's headers arrived: the body has its own bound
                self._disarm_header_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._over_limit:
                self.transport.close()
            elif not self.transport.is_closing():
                self._arm_header_deadline()  # the next request's headers, on a kept-alive connection

        def _shed(self) -> None:
            self._disarm_header_deadline()
            if not self.transport.is_closing():
                self.transport.write(shed_bytes)
                self.transport.close()

        def _arm_header_deadline(self) -> None:
            self._disarm_header_deadline()
            self._header_deadline = self.loop.call_later(header_timeout_s, self._headers_overdue)

        def _disarm_header_deadline(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_overdue(self) -> None:
            self._header_deadline = None
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                log.debug("closing %s: no complete request headers within %.0f s", self.client, header_timeout_s)
                self.transport.close()

    return GuardedH11Protocol


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, every_s: float = 10.0) -> None:
    """Turn asyncio's traceback per failed ``accept()`` (out of descriptors: it retries the
    whole batch, logging each) into one warning line per ``every_s``; other loop errors are
    handled as before."""
    previous = loop.get_exception_handler()
    last = [-float("inf")]

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            now = time.monotonic()
            if now - last[0] >= every_s:
                last[0] = now
                log.warning("cannot accept connections: %s; new connections wait in the queue (check "
                            "server.max_connections against LimitNOFILE)", context.get("exception"))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
