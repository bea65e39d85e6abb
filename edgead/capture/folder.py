"""``folder:<dir>``: replays the images of a folder in name order, looping."""

from __future__ import annotations

import logging
from pathlib import Path

from edgead.capture.base import CaptureError, Frame, FrameSource, SourceOptions
from edgead.errors import ImageError

log = logging.getLogger(__name__)


class FolderSource(FrameSource):
    """Each read returns the next image; after the last one the folder is listed again (new
    files are picked up) and replay starts over. Unreadable files are skipped with a warning."""

    kind = "folder"
    syntax = "folder:<dir>"
    summary = "replay the images of a folder in name order, looping (demos, tests)"
    arg_needed = "directory"

    @classmethod
    def check_ready(cls, arg: str) -> str | None:
        folder = Path(arg)
        if not folder.exists():
            return f"folder {folder.resolve()} does not exist"
        if not folder.is_dir():
            return f"{folder.resolve()} is not a folder"
        return None

    @classmethod
    def from_spec(cls, arg: str, options: SourceOptions) -> "FolderSource":
        return cls(arg, loop=options.loop)

    def __init__(self, folder: str | Path, loop: bool = True):
        self.folder = Path(folder)
        self.loop = loop
        self.spec = f"folder:{self.folder}"
        self._files: list[Path] = []
        self._pos = 0
        self._warned: set[Path] = set()

    def open(self) -> None:
        from edgead.images import list_images  # OpenCV loads when a source opens, not when it is listed

        try:
            self._files = list_images(self.folder)
        except ImageError as exc:
            raise CaptureError(str(exc)) from None
        self._pos = 0

    def read(self) -> Frame:
        from edgead.images import read_image

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
