"""Frame-source specs -> sources.

Every module of this package is imported once, on first use, so each ``FrameSource``
subclass in it that names a ``kind`` is known (as Frigate finds its detector plugins): a new
source is one new file. Source modules import their device libraries (OpenCV, picamera2) only
when a source opens: picamera2 exists on a Pi alone, and the daemon validates its source spec
before it sets OpenCV's decompression-bomb pixel limit, which OpenCV reads once, when it loads.

A spec is ``<kind>[:<arg>]`` (``folder:<dir>``, ``opencv:0``, ``picamera2``) or ``none``: no
source, only ``POST /score`` with an image works.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from pathlib import Path

from edgead.capture.base import FrameSource, SourceOptions, registered_kinds
from edgead.errors import ConfigError

_lock = threading.Lock()
_loaded = False


def source_kinds() -> dict[str, type[FrameSource]]:
    """Every source class of the package by kind, sorted by kind."""
    global _loaded
    with _lock:
        if not _loaded:
            for module in pkgutil.iter_modules([str(Path(__file__).parent)], f"{__package__}."):
                if module.name != __name__:
                    importlib.import_module(module.name)
            _loaded = True
    return dict(sorted(registered_kinds().items()))


def spec_help() -> str:
    """``expected folder:<dir>, ... or none``: the syntax of every known kind."""
    return "expected " + ", ".join(cls.syntax or cls.kind for cls in source_kinds().values()) + " or none"


def split_spec(spec: str) -> tuple[str, str] | None:
    """``"kind:arg"`` -> (kind, arg); None for ``none``/empty; ConfigError for an unknown kind
    or an argument its source refuses."""
    spec = (spec or "").strip()
    if spec.lower() in ("", "none"):
        return None
    kind, _, arg = spec.partition(":")
    kind, arg = kind.strip().lower(), arg.strip()
    cls = source_kinds().get(kind)
    if cls is None:
        raise ConfigError(f"source {spec!r}: unknown kind {kind!r}; {spec_help()}")
    problem = cls.check_arg(arg)
    if problem:
        raise ConfigError(f"source {spec!r}: {problem}; {spec_help()}")
    return kind, arg


def parse_source(spec: str, options: SourceOptions | None = None) -> FrameSource | None:
    """Build the (not yet opened) source a spec names, or None for ``none``."""
    parsed = split_spec(spec)
    if parsed is None:
        return None
    kind, arg = parsed
    return source_kinds()[kind].from_spec(arg, options or SourceOptions())


def open_source(spec: str, options: SourceOptions | None = None) -> FrameSource:
    """Build and open the source a spec names (``none`` is a ConfigError here)."""
    source = parse_source(spec, options)
    if source is None:
        raise ConfigError(f"source {spec!r}: no source to open; {spec_help()}")
    source.open()
    return source
