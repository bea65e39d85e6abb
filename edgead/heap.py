"""Hand freed heap memory back to the OS.

glibc keeps memory that Python and numpy free in its arenas; a model load frees tens of MiB of
transients (protobuf bytes, arrays sliced into onnxruntime sessions) that would otherwise count
as the daemon's RSS for its whole life.  ``malloc_trim(0)`` returns the free pages: about 10 MiB
after loading a 14k-row bank on the dev machine.  A no-op where libc is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


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
