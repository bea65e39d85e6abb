"""The PatchCore memory bank on disk.

* ``int8`` (export's default): ``memory.q8.npz`` with ``codes`` int8 (N, D), ``scale`` float32
  (N,) and ``mean`` float32 (D,): ``bank = mean + scale[:, None] * codes``
  (:mod:`edgead.bank.codes`).  A quarter of float32, half of float16, and
  exactly what the int8 search multiplies with, so nothing is re-quantized at load.  The
  dequantized bank *is* the model: export fits thresholds and checks parity on it.
* ``float16`` / ``float32``: ``memory.npy`` (older artifacts and the demo model are float16).

``memory.knn.npy`` (optional): each row's ``b`` nearest bank rows (itself first), computed at
export, so that the reweighting's support set of ``m*`` is a lookup, not a search per frame.

Tiled artifacts with one bank per tile position add ``.t<i>`` before the suffix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.bank.codes import dequantize_bank, quantize_bank
from edgead.errors import ArtifactError
from edgead.manifest import bank_file, knn_file


def save_bank(directory: Path, bank: np.ndarray, dtype: str, tag: str = "") -> tuple[str, np.ndarray]:
    """Write ``bank`` (float (N, D)) as ``dtype``; return (file name, the float32 bank the runtime
    will load from it), so that the caller fits on exactly what will be served."""
    name = bank_file(dtype, tag)
    if dtype == "int8":
        codes, scale, mean = quantize_bank(bank)
        with open(Path(directory) / name, "wb") as f:
            np.savez(f, codes=codes, scale=scale, mean=mean)
        return name, dequantize_bank(codes, scale, mean)
    stored = np.asarray(bank).astype(dtype)
    np.save(Path(directory) / name, stored)
    return name, stored.astype(np.float32)


def save_bank_knn(directory: Path, idx: np.ndarray, tag: str = "") -> str:
    """Write the bank's neighbour table ``idx`` (rows, k): each row's nearest rows, itself first
    (uint16 ids when they fit)."""
    dtype = np.uint16 if len(idx) <= np.iinfo(np.uint16).max + 1 else np.int32
    name = knn_file(tag)
    np.save(Path(directory) / name, idx.astype(dtype))
    return name


def load_bank_knn(directory: Path, names: set[str] | dict, rows: int, tag: str = "") -> np.ndarray | None:
    """The bank's stored k-NN table (rows, k) of integer row ids, or None when the artifact has none."""
    path = Path(directory) / knn_file(tag)
    if path.name not in names:
        return None
    try:
        knn = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable array ({exc})") from None
    if knn.ndim != 2 or knn.shape[0] != rows or not np.issubdtype(knn.dtype, np.integer) \
            or (knn.size and (int(knn.min()) < 0 or int(knn.max()) >= rows)):
        raise ArtifactError(f"{path}: neighbour table {knn.dtype} {knn.shape} does not fit a bank of {rows} rows")
    # kept as stored (uint16 for banks up to 65,536 rows: a quarter of int64), indexes as it is
    return knn if knn.dtype in (np.uint16, np.int32, np.int64) else knn.astype(np.int64)


def load_bank(directory: Path, names: set[str] | dict, tag: str = "",
              dequantize: bool = True) -> tuple[np.ndarray | None, tuple | None]:
    """The bank of an artifact directory -> (float32 (N, D), (codes, scale, mean) or None).
    ``names``: the artifact's file names (the manifest's ``files``) to pick the format from.
    ``dequantize=False``: an int8 bank comes back as (None, codes...) -- the int8 search needs
    only the codes, and a float32 copy made and freed at load stays in the heap (4 N D bytes)."""
    q8, npy = Path(directory) / bank_file("int8", tag), Path(directory) / bank_file("float16", tag)
    if q8.name in names:
        try:
            with np.load(q8, allow_pickle=False) as z:
                codes, scale, mean = z["codes"], z["scale"], z["mean"]
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{q8}: unreadable memory bank ({exc})") from None
        if codes.dtype != np.int8 or codes.ndim != 2 or scale.shape != (codes.shape[0],) \
                or mean.shape != (codes.shape[1],):
            raise ArtifactError(f"{q8}: memory bank arrays do not fit together "
                                f"(codes {codes.dtype} {codes.shape}, scale {scale.shape}, mean {mean.shape})")
        quantized = (codes, scale.astype(np.float32), mean.astype(np.float32))
        return (dequantize_bank(*quantized) if dequantize else None), quantized
    if npy.name not in names:
        raise ArtifactError(f"{directory}: the manifest lists no memory bank ({q8.name} or {npy.name})")
    try:
        bank = np.load(npy, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{npy}: unreadable array ({exc})") from None
    return np.ascontiguousarray(bank, dtype=np.float32), None
