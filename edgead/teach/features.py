"""Patch features of good frames, streamed into a bounded buffer: in memory up to a budget,
beyond it in a scratch file on disk (the coreset reads it in blocks)."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from edgead.errors import EdgeadError
from edgead.images import read_image
from edgead.orientations import orientation_count


class TeachCancelled(EdgeadError):
    """The teach was stopped before it wrote a version."""


class RowBuffer:
    """(rows, dim) float32 rows filled in order: an array within ``budget_bytes``, else a
    memmapped scratch file in ``scratch`` (removed with the buffer)."""

    def __init__(self, rows: int, dim: int, budget_bytes: int, scratch: Path):
        self.rows, self.dim, self.filled = rows, dim, 0
        self._tmp = None
        if rows * dim * 4 <= budget_bytes:
            self.data: np.ndarray = np.empty((rows, dim), dtype=np.float32)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix=".teach-features-", dir=scratch)
            self.data = np.lib.format.open_memmap(Path(self._tmp.name) / "rows.npy", mode="w+",
                                                  dtype=np.float32, shape=(rows, dim))

    @property
    def on_disk(self) -> bool:
        return self._tmp is not None

    def append(self, block: np.ndarray) -> None:
        n = block.shape[0]
        if self.filled + n > self.rows:
            raise RuntimeError("feature buffer overflow (internal error)")
        self.data[self.filled:self.filled + n] = block
        self.filled += n

    def close(self) -> None:
        del self.data
        if self._tmp is not None:
            self._tmp.cleanup()


def frame_rows(feats: np.ndarray, per_tile: bool, copies: int = 1) -> list[np.ndarray]:
    """One frame's features (copies x tiles, D, h, w; ``copies``: its orientations) -> patch rows
    per bank, in the export's order (copy, tile, y, x for a shared bank; copy, y, x per tile
    position)."""
    n, d, h, w = feats.shape
    rows = feats.transpose(0, 2, 3, 1)
    if per_tile:
        rows = rows.reshape(copies, n // copies, h, w, d)
        return [np.ascontiguousarray(rows[:, i].reshape(-1, d)) for i in range(n // copies)]
    return [np.ascontiguousarray(rows.reshape(-1, d))]


def stream_features(model, images: Iterable[Path], sinks: list, per_tile: bool, keep_maps: list | None = None,
                    stop: threading.Event | None = None, progress: Callable[[int], None] | None = None,
                    orientations: str = "fixed") -> int:
    """Run every image through ``model.features`` (in the model's training ``orientations``, as
    the export fitted it) and append its patch rows to ``sinks`` (one per bank); ``keep_maps``
    collects the raw maps instead (PaDiM). Returns the frames done."""
    done = 0
    for path in images:
        if stop is not None and stop.is_set():
            raise TeachCancelled("teach stopped: the served model is unchanged")
        feats = model.features(read_image(path), orientations)[0]
        if keep_maps is not None:
            keep_maps.append(feats.copy())
        else:
            for sink, rows in zip(sinks, frame_rows(feats, per_tile, orientation_count(orientations))):
                sink.append(rows)
        done += 1
        if progress is not None:
            progress(done)
    return done
