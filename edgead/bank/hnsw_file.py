"""hnswlib index files in an artifact: their header, their graph links, and links-only files.

hnswlib's file format is private to hnswlib; this module is the one place that reads it, so
that a damaged or foreign file is refused with a message naming it (:func:`read_header`,
:func:`check_links`) before hnswlib, which checks little, reads it.

An hnswlib file stores every element's float32 vector next to its graph links. In an artifact
those vectors are the memory bank a second time, in float32 where the bank is int8 or float16:
most of the index file. :func:`strip_vectors` drops them (the graph links, labels and levels
stay) and records the bank's SHA-256; :func:`expanded_index` puts the bank rows back in, which
gives back the very bytes hnswlib wrote, and hands that file to the loader.

Layout: ``MAGIC`` (16 bytes), SHA-256 of the float32 bank (32 bytes), then the hnswlib file
with the ``data`` bytes cut out of each level-0 element.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgead.errors import ArtifactError

MAGIC = b"EDGEAD-HNSW-L01\x00"
_PREFIX = len(MAGIC) + 32

# hnswlib (0.8.x) index file header, little-endian, 64-bit size_t:
# offsetLevel0, max_elements, cur_element_count, size_data_per_element, label_offset, offsetData
# (size_t x6), maxlevel (int), enterpoint_node (uint32), maxM, maxM0, M (size_t x3), mult (double),
# ef_construction (size_t).  Element data sits between offsetData and label_offset.
HEADER = struct.Struct("<6QiI3QdQ")


def read_header(path: Path) -> dict:
    """The header of the (full) hnswlib file at ``path``, checked for consistency with itself
    and the file's size; ArtifactError naming the file when it is not an hnswlib index."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER.size)
    except OSError as exc:
        raise ArtifactError(f"cannot read HNSW index {path}: {exc.strerror or exc}") from exc
    if len(raw) < HEADER.size:
        raise ArtifactError(f"HNSW index {path} is truncated or not an hnswlib index ({size} bytes)")
    (off0, max_el, count, per_el, label_off, data_off, maxlevel, entry, max_m, max_m0, m, _mult,
     efc) = HEADER.unpack(raw)
    ok = (
        off0 == 0
        and 0 < count <= max_el
        and 0 < data_off < label_off
        and per_el == label_off + 8
        and data_off == max_m0 * 4 + 4
        and max_m0 == 2 * m
        and max_m == m
        and 0 < m < 10_000
        and 0 <= maxlevel < 64
        and entry < count
        and size >= HEADER.size + count * (per_el + 4)
    )
    if not ok:
        raise ArtifactError(f"HNSW index {path} is corrupt or not an hnswlib index (bad header)")
    return {"count": int(count), "data_bytes": int(label_off - data_off), "M": int(m),
            "maxM0": int(max_m0), "per_element": int(per_el), "maxlevel": int(maxlevel),
            "ef_construction": int(efc), "size": int(size)}


def check_links(path: Path, h: dict) -> None:
    """Check the graph structure of an hnswlib file before hnswlib reads it: link-list sizes and
    every neighbour id in range.  hnswlib itself does not check the ids, and an out-of-range id
    in a damaged file would make queries read out of bounds (crash) instead of failing here."""
    n, m, m0, per = h["count"], h["M"], h["maxM0"], h["per_element"]
    bad = ArtifactError(f"HNSW index {path} is corrupt (inconsistent graph links)")
    start1 = HEADER.size + n * per
    try:
        level0 = np.memmap(path, dtype=np.uint8, mode="r", offset=HEADER.size,
                           shape=(n, per))
        links0 = np.ascontiguousarray(level0[:, : 4 + 4 * m0]).view("<u4")  # (n, 1 + maxM0)
        del level0
        with open(path, "rb") as f:
            f.seek(start1)
            tail = f.read()
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read HNSW index {path}: {exc}") from exc
    cnt0 = links0[:, 0] & 0xFFFF  # low 16 bits: neighbour count (byte 2: deleted mark)
    if (cnt0 > m0).any():
        raise bad
    used = np.arange(m0)[None, :] < cnt0[:, None]
    if (links0[:, 1:][used] >= n).any():
        raise bad
    del links0, used
    # upper levels: per element a uint32 byte size, then `level` blocks of (count, maxM ids)
    block = 4 + 4 * m
    starts, off, unpack = [], 0, struct.Struct("<I").unpack_from
    try:
        for _ in range(n):
            sz = unpack(tail, off)[0]
            off += 4
            if sz:
                if sz % block or sz // block > h["maxlevel"]:
                    raise bad
                starts.extend(range(off, off + sz, block))
                off += sz
    except struct.error:
        raise bad from None
    if off != len(tail):
        raise bad
    if starts:
        words = np.frombuffer(tail, dtype="<u4")
        first = np.asarray(starts, dtype=np.int64) // 4
        cnt = words[first] & 0xFFFF
        if (cnt > m).any():
            raise bad
        ids = words[first[:, None] + 1 + np.arange(m)[None, :]]
        if (ids[np.arange(m)[None, :] < cnt[:, None]] >= n).any():
            raise bad



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
    _, _, count, per_el, label_off, data_off, *_ = HEADER.unpack(header[: HEADER.size])
    return int(count), int(per_el), int(data_off), int(label_off), HEADER.size


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
