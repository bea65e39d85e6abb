"""Per-image feature cache of the development suite, one folder per set and input geometry.

Shared by the --auto proxy study (``bench/auto_proxy.py``): a geometry is an ``--auto``
candidate spec's feature part (backbone, taps, size, tiles, ...); each image's (tiles, D, h, w)
float16 features are saved once and any subset of images reuses them.  Untiled Lite0 geometries
use the folder names of ``bench/quality_sweep.py`` (``<set>_<size>``), so its cache is reused.

    python bench/auto_features.py --root DATA --geometries "size=448;size=224 tiles=2x2" --max-train 200 --max-test 300
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from edgead.evaluate import find_test_images  # noqa: E402
from edgead.images import list_images, resolve_train_folder  # noqa: E402
from edgead_export.config import ExportConfig  # noqa: E402
from edgead_export.extract import extract_features  # noqa: E402
from edgead_export.pipeline import build_graph  # noqa: E402
from quality_sweep import evenly  # noqa: E402

DEFAULT_CACHE = Path("/tmp/edgead-quality-cache/feats")


def geometry_folder(name: str, cfg: ExportConfig) -> str:
    """``<set>_<size>`` for the default backbone untiled (quality_sweep's names), else with the spec."""
    base = ExportConfig(data=cfg.data, out=cfg.out)
    size = cfg.preprocess.input_size
    plain = cfg.updated(input_size=base.input_size) == base
    if plain:
        return f"{name}_{size[0]}" if size[0] == size[1] else f"{name}_{size[0]}x{size[1]}"
    parts = [f"{size[0]}x{size[1]}", f"t{cfg.tile_grid[0]}x{cfg.tile_grid[1]}o{cfg.tile_overlap:g}",
             cfg.backbone.replace("efficientnet-", ""), "taps" + "-".join(map(str, cfg.taps or ["d"])),
             cfg.photometric, cfg.resize_mode, cfg.interpolation]
    return f"{name}_" + "_".join(parts)


def set_images(root: Path, name: str, max_train: int, max_test: int) -> tuple[list[Path], list, np.ndarray]:
    """(training paths, test paths, test labels): at most ``max_train`` (<= 300) / ``max_test`` (half
    good, half defective), evenly spaced in name order (0: all)."""
    # a subset of quality_sweep's 300 evenly spaced training images, so its cache serves
    train = evenly(evenly(list_images(resolve_train_folder(root / name)), 300), max_train)
    items = find_test_images(root / name)
    half = max_test // 2
    items = evenly([t for t in items if t.label == 0], half) + evenly([t for t in items if t.label == 1], half)
    return train, [t.path for t in items], np.array([t.label for t in items])


class FeatureCache:
    """Features of images (files or decoded frames with a key) at one geometry, cached per image."""

    def __init__(self, cache: Path, root: Path, name: str, cfg: ExportConfig):
        self.folder = cache / geometry_folder(name, cfg)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.root, self.name, self.cfg = root / name, name, cfg
        self._graph = None
        self.extracted = 0

    def graph(self):
        if self._graph is None:
            self._graph, _ = build_graph(self.cfg, [])
        return self._graph

    def file(self, key: str) -> Path:
        return self.folder / (key.replace("/", "__") + ".npy")

    def of_paths(self, paths: list[Path]) -> list[np.ndarray]:
        keys = [str(p.relative_to(self.root)) for p in paths]
        return self.of(keys, lambda i: paths[i])

    def of(self, keys: list[str], source) -> list[np.ndarray]:
        """(tiles, D, h, w) float16 per key; ``source(i)`` gives image i (path or frame) when not cached."""
        files = [self.file(k) for k in keys]
        todo = [i for i, f in enumerate(files) if not f.is_file()]
        t0 = time.perf_counter()
        tiles = self.cfg.tiling.count
        for a in range(0, len(todo), 16):
            chunk = todo[a:a + 16]
            feats = extract_features(self.graph(), [source(i) for i in chunk], self.cfg.preprocess,
                                     tiling=self.cfg.tiling).astype(np.float16)
            for j, i in enumerate(chunk):  # written whole, then renamed: another run may read the cache
                tmp = files[i].with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, feats[j * tiles:(j + 1) * tiles] if tiles > 1 else feats[j:j + 1])
                os.replace(tmp, files[i])
        self.extracted += len(todo)
        if todo:
            print(f"  {self.folder.name}: {len(todo)} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr,
                  flush=True)
        return [_as_4d(np.load(f)) for f in files]


def _as_4d(a: np.ndarray) -> np.ndarray:
    return a[None] if a.ndim == 3 else a  # quality_sweep stored (D, h, w) per untiled image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--sets", default="magnetic_tile,elpv_poly,deeppcb,casting,bsdata")
    p.add_argument("--geometries", default="size=224;size=320")
    p.add_argument("--max-train", type=int, default=200)
    p.add_argument("--max-test", type=int, default=300)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for spec in args.geometries.split(";"):
        for name in args.sets.split(","):
            cfg = ExportConfig(data=args.root / name, out=Path("/tmp/unused")).with_spec(spec)
            train, test, _ = set_images(args.root, name, args.max_train, args.max_test)
            fc = FeatureCache(args.cache, args.root, name, cfg)
            fc.of_paths(train)
            fc.of_paths(test)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
