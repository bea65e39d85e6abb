"""Hand freed heap memory back to the OS; keep the cyclic garbage collector off long-lived objects.

glibc keeps memory that Python and numpy free in its arenas; a model load frees tens of MiB of
transients (protobuf bytes, arrays sliced into onnxruntime sessions) that would otherwise count
as the daemon's RSS for its whole life.  ``malloc_trim(0)`` returns the free pages (figures in
docs/benchmarks.md).  A no-op where libc is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # musl, macOS: nothing to trim
        return None


def release_free_memory() -> bool:
    """Return the heap's free pages to the OS; True when glibc did release some."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def freeze_long_lived_objects() -> int:
    """A full collection, then every object alive moves to the collector's permanent generation
    (``gc.freeze``): later collections no longer scan them.  Returns how many were frozen.

    The daemon's imports and model leave tens of thousands of objects the collector tracks
    (FastAPI, pydantic, numpy, onnxruntime); a full (generation 2) collection scans them all and
    stalls the daemon for milliseconds now and then, possibly at a reject pulse's deadline
    (docs/benchmarks.md).  Frozen objects are still freed by reference counting, and a loaded
    model leaves no reference cycles of its own (only ``ast.literal_eval``'s closures from
    reading .npy headers), so a reloaded model's memory is still released.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
