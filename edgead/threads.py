"""One thread budget for the whole process, set once: BLAS (the exact search's GEMM) and OpenCV
(resize, blur) get the same count as onnxruntime (set per session in edgead.backbone).

Left alone, OpenBLAS and OpenCV each start one thread per core: on a 4-core Pi a "one thread"
daemon would run its search on four and contend with the backbone.
"""

from __future__ import annotations

import os
import sys

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_applied: int | None = None


def limit_threads(threads: int) -> None:
    """Cap BLAS and OpenCV at ``threads`` (idempotent). Before numpy is imported the BLAS
    environment variables suffice; afterwards threadpoolctl resizes the loaded BLAS pools."""
    global _applied
    threads = max(1, int(threads))
    if _applied == threads:
        return
    if "numpy" not in sys.modules:
        for var in BLAS_ENV:
            os.environ[var] = str(threads)
    else:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")
    import cv2

    cv2.setNumThreads(threads)
    _applied = threads
