"""How the int8 search lays the bank out in onnxruntime GEMM blocks.

The bank is cut into blocks, one onnxruntime session each with that block's codes prepacked.
The first block, the *prefix*, gives every query an upper bound of its nearest distance before
the few queries that can hold the image score are searched exactly
(:meth:`edgead.scorer.search.int8.Int8Search.topk_nn`); the blocks after it double in size, so
that the pruned pass drops most queries in the first ones and a few-query pass makes few calls.
The graphs are written here with :mod:`edgead.scorer.onnx_proto` (no ``onnx`` import on the Pi).
"""

from __future__ import annotations

import numpy as np

from edgead.scorer import onnx_proto as proto

# Bank rows per block at most.  Each session costs some RSS beyond its codes and each call a
# fixed overhead that a few-query pass pays once per block, while big blocks cost the GEMM
# little: few, large blocks.
DEFAULT_BLOCK_ROWS = 16384

# The prefix: about 1/_PREFIX_SHARE of the bank (its first rows, in greedy k-center order, cover
# the rest), between _PREFIX_MIN_ROWS and _PREFIX_MAX_ROWS.
_PREFIX_SHARE = 8
_PREFIX_MIN_ROWS = 128
_PREFIX_MAX_ROWS = 1024
_FIRST_BLOCK_ROWS = 1024  # the block after the prefix, at least
# Share of the prefix taken from the bank's first rows (the extremes); the rest are dense rows
# (see prefix_order).  All extremes (the plain greedy order) bounds a good frame's typical patch
# too loosely; the share itself matters little.
_PREFIX_EXTREMES = 0.25


def prefix_rows(rows: int, block_rows: int) -> int:
    """Rows of the prefix block of a ``rows``-row bank."""
    return min(block_rows, _PREFIX_MAX_ROWS, max(_PREFIX_MIN_ROWS, rows // _PREFIX_SHARE))


def block_starts(rows: int, prefix: int, block_rows: int) -> list[int]:
    """First bank position of every block: the prefix, then blocks doubling in size up to
    ``block_rows``; a short last block joins the one before."""
    starts, size = [0, prefix], min(block_rows, max(prefix, _FIRST_BLOCK_ROWS))
    while starts[-1] < rows:
        starts.append(starts[-1] + size)
        size = min(2 * size, block_rows)
    starts = [c for c in starts[:-1] if c < rows]
    if len(starts) > 2 and 2 * (rows - starts[-1]) < starts[-1] - starts[-2]:
        starts.pop()
    return starts


def prefix_order(rows: int, prefix_rows: int, bank_knn: np.ndarray | None = None) -> np.ndarray:
    """The order in which the int8 search's blocks take the bank rows; the first ``prefix_rows``
    are the prefix, whose distances bound every query's.

    An export's bank is in greedy k-center order: its first rows cover the extremes of the
    training patches, and bound the typical (central) patch of a good frame loosely.  With the
    support table ``bank_knn``, a quarter of the prefix is the first rows (the extremes) and the
    rest the rows most often among the other rows' nearest neighbours (the dense regions, where
    most patches fall), which leaves far fewer patches above the frame's maximum after the
    prefix; the other rows follow in greedy order.  Without the table: the greedy order.
    """
    order = np.arange(rows, dtype=np.int64)
    if bank_knn is None or bank_knn.shape[0] != rows or bank_knn.shape[1] < 2 or prefix_rows >= rows:
        return order
    head = int(prefix_rows * _PREFIX_EXTREMES)
    indegree = np.bincount(np.asarray(bank_knn[:, 1:], dtype=np.int64).reshape(-1), minlength=rows)[:rows]
    dense = np.argsort(-indegree[head:], kind="stable")[: prefix_rows - head] + head
    taken = np.zeros(rows, dtype=bool)
    taken[:head] = True
    taken[dense] = True
    return np.concatenate([order[:head], np.sort(dense), order[~taken]])


def gemm_model(codes: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> bytes:
    """Y (Q, n) = A (Q, D) float32 . (scale * codes)^T + bias, as onnxruntime's
    DynamicQuantizeMatMul (inputs A, B, b_scale, b_zero_point (none), bias)."""
    n, d = codes.shape
    return proto.model(
        nodes=[proto.node("DynamicQuantizeMatMul", ["A", "B", "B_scale", "", "bias"], ["Y"],
                          domain="com.microsoft")],
        inputs=[proto.value_info("A", proto.FLOAT, ["Q", d])],
        outputs=[proto.value_info("Y", proto.FLOAT, ["Q", n])],
        initializers=[proto.tensor("B", np.ascontiguousarray(codes.T)), proto.tensor("B_scale", scale),
                      proto.tensor("bias", bias)],
        opsets={"": 17, "com.microsoft": 1},
        name="edgead_int8_nn",
    )
