"""``folder:<dir>``: replays the images of a folder in name order, looping."""

from __future__ import annotations

import logging
from pathlib import Path

from edgead.capture.base import CaptureError, Frame, FrameSource
from edgead.errors import ImageError
from edgead.images import list_images, read_image

log = logging.getLogger(__name__)


class FolderSource(FrameSource):
    """Each read returns the next image; after the last one the folder is listed again (new
    files are picked up) and replay starts over. Unreadable files are skipped with a warning."""

    def __init__(self, folder: str | Path, loop: bool = True):
        self.folder = Path(folder)
        self.loop = loop
        self.spec = f"folder:{self.folder}"
        self._files: list[Path] = []
        self._pos = 0
        self._warned: set[Path] = set()

    def open(self) -> None:
        try:
            self._files = list_images(self.folder)
        except ImageError as exc:
            raise CaptureError(str(exc)) from None
        self._pos = 0

    def read(self) -> Frame:
        if not self._files:
            raise CaptureError(f"{self.spec}: source is not open")
        for _ in range(len(self._files)):
            if self._pos >= len(self._files):
                if not self.loop:
                    raise CaptureError(f"{self.spec}: end of the folder (loop = false)")
                self.open()
            path = self._files[self._pos]
            self._pos += 1
            try:
                return Frame(read_image(path), name=str(path))
            except ImageError as exc:
                if path not in self._warned:  # once per file, not on every replay loop
                    self._warned.add(path)
                    log.warning("skipping %s", exc)
        raise CaptureError(f"{self.spec}: none of the {len(self._files)} images can be read")

    def probe(self) -> None:
        """The folder is still there (a share unmounted or renamed away is a lost camera)."""
        if not self.folder.is_dir():
            raise CaptureError(f"{self.spec}: the folder is gone")

    def close(self) -> None:
        self._files = []
        self._pos = 0
