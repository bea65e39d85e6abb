"""``picamera2[:<camera>]``: a Raspberry Pi camera through picamera2 (imported lazily, so the
rest of edgead runs where picamera2 is absent)."""

from __future__ import annotations

from typing import Any

from edgead.capture.base import CaptureError, Frame, FrameSource, SourceOptions

INSTALL_HINT = (
    "picamera2 is not importable: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
    "and create the venv with --system-site-packages (deploy/install-pi.sh does both)"
)


class Picamera2Source(FrameSource):
    """Configures the ISP to deliver ``size`` (default: the model's input size) in RGB888, whose
    byte order is BGR as OpenCV and the model expect; ``roi`` sets the sensor crop (ScalerCrop,
    sensor pixels). Each read is one ``capture_request`` -> ``make_array`` -> ``release``."""

    kind = "picamera2"
    syntax = "picamera2[:<camera>]"
    summary = "a Raspberry Pi camera through picamera2 (imported when the camera opens)"

    @classmethod
    def check_arg(cls, arg: str) -> str | None:
        return None if not arg or arg.isdigit() else "the camera number must be an integer"

    @classmethod
    def from_spec(cls, arg: str, options: SourceOptions) -> "Picamera2Source":
        return cls(int(arg or 0), size=options.size, roi=options.roi, mode=options.mode, controls=options.controls)

    def __init__(self, camera: int = 0, size: tuple[int, int] | None = None,
                 roi: tuple[int, int, int, int] | None = None, mode: str = "video",
                 controls: dict[str, Any] | None = None):
        if mode not in ("still", "video"):
            raise CaptureError(f"picamera2 mode {mode!r}: expected 'still' or 'video'")
        self.camera = camera
        self.spec = f"picamera2:{camera}"
        self.size = size
        self.roi = roi
        self.mode = mode
        self.controls = dict(controls or {})
        self._cam: Any = None
        self._count = 0

    def open(self) -> None:
        self.close()
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CaptureError(f"{self.spec}: {INSTALL_HINT} ({exc})") from None
        try:
            cam = Picamera2(self.camera)
        except Exception as exc:  # libcamera raises plain RuntimeError/IndexError for missing cameras
            raise CaptureError(f"{self.spec}: cannot open camera {self.camera} ({exc})") from None
        try:
            main: dict[str, Any] = {"format": "RGB888"}
            if self.size is not None:
                main["size"] = tuple(self.size)
            if self.mode == "still":
                config = cam.create_still_configuration(main=main, buffer_count=2)
            else:
                config = cam.create_video_configuration(main=main, buffer_count=2)
            cam.configure(config)
            controls = dict(self.controls)
            if self.roi is not None:
                controls["ScalerCrop"] = tuple(self.roi)
            if controls:
                cam.set_controls(controls)
            cam.start()
        except Exception as exc:
            cam.close()
            raise CaptureError(f"{self.spec}: cannot configure/start the camera ({exc})") from None
        self._cam = cam

    def read(self) -> Frame:
        if self._cam is None:
            raise CaptureError(f"{self.spec}: source is not open")
        try:
            request = self._cam.capture_request()
        except Exception as exc:
            raise CaptureError(f"{self.spec}: capture failed ({exc})") from None
        try:
            image = request.make_array("main")  # a copy: the buffer goes back to the camera below
        finally:
            request.release()
        if image.ndim == 3 and image.shape[2] == 4:  # XBGR8888 if a controls/config change asked for it
            image = image[:, :, :3]
        self._count += 1
        return Frame(image, name=f"{self.spec}#{self._count}")

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.stop()
            finally:
                cam.close()
