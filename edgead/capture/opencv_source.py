"""``opencv:<index|url|file>``: USB cameras, RTSP/HTTP streams and video files via OpenCV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgead.capture.base import CaptureError, Frame, FrameSource, SourceOptions


class OpenCVSource(FrameSource):
    """A ``cv2.VideoCapture``. Live sources keep a one-frame buffer and drop ``flush_frames``
    stale frames per read so an on-demand capture shows the part in front of the camera now;
    a video file rewinds at its end (a looping demo)."""

    kind = "opencv"
    syntax = "opencv:<index|url|file>"
    summary = "a USB camera (opencv:0), an RTSP/HTTP stream or a video file"
    arg_needed = "index or url"

    @classmethod
    def from_spec(cls, arg: str, options: SourceOptions) -> "OpenCVSource":
        return cls(arg, size=options.size, flush_frames=options.flush_frames, timeout_s=options.timeout_s)

    def __init__(self, target: str, size: tuple[int, int] | None = None, flush_frames: int = 1, timeout_s: float = 5.0):
        self.spec = f"opencv:{target}"
        self.target: int | str = int(target) if target.isdigit() else target
        self.is_file = isinstance(self.target, str) and Path(self.target).is_file()
        self.size = size
        self.flush_frames = max(0, int(flush_frames))
        self.timeout_ms = int(timeout_s * 1000)
        self._cap: Any = None  # a cv2.VideoCapture once open
        self._count = 0

    def open(self) -> None:
        import cv2  # loaded when a source opens, never when the registry lists the sources

        self.close()
        if isinstance(self.target, str) and "://" in self.target:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.timeout_ms]
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)
        else:
            cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"{self.spec}: OpenCV cannot open it (no such camera, file or stream?)")
        if not self.is_file:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if self.size is not None:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        self._cap = cap

    def read(self) -> Frame:
        cap = self._cap
        if cap is None:
            raise CaptureError(f"{self.spec}: source is not open")
        if not self.is_file:
            for _ in range(self.flush_frames):
                cap.grab()
        ok, image = cap.read()
        if not ok and self.is_file:  # end of the video: start over
            import cv2

            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = cap.read()
        if not ok or image is None:
            raise CaptureError(f"{self.spec}: no frame (device unplugged or stream ended?)")
        self._count += 1
        return Frame(image, name=f"{self.spec}#{self._count}")

    def probe(self) -> None:
        """A grab (no decode) on a live source: an unplugged USB camera stays "opened" but stops
        delivering; a file only needs to stay open."""
        cap = self._cap
        if cap is None or not cap.isOpened() or (not self.is_file and not cap.grab()):
            raise CaptureError(f"{self.spec}: no frame (device unplugged or stream ended?)")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
