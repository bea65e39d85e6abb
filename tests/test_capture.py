"""Frame sources and the supervisor: spec parsing, folder replay, OpenCV video files, picamera2
through a stand-in module, reopen with exponential backoff."""

from __future__ import annotations

import subprocess
import sys
import types

import cv2
import numpy as np
import pytest

from edgead.capture import CaptureError, SourceSupervisor, SourceUnavailable, open_source, parse_source
from edgead.capture import base as capture_base
from edgead.capture import registry
from edgead.capture.base import Frame, FrameSource, SourceOptions
from edgead.capture.folder import FolderSource
from edgead.capture.opencv_source import OpenCVSource
from edgead.capture.picamera2_source import Picamera2Source
from edgead.errors import ConfigError


def write(path, value):
    cv2.imwrite(str(path), np.full((20, 30, 3), value, np.uint8))


def test_parse_specs(tmp_path):
    assert parse_source("none") is None and parse_source("") is None
    assert isinstance(parse_source(f"folder:{tmp_path}"), FolderSource)
    cam = parse_source("opencv:0")
    assert isinstance(cam, OpenCVSource) and cam.target == 0
    assert parse_source("opencv:rtsp://cam/stream").target == "rtsp://cam/stream"
    pi = parse_source("picamera2:1", SourceOptions(size=(224, 224)))
    assert isinstance(pi, Picamera2Source) and pi.camera == 1 and pi.size == (224, 224)
    assert parse_source("picamera2").camera == 0
    for bad in ("webcam:0", "folder:", "opencv:", "picamera2:front"):
        with pytest.raises(ConfigError, match="expected folder"):
            parse_source(bad)
    with pytest.raises(ConfigError):
        open_source("none")



@pytest.mark.parametrize("spec, cls", [("folder:/data/parts", FolderSource), ("opencv:0", OpenCVSource),
                                       ("opencv:rtsp://cam/stream", OpenCVSource), ("picamera2", Picamera2Source),
                                       ("picamera2:1", Picamera2Source), ("FOLDER: /data ", FolderSource)])
def test_every_kind_resolves_to_its_source(spec, cls):
    assert type(parse_source(spec)) is cls
    assert registry.source_kinds()[cls.kind] is cls


def test_the_registry_finds_every_source_module():
    """Each module of edgead.capture that defines a source with a kind is in the registry."""
    import importlib
    import inspect
    import pkgutil

    import edgead.capture

    found = {}
    for module in pkgutil.iter_modules(edgead.capture.__path__, "edgead.capture."):
        for _, obj in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(obj, FrameSource) and obj.__dict__.get("kind"):
                found[obj.kind] = obj
    assert found == registry.source_kinds() and set(found) == {"folder", "opencv", "picamera2"}
    for cls in found.values():
        assert cls.syntax.startswith(cls.kind) and cls.summary


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(ConfigError) as exc:
        parse_source("webcam:0")
    message = str(exc.value)
    assert "unknown kind 'webcam'" in message
    for cls in registry.source_kinds().values():
        assert cls.syntax in message
    assert message.endswith("or none")


def test_a_new_source_is_one_class(monkeypatch, tmp_path):
    """A FrameSource subclass naming a kind is all it takes to serve a spec."""
    monkeypatch.setattr(capture_base, "_KINDS", dict(capture_base._KINDS))  # registered for this test only

    class EchoSource(FrameSource):
        kind, syntax, summary = "echo", "echo:<text>", "frames named after the text"

        def __init__(self, text):
            self.text, self.spec = text, f"echo:{text}"

        @classmethod
        def check_arg(cls, arg):
            return None if arg else "missing text"

        @classmethod
        def from_spec(cls, arg, options):
            return cls(arg)

        def open(self):
            pass

        def read(self):
            return Frame(np.zeros((2, 2, 3), np.uint8), name=self.text)

        def close(self):
            pass

    with open_source("echo:hello") as src:
        assert isinstance(src, EchoSource) and src.read().name == "hello"
    with pytest.raises(ConfigError, match="missing text.*echo:<text>"):
        parse_source("echo:")
    with pytest.raises(TypeError, match="'folder' is served by both"):
        type("OtherFolder", (FrameSource,), {"kind": "folder"})


