#!/usr/bin/env python3
"""INT8 against FP32 on the development sets: calibration settings, float layers, parity evidence.

    nice -n 10 python bench/int8_calibration.py --root "$EDGEAD_SHARED_DATA" \
        --datasets magnetic_tile,elpv_poly,deeppcb,casting,bsdata --train 200 \
        --cache /tmp/int8cache --configs default,all_int8,calib5,... --json int8.jsonl

Default model (Lite0, taps 4 + 10, 224 px, PatchCore 1 % coreset, top-60 mean image score).
Per set, once (cached under ``--cache``): ``--train`` evenly spaced training goods, split as the
export splits them (10 % held out), the bank fitted on the torch features of the rest, the FP32
ONNX features of every test image and of the parity images (held-out goods, their pseudo-defects
as the export draws them, and small pseudo-defects). Per configuration: quantize on the same
calibration images the export takes (the first ``calib_images`` fitted ones), run INT8 on the same
tensors (at most ``--test-cap`` test images of each class), and write one JSON line per (set, configuration): image AUROC FP32 / INT8 on the whole
test folder and on its two fixed halves (even / odd index within each class: choose on A, report
on B), patch-feature relative error (all patches, the top-60 patches of each image), and the
parity statistics of :mod:`edgead_export.parity_check` on the parity images. Patch distances of
both precisions are saved per configuration (``--cache``/<set>/<config>.npz) so other criteria
can be computed later without running INT8 again. The bank is kept float32 here (the artifact's
int8 bank moves every score alike, FP32 and INT8).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgead.evaluate import find_test_images  # noqa: E402
from edgead.fit.threshold import split_holdout  # noqa: E402
from edgead.images import list_images, read_image, resolve_train_folder  # noqa: E402
from edgead.metrics_math import auroc  # noqa: E402
from edgead.tiling import TilingConfig, frame_inputs  # noqa: E402

TOPK = 60
BLOCK = "/backbone/blocks.{}/"
# name -> keyword arguments of quantize_int8 (+ "calib": calibration images, "cal_pseudo": add
# pseudo-defects of the calibration images to them)
CONFIGS: dict[str, dict] = {
    "default": {},  # stem float
    **{name: {"float_early": False, **spec} for name, spec in {
        "stem_float": {},  # the default (the same as "default")
        "all_int8": {"float_stem": False},
        "calib1": {"calib": 1},
        "calib5": {"calib": 5},
        "calib16": {"calib": 16},
        "calib160": {"calib": 160},
        "pct99": {"method": "percentile", "percentile": 99.0},
        "pct99.9": {"method": "percentile", "percentile": 99.9},
        "pct99.99": {"method": "percentile", "percentile": 99.99},
        "pct99.999": {"method": "percentile", "percentile": 99.999},
        "entropy": {"method": "entropy"},
        "symmetric": {"symmetric": True},
        "reduce_range": {"reduce_range": True},
        "cal_pseudo": {"cal_pseudo": True},
        "int8_bank": {"int8_bank": True},
        **{f"float_b{i}": {"float_prefixes": (BLOCK.format(i),)} for i in range(11)},
        "float_b4_b10": {"float_prefixes": (BLOCK.format(4), BLOCK.format(10))},
    }.items()},
    "float_b0_b1": {"float_early": True},  # export --int8-float-blocks
}


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


def session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run(sess, tensors: np.ndarray, batch: int = 8) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: tensors[i : i + batch]})[0] for i in range(0, len(tensors), batch)])


def nn_distances(feats: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """(N, D, h, w) -> (N, h*w) L2 distance of every patch to its nearest bank row."""
    b2 = (bank.astype(np.float64) ** 2).sum(1)
    out = np.empty((feats.shape[0], feats.shape[2] * feats.shape[3]), np.float32)
    for i, f in enumerate(feats):
        p = f.reshape(f.shape[0], -1).T.astype(np.float64)
        d2 = (p**2).sum(1)[:, None] + b2[None, :] - 2.0 * p @ bank.T.astype(np.float64)
        out[i] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


def image_scores(dist: np.ndarray) -> np.ndarray:
    return np.sort(dist, axis=1)[:, -TOPK:].mean(1)


def patch_rel_error(f32: np.ndarray, f8: np.ndarray) -> np.ndarray:
    """(N, h*w) relative L2 error of each patch feature."""
    a = f32.reshape(f32.shape[0], f32.shape[1], -1).astype(np.float32)
    b = f8.reshape(a.shape).astype(np.float32)
    return np.linalg.norm(b - a, axis=1) / np.maximum(np.linalg.norm(a, axis=1), 1e-12)


def test_items(root: Path, cap: int) -> list:
    """The test images: at most ``cap`` of each class, evenly spaced in name order."""
    items = find_test_images(root)
    keep = []
    for c in (0, 1):
        idx = [i for i, it in enumerate(items) if it.label == c]
        keep += [idx[j * len(idx) // cap] for j in range(cap)] if len(idx) > cap else idx
    return [items[i] for i in sorted(keep)]


class SetCache:
    """Everything of one set that does not depend on the quantization."""

    def __init__(self, root: Path, name: str, cache: Path, n_train: int, fp32: Path, test_cap: int):
        from edgead_export.config import ExportConfig

        self.dir = cache / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cfg = ExportConfig(data=root / name, out=self.dir / "unused")
        pre = self.cfg.preprocess
        paths = list_images(resolve_train_folder(root / name))
        paths = [paths[i * len(paths) // n_train] for i in range(min(n_train, len(paths)))]
        self.fit, self.hold = split_holdout(paths, self.cfg.holdout, self.cfg.min_holdout, self.cfg.seed)
        items = test_items(root / name, test_cap)
        self.labels = np.array([i.label for i in items])
        tensors = self._tensors("test", lambda: [read_image(i.path) for i in items], pre)
        self.calib_frames = None
        self.calib_paths = self.fit
        f = self.dir / "bank.npy"
        if not f.is_file():
            self._fit_bank(f)
        self.bank = np.load(f)
        parity = self._tensors("parity", self._parity_frames, pre)
        self.parity_kind = np.load(self.dir / "parity_kind.npy")
        self.test_x, self.parity_x = tensors, parity
        self.test_f32 = self._features("test", fp32)
        self.parity_f32 = self._features("parity", fp32)
        self.test_d32 = nn_distances(self.test_f32, self.bank)
        self.parity_d32 = nn_distances(self.parity_f32, self.bank)

    def _tensors(self, tag: str, frames, pre) -> np.ndarray:
        f = self.dir / f"{tag}_x.npy"
        if not f.is_file():
            x = np.concatenate([frame_inputs(fr, pre, TilingConfig())[0] for fr in frames()])
            np.save(f, x)
        return np.load(f, mmap_mode="r")

    def _parity_frames(self) -> list[np.ndarray]:
        from edgead_export.parity_check import parity_images
        from edgead_export.pseudo_defects import small_pseudo_defect

        hold = [read_image(p) for p in self.hold]
        big = parity_images(hold, self.cfg.seed)
        rng = np.random.default_rng(self.cfg.seed + 2)
        small = [small_pseudo_defect(im, rng, self.cfg.preprocess) for im in hold for _ in range(2)]
        kind = np.r_[np.zeros(len(hold)), np.ones(len(big)), np.full(len(small), 2)].astype(np.int8)
        np.save(self.dir / "parity_kind.npy", kind)
        return hold + big + small

    def _fit_bank(self, out: Path) -> None:
        from edgead_export.extract import extract_features
        from edgead_export.fit import fit_patchcore
        from edgead_export.pipeline import build_graph

        graph, _ = build_graph(self.cfg, self.fit)
        feats = extract_features(graph, self.fit, self.cfg.preprocess, progress=False)
        np.save(out, fit_patchcore(feats, self.cfg.coreset, self.cfg.proj_dim, self.cfg.seed).bank.astype(np.float32))

    def _features(self, tag: str, model: Path) -> np.ndarray:
        f = self.dir / f"{tag}_f32.npy"
        if not f.is_file():
            np.save(f, run(session(model), np.asarray(getattr(self, f"{tag}_x"))).astype(np.float16))
        return np.load(f).astype(np.float32)

    def calibration(self, n: int, pseudo: bool) -> list[np.ndarray]:
        from edgead_export.parity_check import parity_images

        pre = self.cfg.preprocess
        frames = [read_image(p) for p in self.calib_paths[:n]]
        if pseudo:
            frames += parity_images(frames, self.cfg.seed + 7)[:: 3]
        return [frame_inputs(fr, pre, TilingConfig())[0] for fr in frames]


def halves(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed halves: even / odd index within each class."""
    a = np.zeros(len(labels), bool)
    for c in (0, 1):
        idx = np.flatnonzero(labels == c)
        a[idx[::2]] = True
    return a, ~a


