"""An asyncio event loop on a thread of its own, running one network server (Modbus, OPC UA),
so that the plant's clients never share a loop or a thread with scoring or the HTTP API."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable


class ServerThread:
    def __init__(self, name: str):
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None

    def start(self, serve: Callable[[threading.Event], Awaitable[None]], timeout: float = 60.0) -> None:
        """Run ``serve(started)`` on the loop until it returns; wait until it sets ``started``.
        An exception raised before that (a port in use) is raised here."""
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(serve(started))
            except BaseException as exc:  # reported to start(); the daemon stops with a clear error
                failure.append(exc)
            finally:
                started.set()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise TimeoutError(f"{self.name}: not serving after {timeout:.0f} s")
        if failure:
            raise failure[0]

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.loop.is_running()

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop soon (from any thread; never waits)."""
        if self.running:
            self.loop.call_soon_threadsafe(fn, *args)

    def run(self, coro: Awaitable[Any], timeout: float) -> Any:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
        if not self.loop.is_running():
            self.loop.close()
