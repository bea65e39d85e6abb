"""The frame-source interface: what a source is (``FrameSource``), what it delivers (``Frame``)
and the settings it may use (``SourceOptions``).

Each source is one module of this package whose ``FrameSource`` subclass names the spec
``kind`` it serves; :mod:`edgead.capture.registry` finds them and turns a spec such as
``folder:<dir>`` into a source.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from edgead.errors import EdgeadError

# kind -> FrameSource subclass; filled as the source modules are imported (registry.py imports them)
_KINDS: dict[str, type["FrameSource"]] = {}


class CaptureError(EdgeadError):
    """A frame source failed to open or to deliver a frame."""


class SourceUnavailable(CaptureError):
    """The source is down and will be retried in ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = max(0.0, float(retry_after))


@dataclass
class Frame:
    """One captured frame: BGR uint8 H x W x 3, with wall-clock and monotonic capture times."""

    image: np.ndarray
    name: str
    timestamp: float = field(default_factory=time.time)
    monotonic: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class SourceOptions:
    """Settings a source may use; each source ignores what does not apply to it."""

    size: tuple[int, int] | None = None  # (width, height) requested from a camera
    roi: tuple[int, int, int, int] | None = None  # sensor crop (x, y, w, h), picamera2 only
    mode: str = "video"  # picamera2: "still" or "video" configuration
    controls: dict[str, Any] = field(default_factory=dict)  # picamera2 controls
    flush_frames: int = 1  # opencv live sources: stale buffered frames dropped per read
    loop: bool = True  # folder: start over after the last image
    timeout_s: float = 5.0  # opencv streams: open/read timeout


class FrameSource(ABC):
    """A source of frames. Not thread-safe: the supervisor serialises calls.

    A subclass that sets ``kind`` serves the specs ``<kind>[:<arg>]``: ``syntax`` shows the
    spec in messages, ``summary`` says what it is, ``arg_needed`` names the argument it cannot
    do without (if any), ``check_arg`` refuses a bad ``arg`` before anything opens and
    ``from_spec`` builds the source."""

    spec: str = ""
    kind: ClassVar[str] = ""
    syntax: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    arg_needed: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if not kind:
            return  # an unregistered source (tests, wrappers), built directly
        other = _KINDS.get(kind)
        if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"frame source kind {kind!r} is served by both {other.__module__}.{other.__qualname__} "
                            f"and {cls.__module__}.{cls.__qualname__}")
        _KINDS[kind] = cls

    @classmethod
    def check_arg(cls, arg: str) -> str | None:
        """What is wrong with the spec's ``arg`` (the text after ``kind:``), or None."""
        return f"missing {cls.arg_needed}" if cls.arg_needed and not arg else None

    @classmethod
    def check_ready(cls, arg: str) -> str | None:
        """What stops ``<kind>:<arg>`` from working here and now (``serve --check``), or None.
        Cheap and side-effect free: it never opens a device another process may hold."""
        return None

    @classmethod
    def from_spec(cls, arg: str, options: "SourceOptions") -> "FrameSource":
        """The (not yet opened) source for ``<kind>:<arg>``, ``arg`` already checked."""
        raise NotImplementedError(f"{cls.__qualname__} cannot be built from a spec")

    @abstractmethod
    def open(self) -> None:
        """Acquire the device/stream; CaptureError with the reason when it cannot."""

    @abstractmethod
    def read(self) -> Frame:
        """Capture one frame now; CaptureError when the source fails."""

    @abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice or on a source that never opened."""

    def probe(self) -> None:
        """Check an open source still works, as cheaply as the device allows; CaptureError when
        it does not. The default captures a frame and drops it."""
        self.read()

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"


def registered_kinds() -> dict[str, type[FrameSource]]:
    """The source classes imported so far, by kind (the registry imports every source module)."""
    return dict(_KINDS)