def evaluate(sc: SetCache, name: str, spec: dict, fp32: Path, tmp: Path) -> dict:
    from edgead_export.onnx_export import quantize_int8
    from edgead_export.parity_check import ScoredFrames, parity_statistics

    spec = dict(spec)
    n_cal = spec.pop("calib", sc.cfg.calib_images)
    pseudo = spec.pop("cal_pseudo", False)
    int8_bank = spec.pop("int8_bank", False)
    t0 = time.time()
    int8 = tmp / f"{name}.onnx"
    q = quantize_int8(fp32, int8, sc.calibration(n_cal, pseudo), **spec)
    t_q = time.time() - t0
    sess = session(int8)
    test_f8 = run(sess, np.asarray(sc.test_x))
    parity_f8 = run(sess, np.asarray(sc.parity_x))
    bank = sc.bank
    if int8_bank:  # the bank fitted on the INT8 graph's own features of the training images
        from edgead_export.fit import fit_patchcore

        fit_x = sc._tensors("fit", lambda: [read_image(p) for p in sc.fit], sc.cfg.preprocess)
        bank = fit_patchcore(run(sess, np.asarray(fit_x)), sc.cfg.coreset, sc.cfg.proj_dim, sc.cfg.seed).bank
    d8, pd8 = nn_distances(test_f8, bank), nn_distances(parity_f8, bank)
    err, perr = patch_rel_error(sc.test_f32, test_f8), patch_rel_error(sc.parity_f32, parity_f8)
    np.savez(sc.dir / f"{name}.npz", test_d8=d8, parity_d8=pd8, test_err=err.astype(np.float16),
             parity_err=perr.astype(np.float16))
    s32, s8 = image_scores(sc.test_d32), image_scores(d8)
    top = np.argsort(sc.test_d32, axis=1)[:, -TOPK:]
    a, b = halves(sc.labels)
    out = {"config": name, "quantization": q, "quantize_s": round(t_q, 1), "calib_images": n_cal,
           "auroc_fp32": auroc(sc.labels, s32), "auroc_int8": auroc(sc.labels, s8)}
    for tag, m in (("A", a), ("B", b)):
        out[f"auroc_fp32_{tag}"], out[f"auroc_int8_{tag}"] = auroc(sc.labels[m], s32[m]), auroc(sc.labels[m], s8[m])
    out["drop_pt"] = 100 * (out["auroc_fp32"] - out["auroc_int8"])
    out["test_feature_error"] = float(err.mean())
    out["test_top_feature_error"] = float(np.take_along_axis(err, top, 1).mean())
    out["test_score_rel_error"] = float(np.mean(np.abs(s8 - s32) / s32))
    out["parity"] = parity_statistics(sc.parity_kind, ScoredFrames(image_scores(sc.parity_d32), sc.parity_d32),
                                      ScoredFrames(image_scores(pd8), pd8), TOPK, sc.parity_f32, parity_f8)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(os.environ.get("EDGEAD_SHARED_DATA", "../shared/data")))
    ap.add_argument("--datasets", default="magnetic_tile,elpv_poly,deeppcb,casting,bsdata")
    ap.add_argument("--train", type=int, default=200, help="evenly spaced training goods per set")
    ap.add_argument("--test-cap", type=int, default=120, help="at most this many test images of each class "
                    "(good, defective), evenly spaced")
    ap.add_argument("--configs", default="default", help=f"comma-separated, of: {', '.join(CONFIGS)}")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/int8cache"))
    ap.add_argument("--json", type=Path, default=None, help="append one JSON line per (set, configuration)")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    fp32 = args.cache / "fp32.onnx"
    if not fp32.is_file():
        from edgead_export.onnx_export import export_onnx
        from edgead_export.pipeline import build_graph
        from edgead_export.config import ExportConfig

        graph, _ = build_graph(ExportConfig(data=args.root, out=args.cache / "x"), [])
        export_onnx(graph, (224, 224), fp32)
    tmp = args.cache / "int8"
    tmp.mkdir(exist_ok=True)
    for ds in args.datasets.split(","):
        log(f"{ds}: preparing")
        sc = SetCache(args.root, ds, args.cache, args.train, fp32, args.test_cap)
        log(f"{ds}: {len(sc.fit)} fitted, {len(sc.hold)} held out, bank {sc.bank.shape}, {len(sc.labels)} test images")
        for name in args.configs.split(","):
            r = {"dataset": ds, "train_images": len(sc.fit), **evaluate(sc, name, CONFIGS[name], fp32, tmp)}
            p = r["parity"]
            log(f"{ds} {name}: AUROC {r['auroc_fp32']:.4f} -> {r['auroc_int8']:.4f} ({r['drop_pt']:+.2f} pt), "
                f"feature error {r['test_feature_error']:.3f} (top {r['test_top_feature_error']:.3f}); parity "
                + ", ".join(f"{k} {v:.4g}" for k, v in p.items() if isinstance(v, float)))
            if args.json:
                with args.json.open("a") as fh:
                    fh.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
