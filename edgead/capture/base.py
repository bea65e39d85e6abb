"""The frame-source interface and the source spec parser.

A spec names where frames come from:

- ``folder:<dir>``           replay the images of a folder in name order, looping (demos, tests)
- ``opencv:<index|url|file>`` a USB camera (``opencv:0``), an RTSP/HTTP stream or a video file
- ``picamera2[:<camera>]``   a Raspberry Pi camera through picamera2 (imported lazily)
- ``none``                   no source: only ``POST /score`` with an image works
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgead.errors import ConfigError, EdgeadError

SOURCE_KINDS = ("folder", "opencv", "picamera2")
SPEC_HELP = "expected folder:<dir>, opencv:<index|url|file>, picamera2[:<camera>] or none"


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
    """A source of frames. Not thread-safe: the supervisor serialises calls."""

    spec: str = ""

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


def split_spec(spec: str) -> tuple[str, str] | None:
    """``"kind:arg"`` -> (kind, arg); None for ``none``/empty; ConfigError for unknown kinds."""
    spec = (spec or "").strip()
    if spec.lower() in ("", "none"):
        return None
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"source {spec!r}: unknown kind {kind!r}; {SPEC_HELP}")
    arg = arg.strip()
    if kind in ("folder", "opencv") and not arg:
        what = "directory" if kind == "folder" else "index or url"
        raise ConfigError(f"source {spec!r}: missing {what}; {SPEC_HELP}")
    if kind == "picamera2" and arg and not arg.isdigit():
        raise ConfigError(f"source {spec!r}: the camera number must be an integer; {SPEC_HELP}")
    return kind, arg


def parse_source(spec: str, options: SourceOptions | None = None) -> FrameSource | None:
    """Build the (not yet opened) source a spec names, or None for ``none``."""
    parsed = split_spec(spec)
    if parsed is None:
        return None
    kind, arg = parsed
    options = options or SourceOptions()
    if kind == "folder":
        from edgead.capture.folder import FolderSource

        return FolderSource(arg, loop=options.loop)
    if kind == "opencv":
        from edgead.capture.opencv_source import OpenCVSource

        return OpenCVSource(arg, size=options.size, flush_frames=options.flush_frames, timeout_s=options.timeout_s)
    from edgead.capture.picamera2_source import Picamera2Source

    return Picamera2Source(
        int(arg or 0), size=options.size, roi=options.roi, mode=options.mode, controls=options.controls
    )


def open_source(spec: str, options: SourceOptions | None = None) -> FrameSource:
    """Build and open the source a spec names (``none`` is a ConfigError here)."""
    source = parse_source(spec, options)
    if source is None:
        raise ConfigError(f"source {spec!r}: no source to open; {SPEC_HELP}")
    source.open()
    return source
