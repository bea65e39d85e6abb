"""Connection hygiene on a shared plant network: a client that never finishes its request
headers, or dribbles an upload, must not hold a file descriptor for ever.

uvicorn bounds idle keep-alive connections and the number of connections it serves, but any
byte received cancels its keep-alive timer and nothing bounds the time to the end of the
headers, so a slow client (a scanner with a broken stack, a port scan, a slow-loris) keeps its
socket until the process runs out of descriptors and stops answering ``/health`` too. The
protocol here closes a connection whose next request's headers have not arrived within
``header_timeout_s``; the body is bounded by :class:`edgead.service.http.UploadGuard`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


def guarded_h11(header_timeout_s: float) -> type[H11Protocol]:
    """An h11 protocol class that closes connections which do not deliver request headers in time."""

    class GuardedH11Protocol(H11Protocol):
        _header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_deadline()

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
            if not self.transport.is_closing():
                self._arm_header_deadline()  # the next request's headers, on a kept-alive connection

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