def test_resolving_sources_loads_no_device_library():
    """Listing and building sources imports neither picamera2 (it only exists on a Pi) nor
    OpenCV: the daemon validates its source spec before it sets OpenCV's decompression-bomb
    pixel limit, which OpenCV reads once, when it loads."""
    code = ("import sys; from edgead.capture import parse_source; from edgead.capture.registry import source_kinds;"
            "from edgead.service.config import EdgeadConfig;"
            "kinds = source_kinds(); src = [parse_source(s) for s in ('picamera2:0', 'opencv:0', 'folder:/x')];"
            "EdgeadConfig(source={'spec': 'folder:/x'});"
            "loaded = [m for m in ('picamera2', 'cv2') if m in sys.modules]; assert not loaded, loaded;"
            "print(*kinds, *(type(s).__name__ for s in src))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["folder", "opencv", "picamera2", "Picamera2Source", "OpenCVSource", "FolderSource"]

def test_folder_replays_in_order_and_loops(tmp_path):
    for name, value in (("b.png", 20), ("a.png", 10), ("c.jpg", 30)):
        write(tmp_path / name, value)
    (tmp_path / "notes.txt").write_text("not an image")
    with open_source(f"folder:{tmp_path}") as src:
        names = [src.read().name.rsplit("/", 1)[-1] for _ in range(4)]
        assert names == ["a.png", "b.png", "c.jpg", "a.png"]
        write(tmp_path / "d.png", 40)  # picked up at the next loop
        names = [src.read().name.rsplit("/", 1)[-1] for _ in range(6)]
        assert names == ["b.png", "c.jpg", "a.png", "b.png", "c.jpg", "d.png"]
    frame = FolderSource(tmp_path)
    frame.open()
    f = frame.read()
    assert f.image.shape == (20, 30, 3) and f.image.dtype == np.uint8 and f.image[0, 0, 0] == 10


def test_folder_skips_unreadable_files_and_fails_when_empty(tmp_path):
    write(tmp_path / "a.png", 10)
    (tmp_path / "b.png").write_bytes(b"corrupt")
    src = open_source(f"folder:{tmp_path}")
    assert [src.read().name.endswith("a.png") for _ in range(3)] == [True, True, True]
    with pytest.raises(CaptureError, match="not a directory"):
        open_source(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaptureError, match="no images"):
        open_source(f"folder:{tmp_path / 'empty'}")
    once = FolderSource(tmp_path, loop=False)
    once.open()
    once.read()
    with pytest.raises(CaptureError, match="end of the folder"):
        once.read()


def test_opencv_video_file_rewinds(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG")
    for value in (30, 130, 230):
        writer.write(np.full((48, 64, 3), value, np.uint8))
    writer.release()
    with open_source(f"opencv:{path}") as src:
        means = [round(float(src.read().image.mean()), -1) for _ in range(5)]
    assert means[:3] == [30, 130, 230] and means[3:] == [30, 130]


def test_opencv_missing_device_is_a_capture_error():
    with pytest.raises(CaptureError, match="cannot open"):
        open_source("opencv:/nonexistent/video.mp4")


class FakeRequest:
    def __init__(self, cam):
        self.cam = cam

    def make_array(self, stream):
        self.cam.calls.append(("make_array", stream))
        w, h = self.cam.config["main"]["size"]
        return np.full((h, w, 3), 7, np.uint8)

    def release(self):
        self.cam.calls.append(("release",))


class FakePicamera2:
    instances: list["FakePicamera2"] = []

    def __init__(self, camera_num=0):
        self.camera_num = camera_num
        self.calls: list[tuple] = []
        self.config = None
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main, buffer_count):
        return {"kind": "video", "main": main, "buffer_count": buffer_count}

    def create_still_configuration(self, main, buffer_count):
        return {"kind": "still", "main": main, "buffer_count": buffer_count}

    def configure(self, config):
        self.config = config

    def set_controls(self, controls):
        self.calls.append(("set_controls", controls))

    def start(self):
        self.calls.append(("start",))

    def capture_request(self):
        self.calls.append(("capture_request",))
        return FakeRequest(self)

    def stop(self):
        self.calls.append(("stop",))

    def close(self):
        self.calls.append(("close",))


def test_picamera2_request_cycle(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    FakePicamera2.instances.clear()
    src = parse_source("picamera2:1", SourceOptions(size=(128, 96), roi=(100, 50, 800, 600), mode="still",
                                                    controls={"ExposureTime": 4000}))
    src.open()
    cam = FakePicamera2.instances[0]
    assert cam.camera_num == 1
    assert cam.config == {"kind": "still", "main": {"format": "RGB888", "size": (128, 96)}, "buffer_count": 2}
    assert ("set_controls", {"ExposureTime": 4000, "ScalerCrop": (100, 50, 800, 600)}) in cam.calls
    frame = src.read()
    assert frame.image.shape == (96, 128, 3) and frame.name == "picamera2:1#1"
    assert cam.calls[-3:] == [("capture_request",), ("make_array", "main"), ("release",)]
    src.close()
    assert cam.calls[-2:] == [("stop",), ("close",)]


def test_picamera2_missing_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails
    with pytest.raises(CaptureError, match="python3-picamera2"):
        open_source("picamera2")


class ScriptedSource(FrameSource):
    """Opens/reads according to flags the test flips."""

    spec = "scripted:0"

    def __init__(self):
        self.can_open = True
        self.can_read = True
        self.opens = self.closes = 0

    def open(self):
        if not self.can_open:
            raise CaptureError("scripted:0: not there")
        self.opens += 1

    def read(self):
        if not self.can_read:
            raise RuntimeError("driver exploded")
        return Frame(np.zeros((4, 4, 3), np.uint8), name="scripted:0#n")

    def close(self):
        self.closes += 1


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.mark.parametrize("start", [1000.0, 0.0, -1000.0])  # monotonic time's origin is undefined
def test_supervisor_backoff_and_reopen(start):
    src, clock = ScriptedSource(), Clock(start)
    sup = SourceSupervisor(src, backoff_initial=1.0, backoff_max=4.0, clock=clock)
    assert sup.start() and sup.state == "ok"
    sup.capture()
    assert sup.status()["last_frame_age_s"] == 0.0

    src.can_read = False
    with pytest.raises(SourceUnavailable) as exc:
        sup.capture()
    assert exc.value.retry_after == 1.0 and "driver exploded" in str(exc.value)
    assert sup.state == "failed" and src.closes == 1
    src.can_read, src.can_open = True, False
    with pytest.raises(SourceUnavailable) as exc:  # still backing off: no open attempt
        sup.capture()
    assert src.opens == 1 and exc.value.retry_after == pytest.approx(1.0)
    clock.t += 1.0
    retries = []
    for _ in range(3):  # open keeps failing: 2 s, 4 s, 4 s (capped)
        with pytest.raises(SourceUnavailable) as exc:
            sup.capture()
        retries.append(exc.value.retry_after)
        clock.t += exc.value.retry_after
    assert retries == [2.0, 4.0, 4.0]
    src.can_open = True
    assert sup.capture().name == "scripted:0#n"
    status = sup.status()
    assert status["state"] == "ok" and status["reconnects"] == 1 and status["failures"] == 4
    assert status["last_error"] is None
    src.can_read = False
    with pytest.raises(SourceUnavailable) as exc:  # backoff restarts from the initial delay
        sup.capture()
    assert exc.value.retry_after == 1.0
    sup.close()
    assert sup.state == "closed"


def test_supervisor_start_failure_is_reported():
    src, clock = ScriptedSource(), Clock()
    src.can_open = False
    sup = SourceSupervisor(src, backoff_initial=0.5, backoff_max=1.0, clock=clock)
    assert sup.start() is False
    s = sup.status()
    assert s["state"] == "failed" and s["ok"] is False and "not there" in s["last_error"] and s["retry_in_s"] == 0.5
