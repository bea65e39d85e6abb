"""Scoring methods by the manifest's ``method``: a new method is one new module of this package.

Every module of ``edgead.scorer`` is imported once, on first lookup, so each class in it
decorated with :func:`register_scorer` is known (see :mod:`edgead.scorer.protocol` for what a
method implements).
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from pathlib import Path

from edgead.errors import ArtifactError
from edgead.scorer.protocol import Scorer

_lock = threading.Lock()
_loaded = False
_SCORERS: dict[str, type[Scorer]] = {}


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    """Class decorator: make ``cls`` the scorer of manifests whose method is ``cls.method``."""
    other = _SCORERS.get(cls.method)
    if other is not None and other is not cls:
        raise TypeError(f"scoring method {cls.method!r} registered twice: {other.__qualname__}, {cls.__qualname__}")
    _SCORERS[cls.method] = cls
    return cls


def scorer_methods() -> dict[str, type[Scorer]]:
    """Every registered scoring method by name, sorted."""
    global _loaded
    with _lock:
        if not _loaded:
            package = __name__.rpartition(".")[0]
            for module in pkgutil.iter_modules([str(Path(__file__).parent)], f"{package}."):
                if module.name != __name__:
                    importlib.import_module(module.name)
            _loaded = True
    return dict(sorted(_SCORERS.items()))


def scorer_class(method: str, manifest_path: str | Path = "manifest.json") -> type[Scorer]:
    """The class that scores ``method``; ArtifactError naming the manifest for an unknown one."""
    cls = scorer_methods().get(method)
    if cls is None:
        raise ArtifactError(f"{manifest_path}: unknown method {method!r}: this edgead scores "
                            f"{', '.join(scorer_methods())}")
    return cls
