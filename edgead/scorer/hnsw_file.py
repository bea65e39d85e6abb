"""hnswlib index files without their vectors ("links-only"), for the artifact.

An hnswlib file stores every element's float32 vector next to its graph links. In an artifact
those vectors are the memory bank a second time, in float32 where the bank is float16: 8.6 MB
of a 10.7 MB index for a 14k x 152 bank. :func:`strip_vectors` drops them (the graph links,
labels and levels stay) and records the bank's SHA-256; :func:`expanded_index` puts the bank
rows back in, which gives back the very bytes hnswlib wrote, and hands that file to the loader.

Layout: ``MAGIC`` (16 bytes), SHA-256 of the float32 bank (32 bytes), then the hnswlib file
with the ``data`` bytes cut out of each level-0 element.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgead.errors import ArtifactError

MAGIC = b"EDGEAD-HNSW-L01\x00"
_PREFIX = len(MAGIC) + 32


def bank_digest(bank32: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(bank32, dtype=np.float32)).digest()


def is_links_only(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _layout(header: bytes) -> tuple[int, int, int, int, int]:
    """(elements, bytes per element, data offset, label offset, header size) of an hnswlib header."""
    from edgead.scorer.nn_search import _HNSW_HEADER

    _, _, count, per_el, label_off, data_off, *_ = _HNSW_HEADER.unpack(header[: _HNSW_HEADER.size])
    return int(count), int(per_el), int(data_off), int(label_off), _HNSW_HEADER.size


def strip_vectors(path: str | Path, bank: np.ndarray) -> int:
    """Rewrite the hnswlib index at ``path`` (built from ``bank``) without its vectors, atomically;
    returns the bytes saved. Refuses (ArtifactError) when the stored vectors are not the bank."""
    path = Path(path)
    full = path.read_bytes()
    count, per_el, data_off, label_off, hsize = _layout(full)
    bank32 = np.ascontiguousarray(bank, dtype=np.float32)
    level0 = np.frombuffer(full, np.uint8, count * per_el, hsize).reshape(count, per_el)
    labels = level0[:, label_off:label_off + 8].copy().view("<u8")[:, 0]
    stored = level0[:, data_off:label_off].copy().view(np.float32)
    if count != len(bank32) or stored.shape[1] != bank32.shape[1] or not np.array_equal(stored, bank32[labels]):
        raise ArtifactError(f"{path}: the index's vectors are not this memory bank; not stripping it")
    kept = np.concatenate([level0[:, :data_off], level0[:, label_off:]], axis=1)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC + bank_digest(bank32) + full[:hsize] + kept.tobytes() + full[hsize + count * per_el:])
    os.replace(tmp, path)
    return len(full) - path.stat().st_size


def _expand(data: bytes, bank32: np.ndarray, path: Path) -> bytes:
    body = data[_PREFIX:]
    corrupt = ArtifactError(f"HNSW index {path} is corrupt or not an hnswlib index (bad links-only file)")
    try:
        count, per_el, data_off, label_off, hsize = _layout(body)
    except Exception:
        raise corrupt from None
    data_bytes = label_off - data_off
    kept_el = per_el - data_bytes
    if not (0 < data_off < label_off < per_el and count > 0 and len(body) >= hsize + count * kept_el):
        raise corrupt
    if count != len(bank32) or data_bytes != 4 * bank32.shape[1]:
        raise ArtifactError(f"HNSW index {path} holds {count} vectors of {data_bytes // 4} values but the memory "
                            f"bank is {bank32.shape[0]} x {bank32.shape[1]}: index and bank do not belong together")
    if data[len(MAGIC):_PREFIX] != bank_digest(bank32):
        raise ArtifactError(f"HNSW index {path} was not built from this memory bank (bank digest differs)")
    kept = np.frombuffer(body, np.uint8, count * kept_el, hsize).reshape(count, kept_el)
    labels = kept[:, data_off:data_off + 8].copy().view("<u8")[:, 0]
    if labels.max() >= count:
        raise ArtifactError(f"HNSW index {path} is not labelled with bank rows 0..{count - 1}")
    level0 = np.empty((count, per_el), np.uint8)
    level0[:, :data_off] = kept[:, :data_off]
    level0[:, data_off:label_off] = bank32[labels].view(np.uint8)
    level0[:, label_off:] = kept[:, data_off:]
    return body[:hsize] + level0.tobytes() + body[hsize + count * kept_el:]


@contextlib.contextmanager
def expanded_index(path: Path, bank: np.ndarray) -> Iterator[Path]:
    """A path hnswlib can load: ``path`` itself, or for a links-only file a temporary full copy
    (in /dev/shm when there is one: RAM, not the SD card), removed afterwards."""
    if not is_links_only(path):
        yield path
        return
    full = _expand(path.read_bytes(), np.ascontiguousarray(bank, dtype=np.float32), path)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="edgead-hnsw-", dir=shm) as tmp:
        copy = Path(tmp) / path.name
        copy.write_bytes(full)
        del full
        yield copy
