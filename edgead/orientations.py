"""Orientations: turned and mirrored copies of the training images in the model.

A part that reaches the camera the other way round (a washer flipped over, a bracket rotated by
a half turn, a screw lying in any direction) is not a defect, but a model fitted on parts in one
orientation sees its turned patches as new.  With ``--orientations`` every training image
enters the model in several orientations of its backbone input (after the ROI crop, the resize
and the tiling, so a tile's content turns within the tile): the memory bank, PaDiM's
Gaussians or SPADE's images then cover the turned parts.  Serving is unchanged (one frame, one
pass); only fitting costs more (a backbone pass per orientation, a larger bank before the
coreset).  numpy only: the Pi's teach applies the same copies as the export.

- ``fixed``: the image as captured (the default: a line that holds its parts in place gains
  nothing and loses detection, since a turned defect-free patch may look like a defect's).
- ``flips``: also mirrored left-right, up-down, and turned by a half turn (4 in all; any input
  shape).
- ``all``: every quarter turn, each also mirrored (8 in all; square inputs only).
"""

from __future__ import annotations

import numpy as np

from edgead.errors import ConfigError

# (quarter turns counter-clockwise, mirrored left-right afterwards), the first the image itself
ORIENTATIONS: dict[str, tuple[tuple[int, bool], ...]] = {
    "fixed": ((0, False),),
    "flips": ((0, False), (0, True), (2, True), (2, False)),
    "all": ((0, False), (0, True), (1, False), (1, True), (2, False), (2, True), (3, False), (3, True)),
}


def orientation_count(name: str) -> int:
    """How many copies of each training image ``name`` puts into the model."""
    try:
        return len(ORIENTATIONS[name])
    except KeyError:
        raise ConfigError(f"orientations {name!r}: expected one of {', '.join(ORIENTATIONS)}") from None


def maps_per_image(tiling, name: str, per_bank: bool = False) -> int:
    """Feature maps one training image gives the scorer (``tiling``: edgead.tiling.TilingConfig):
    one per tile and orientation; ``per_bank``: those in each of its banks (a bank per tile
    position holds its own tile's only), image-major in the bank's rows."""
    tiles = tiling.count // tiling.bank_count if per_bank else tiling.count
    return tiles * orientation_count(name)


def check_orientations(name: str, input_size: tuple[int, int]) -> None:
    """Raise ConfigError when ``name`` cannot turn an input of ``input_size`` (H, W)."""
    orientation_count(name)
    if name == "all" and input_size[0] != input_size[1]:
        raise ConfigError(f"orientations all turns the input by quarter turns: it needs a square input size "
                          f"(got {input_size[0]}x{input_size[1]}); use flips")


def oriented(batch: np.ndarray, name: str) -> np.ndarray:
    """One frame's backbone inputs (tiles, C, H, W) -> (orientations x tiles, C, H, W):
    orientation-major, each orientation holding every tile, the first the input itself."""
    ops = ORIENTATIONS.get(name)
    if ops is None:
        orientation_count(name)  # raises
    if len(ops) == 1:
        return batch
    copies = []
    for turns, mirror in ops:
        x = np.rot90(batch, turns, axes=(2, 3)) if turns else batch
        copies.append(x[..., ::-1] if mirror else x)
    return np.ascontiguousarray(np.concatenate(copies))


def bank_share(coreset: float, name: str) -> float:
    """The coreset ratio over the patches of every copy that keeps the bank as large as the
    image itself would make it (``coreset`` a ratio <= 1; a row count stays as it is): the
    turned copies widen what the bank covers, not what a search on the Pi costs, and the greedy
    coreset's time grows with copies, not with their square."""
    return coreset / orientation_count(name) if coreset <= 1 else coreset
