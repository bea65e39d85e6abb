"""What a scoring method implements: the one interface the inspection model talks to.

The model (:mod:`edgead.model`) runs preprocess -> backbone -> scorer -> decision and asks the
scorer nothing about its insides.  A scoring method (PatchCore, PaDiM, ...) is one module of
``edgead/scorer/`` with one class that implements :class:`Scorer` and registers itself with
:func:`edgead.scorer.registry.register_scorer`; the registry finds it by the manifest's
``method``.  To add a method:

1. write ``edgead/scorer/<method>.py`` with a class that has

   * ``method``: the manifest's ``method`` string it reads;
   * ``from_artifact(model_dir, manifest, search=, threads=)``: load its files (their names come
     from :mod:`edgead.manifest`, which owns every file name; its own manifest section is typed
     there too), check them, and raise :class:`~edgead.errors.ArtifactError` naming the file for
     anything it cannot use;
   * ``score(feats, with_map=, lazy=)``: the backbone's patch features of one frame, shape
     ``(tiles, D, h, w)``, -> :class:`FrameScore`: the image score (higher = more anomalous, on
     the scale the manifest's threshold was fitted on) and the anomaly maps at model input size
     ``(tiles, H, W)`` (``lazy``: a function computing them, for a method whose score is cheaper
     than its map; ``with_map=False``: None);
   * ``patch_scores(feats)``: the raw ``(tiles, h, w)`` patch scores (what the maps are made of);
   * ``backend`` (how it searches or scores, for ``edgead info`` and ``/status``) and
     ``nbytes`` (memory its arrays hold);

   and decorate it with ``@register_scorer``;
2. teach the export side to fit and write its files, and :mod:`edgead.manifest` its method name.

A scorer owns its tiles: one set of parameters shared by every tile, or one per tile position
(``manifest.scorer_tiles()``), and how tile scores combine into the image score.  Maps are made
with :func:`edgead.scorer.anomaly_map.upsample_and_smooth` (``manifest.map_sigma``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from edgead.manifest import Manifest

Maps = np.ndarray | Callable[[], np.ndarray] | None


@dataclass
class FrameScore:
    """One frame scored: the image score, the anomaly maps and where the time went."""

    score: float
    maps: Maps  # (tiles, H, W) float32 at input size; a function that computes them; or None
    search_ms: float  # finding the patch scores (the nearest-neighbour search, the Mahalanobis map)
    score_ms: float  # patch scores -> image score (and the maps, when computed now)


@runtime_checkable
class Scorer(Protocol):
    """A scoring method loaded from an artifact (see the module doc)."""

    method: ClassVar[str]

    @classmethod
    def from_artifact(cls, model_dir: Path, manifest: Manifest, *, search: str = "auto",
                      threads: int = 1) -> Scorer:
        """Load the method's files of the artifact at ``model_dir`` (validated ``manifest``)."""
        ...

    def score(self, feats: np.ndarray, *, with_map: bool = True, lazy: bool = False) -> FrameScore:
        """Patch features (tiles, D, h, w) of one frame -> its score and maps."""
        ...

    def patch_scores(self, feats: np.ndarray) -> np.ndarray:
        """Patch features (tiles, D, h, w) -> patch scores (tiles, h, w) float32."""
        ...

    @property
    def backend(self) -> str:
        """How the scores are found ("int8", "exact", "hnsw", "mahalanobis", ...)."""
        ...

    @property
    def nbytes(self) -> int:
        """Bytes the scorer's arrays hold (its libraries' own copies aside)."""
        ...
