"""The live feed behind the operators' page: the latest scored part, pushed to browsers as
server-sent events, and its frame rendered for a browser on request.

Inspection never waits for a browser: the worker thread only swaps a reference and wakes the
subscribers' queues (bounded; a slow browser misses updates, it never backs up the line).
The frame is downscaled and the heatmap drawn only when a browser asks, at most once per part.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edgead.outputs.heatmap import encode, map_to_u8, overlay

# a browser view, not an inspection image: small enough for a phone on plant Wi-Fi
LIVE_MAX_SIDE = 640


class TooManyViewers(Exception):
    """Every live-view slot is taken."""


@dataclass
class Latest:
    seq: int
    summary: dict[str, Any]
    image: np.ndarray | None
    anomaly_map: np.ndarray | None
    threshold: float


class LiveFeed:
    """Latest part + subscribers. ``publish`` is called on the inference worker thread."""

    def __init__(self, max_viewers: int = 8, queue_size: int = 4):
        self.max_viewers = max_viewers
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._latest: Latest | None = None
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = set()
        self._rendered: tuple[int, bool, bytes] | None = None

    @property
    def viewers(self) -> int:
        return len(self._subscribers)

    def publish(self, summary: dict[str, Any], image: np.ndarray | None, anomaly_map: np.ndarray | None,
                threshold: float) -> None:
        with self._lock:
            seq = (self._latest.seq + 1) if self._latest else 1
            self._latest = Latest(seq, {**summary, "seq": seq}, image, anomaly_map, threshold)
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(_offer, queue, self._latest.summary)
            except RuntimeError:  # that browser's loop is gone
                pass

    def latest_summary(self) -> dict[str, Any] | None:
        latest = self._latest
        return None if latest is None else latest.summary

    def subscribe(self) -> asyncio.Queue:
        """A queue of part summaries for one browser; TooManyViewers when every slot is taken."""
        queue: asyncio.Queue = asyncio.Queue(self.queue_size)
        with self._lock:
            if len(self._subscribers) >= self.max_viewers:
                raise TooManyViewers(f"{self.max_viewers} live views are open already")
            self._subscribers.add((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._subscribers = {s for s in self._subscribers if s[1] is not queue}

    def frame_jpeg(self, with_map: bool = True) -> bytes | None:
        """The latest frame (heatmap drawn over it when there is one), at most LIVE_MAX_SIDE px."""
        latest = self._latest
        if latest is None or latest.image is None:
            return None
        cached = self._rendered
        if cached is not None and cached[:2] == (latest.seq, with_map):
            return cached[2]
        image = _downscale(latest.image)
        amap = latest.anomaly_map
        if with_map and amap is not None:
            # the log's colour scale: the threshold is the middle, 2 x threshold is red
            image = overlay(image, map_to_u8(amap, 2.0 * latest.threshold, max_side=LIVE_MAX_SIDE))
        data = encode(image, "jpg")
        self._rendered = (latest.seq, with_map, data)
        return data


def _offer(queue: asyncio.Queue, item: dict[str, Any]) -> None:
    if queue.full():  # a slow browser gets the newest part, not a backlog
        try:
            queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
    queue.put_nowait(item)


def _downscale(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = LIVE_MAX_SIDE / max(h, w)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
