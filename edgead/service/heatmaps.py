"""Heatmap pictures for ``GET /results/{id}/heatmap.png``: rendered from a frame read at a bounded
size, by at most ``server.max_concurrent_renders`` requests at once (the rest are told to retry),
so a burst of heatmap requests on large stored frames cannot exhaust the memory."""

from __future__ import annotations

import threading

from edgead.images import read_image_bounded
from edgead.outputs.heatmap import colorize, encode, overlay
from edgead.outputs.inspection_log import InspectionLog


class RendererBusy(RuntimeError):
    """Every render slot is taken."""


class HeatmapRenderer:
    def __init__(self, store: InspectionLog, max_concurrent: int, max_side: int):
        self.store = store
        self.max_side = max_side
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def render(self, heatmap_rel: str | None, image_rel: str | None, with_frame: bool) -> bytes | None:
        """PNG bytes of the map (over the frame when ``with_frame`` and stored); None when the map is
        not stored; RendererBusy when every slot is taken."""
        if not self._slots.acquire(blocking=False):
            raise RendererBusy("every heatmap render slot is busy (server.max_concurrent_renders)")
        try:
            map_path = self.store.file(heatmap_rel)
            amap = None if map_path is None else read_image_bounded(map_path, self.max_side, grey=True)
            if amap is None:
                return None
            image_path = self.store.file(image_rel) if with_frame else None
            image = None if image_path is None else read_image_bounded(image_path, self.max_side)
            return encode(overlay(image, amap) if image is not None else colorize(amap), "png")
        finally:
            self._slots.release()
