"""Where teach's good frames come from: a folder, N frames from a camera at a rate, or stored
frames of logged results an operator marked good. Every path ends as image files on disk, so
that the fit (in its own low-priority process) reads them like the export reads a folder."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edgead.errors import EdgeadError
from edgead.images import list_images

MAX_FRAMES = 5000


def folder_frames(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeadError(f"{folder}: no such folder of good images")
    paths = list_images(folder)
    if not paths:
        raise EdgeadError(f"{folder}: no images (png, jpg, bmp, tif)")
    return paths


def result_frames(log, result_ids: list[int]) -> list[Path]:
    """The stored frames of logged results (``log``: edgead.outputs.inspection_log.InspectionLog)."""
    if not result_ids:
        raise EdgeadError("name at least one result id")
    paths = []
    for rid in result_ids:
        row = log.get(int(rid))
        if row is None:
            raise EdgeadError(f"result {rid}: not in the inspection log")
        path = log.file(row.get("image_path"))
        if path is None:
            raise EdgeadError(f"result {rid}: its frame was not stored (inspection.store_images) or was pruned")
        paths.append(path)
    return paths


def capture_frames(grab: Callable[[], np.ndarray], count: int, rate_hz: float, dest: Path,
                   stop: threading.Event | None = None) -> list[Path]:
    """``count`` frames from ``grab`` at most ``rate_hz`` a second, written losslessly to ``dest``."""
    if not 1 <= count <= MAX_FRAMES:
        raise EdgeadError(f"frames {count}: expected 1 .. {MAX_FRAMES}")
    if not rate_hz > 0:
        raise EdgeadError(f"rate {rate_hz}: expected frames per second > 0")
    dest.mkdir(parents=True, exist_ok=True)
    paths, period, due = [], 1.0 / rate_hz, time.monotonic()
    for i in range(count):
        if stop is not None and stop.is_set():
            raise EdgeadError("teach stopped while capturing: the served model is unchanged")
        time.sleep(max(0.0, due - time.monotonic()))
        due = max(due + period, time.monotonic())
        path = dest / f"frame-{i:05d}.png"
        if not cv2.imwrite(str(path), grab()):
            raise EdgeadError(f"{path}: cannot write the captured frame")
        paths.append(path)
    return paths
