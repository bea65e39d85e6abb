"""--orientations: training images enter the model turned and mirrored, so a good part that
reaches the camera the other way round passes, and a defect still fails; the Pi's teach fits the
same model from the same images."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgead.errors import ConfigError
from edgead.images import list_images, read_image
from edgead.orientations import ORIENTATIONS, check_orientations, oriented

SIZE = 128


def test_copies_are_the_dihedral_orientations_in_order():
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)  # two tiles
    assert oriented(x, "fixed") is x
    flips = oriented(x, "flips")
    assert flips.shape == (8, 3, 4, 4)
    np.testing.assert_array_equal(flips[:2], x)                       # the input first, every tile
    np.testing.assert_array_equal(flips[2:4], x[..., ::-1])           # mirrored left-right
    np.testing.assert_array_equal(flips[4:6], x[..., ::-1, :])        # mirrored up-down
    np.testing.assert_array_equal(flips[6:8], x[..., ::-1, ::-1])     # a half turn
    every = oriented(x[:1], "all")
    assert every.shape == (8, 3, 4, 4)
    distinct = {every[i].tobytes() for i in range(8)}
    assert len(distinct) == 8                                         # 8 different copies
    assert every[2].tobytes() == np.rot90(x[0], 1, axes=(1, 2)).tobytes()
    assert len(ORIENTATIONS["all"]) == 8


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="square"):
        check_orientations("all", (224, 320))
    check_orientations("flips", (224, 320))
    with pytest.raises(ConfigError, match="expected one of"):
        oriented(np.zeros((1, 3, 4, 4)), "sideways")
    pytest.importorskip("torch")
    from edgead_export.config import ExportConfig

    base = ExportConfig(data=Path("."), out=Path("x"))
    with pytest.raises(ConfigError, match="square"):
        base.with_spec("orientations=all size=224x320")
    cfg = base.with_spec("orientations=flips tiles=2x2")
    assert cfg.maps_per_image == 16


def test_the_pis_teach_orders_turned_rows_as_the_export_does():
    """Each bank's rows in the export's order (image, copy, tile, y, x; per tile position:
    image, copy, y, x), from the export's grouping and from the teach's per-frame rows."""
    from edgead.fit.scorers import tile_groups
    from edgead.teach.features import frame_rows
    from edgead.tiling import TilingConfig

    rng = np.random.default_rng(0)
    images, copies, tiles, d, h, w = 3, 4, 2, 5, 2, 3
    feats = rng.standard_normal((images * copies * tiles, d, h, w)).astype(np.float32)
    for banks in ("shared", "per_tile"):
        groups = tile_groups(feats, TilingConfig(grid=(1, 2), overlap=0.25, banks=banks))
        export_rows = [g.transpose(0, 2, 3, 1).reshape(-1, d) for _, g in groups]
        per_frame = [frame_rows(feats[i * copies * tiles:(i + 1) * copies * tiles], banks == "per_tile", copies)
                     for i in range(images)]
        teach_rows = [np.concatenate([f[b] for f in per_frame]) for b in range(len(groups))]
        for e, t in zip(export_rows, teach_rows):
            np.testing.assert_array_equal(e, t)


def _bracket(rng: np.random.Generator, mirrored: bool, defect: bool = False) -> np.ndarray:
    """A washer with a tab on one side (an asymmetric part); ``mirrored``: it lies the other way
    round; ``defect``: a rust stain on the ring."""
    from edgead.synthetic import make_part

    img, _ = make_part(rng, SIZE, "blob" if defect else None)
    cy = SIZE // 2 + int(rng.integers(-2, 3))
    cv2.rectangle(img, (SIZE - 30, cy - 8), (SIZE - 6, cy + 8), (200, 200, 210), -1)   # the tab
    cv2.circle(img, (SIZE - 14, cy), 4, (40, 40, 40), -1)                                 # its hole
    return img[:, ::-1].copy() if mirrored else img


@pytest.fixture(scope="module")
def bracket_root(tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("bracket")
    for sub in ("train/good", "test/good", "test/stain"):
        (root / sub).mkdir(parents=True)
    for i in range(30):     # the line delivers them one way round only while the training images are taken
        cv2.imwrite(str(root / "train/good" / f"{i:03d}.png"), _bracket(rng, mirrored=False))
    for i in range(12):     # later, both ways round
        cv2.imwrite(str(root / "test/good" / f"{i:03d}.png"), _bracket(rng, mirrored=i % 2 == 1))
        cv2.imwrite(str(root / "test/stain" / f"{i:03d}.png"), _bracket(rng, mirrored=i % 2 == 1, defect=True))
    return root


def _export(root: Path, out: Path, orientations: str) -> Path:
    pytest.importorskip("torch")
    from edgead_export.config import ExportConfig
    from edgead_export.pipeline import export_model

    cfg = ExportConfig(data=root, out=out, input_size=(SIZE, SIZE), coreset=0.1, progress=False, threads=2,
                       calib_images=16, orientations=orientations)
    return export_model(cfg)[0]


@pytest.fixture(scope="module")
def both(bracket_root, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("models")
    return {o: _export(bracket_root, out / o, o) for o in ("fixed", "flips")}


def _decisions(model_dir: Path, paths: list[Path]) -> list[str]:
    from edgead.model import InspectionModel

    model = InspectionModel(model_dir, threads=1)
    return [model.score(read_image(p), with_map=False).decision for p in paths]


def test_a_part_the_other_way_round_passes_and_a_defect_still_fails(both, bracket_root):
    goods = sorted((bracket_root / "test/good").glob("*.png"))
    mirrored_goods = goods[1::2]
    stains = sorted((bracket_root / "test/stain").glob("*.png"))
    fixed_rejects = _decisions(both["fixed"], mirrored_goods).count("reject")
    # fitted on parts one way round only, the plain model rejects most good parts lying the other way
    assert fixed_rejects >= len(mirrored_goods) // 2
    flips = _decisions(both["flips"], goods + stains)
    assert flips[:len(goods)].count("reject") == 0, flips          # every good part passes, either way round
    assert flips[len(goods):].count("reject") >= len(stains) - 1, flips   # and the stains are still caught

    from edgead.artifact import read_manifest

    fixed, turned = read_manifest(both["fixed"]), read_manifest(both["flips"])
    assert (fixed.orientations, turned.orientations) == ("fixed", "flips")
    assert turned.patchcore.training_patches == 4 * fixed.patchcore.training_patches
    assert turned.bank_size == fixed.bank_size   # the Pi searches a bank of the same size
    assert turned.training_images == fixed.training_images
    # the threshold rests on out-of-fold scores of every training image, as without turned copies
    assert turned.false_rejects[turned.default_precision].good_images == \
        fixed.false_rejects[fixed.default_precision].good_images


def test_teach_on_the_pi_turns_the_images_as_the_export_did(both, bracket_root, tmp_path):
    from edgead.artifact import read_manifest
    from edgead.teach.refit import teach

    served = tmp_path / "line" / "model"
    shutil.copytree(both["flips"], served)
    res = teach(served, list_images(bracket_root / "train" / "good"), mode="new", precision="fp32", threads=2)
    a, b = read_manifest(served), read_manifest(res.path)
    assert b.orientations == "flips"
    assert b.patchcore.training_patches == a.patchcore.training_patches
    assert b.bank_size == a.bank_size
    assert b.threshold == pytest.approx(a.threshold, rel=1e-3)
