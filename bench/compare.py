#!/usr/bin/env python3
"""One run, same frames: edgead FP32 vs INT8, exact vs hnswlib search, and a plain PyTorch
reference of the same model, with ratios.

The reference is what a user of a research implementation would run: the export's feature
graph in torch (eval, no_grad, FP32, batch 1), ``torch.cdist`` against the whole memory bank,
the reweighted PatchCore score and an upsampled, Gaussian-blurred map, all in torch. Every
configuration gets the same decoded frames and the same preprocessing (edgead's), so the
differences are the engine, the precision and the search. Workstation only (needs torch).

    python bench/compare.py --model MODEL_DIR [--images DIR] [--n 100] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="PatchCore artifact directory")
    p.add_argument("--images", type=Path, default=None, help="folder of images (default: synthetic frames)")
    p.add_argument("--n", type=int, default=100, help="timed frames per configuration")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # one thread count for BLAS too, before numpy is imported
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from edgead.artifact import read_manifest  # noqa: E402
from edgead.manifest import Manifest  # noqa: E402
from edgead.bench import load_frames, measure, percentiles  # noqa: E402
from edgead.images import decode_image  # noqa: E402
from edgead_export.parity_stats import spearman  # noqa: E402
from edgead.model import load_model  # noqa: E402
from edgead.bank.store import load_bank  # noqa: E402
from edgead.scorer.anomaly_map import gaussian_kernel_size  # noqa: E402
from edgead.tiling import TilingConfig, frame_inputs  # noqa: E402
from edgead_export.backbones import build_backbone  # noqa: E402
from edgead_export.feature_graph import PatchFeatureGraph  # noqa: E402

EDGEAD_CONFIGS = (("fp32", "exact"), ("int8", "exact"), ("fp32", "hnsw"), ("int8", "hnsw"), ("fp32", "int8"),
                  ("int8", "int8"))


class TorchPatchCore:
    """The research-code way: torch graph + torch.cdist over the whole bank, FP32."""

    def __init__(self, manifest: Manifest, bank: np.ndarray):
        b = manifest.backbone
        graph_backbone = build_backbone(b.name, b.taps)
        self.graph = PatchFeatureGraph(graph_backbone, "patchcore", b.tap_channels, target_dim=b.target_dim).eval()
        self.bank = torch.from_numpy(bank.astype(np.float32))
        self.k = manifest.pc.num_neighbors
        self.input_size = manifest.preprocess.input_size
        sigma = manifest.map_sigma
        ks = gaussian_kernel_size(sigma)
        x = torch.arange(ks, dtype=torch.float32) - ks // 2
        g = torch.exp(-(x**2) / (2 * sigma**2))
        g /= g.sum()
        self.blur = (g[:, None] * g[None, :])[None, None]

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> tuple[float, dict]:
        t0 = time.perf_counter()
        feats = self.graph(torch.from_numpy(batch))[0]
        t1 = time.perf_counter()
        d, h, w = feats.shape
        patches = feats.reshape(d, h * w).T
        nn_dist, nn_idx = torch.cdist(patches, self.bank).min(dim=1)
        t2 = time.perf_counter()
        i_star = int(nn_dist.argmax())
        m_star = self.bank[nn_idx[i_star]]
        support = torch.cdist(m_star[None], self.bank)[0].topk(self.k, largest=False).indices
        weights = torch.softmax(torch.cdist(patches[i_star][None], self.bank[support])[0], dim=0)
        score = float((1 - weights[0]) * nn_dist[i_star])
        amap = F.interpolate(nn_dist.reshape(1, 1, h, w), size=self.input_size, mode="bilinear", align_corners=False)
        pad = self.blur.shape[-1] // 2
        F.conv2d(F.pad(amap, (pad, pad, pad, pad), mode="reflect"), self.blur)
        t3 = time.perf_counter()
        return score, {"backbone": (t1 - t0) * 1e3, "search": (t2 - t1) * 1e3, "score": (t3 - t2) * 1e3,
                       "total": (t3 - t0) * 1e3}


def run_torch(model_dir: Path, frames: list, n: int, warmup: int) -> tuple[dict, list[float]]:
    manifest = read_manifest(model_dir)
    ref = TorchPatchCore(manifest, load_bank(model_dir, manifest.files)[0])
    pre = manifest.preprocess
    batches = [frame_inputs(decode_image(f.data, f.name), pre, TilingConfig())[0].copy() for f in frames]
    for i in range(warmup):
        ref(batches[i % len(batches)])
    samples: dict[str, list[float]] = {"backbone": [], "search": [], "score": [], "total": []}
    for i in range(n):
        _, t = ref(batches[i % len(batches)])
        for k, v in t.items():
            samples[k].append(v)
    scores = [ref(b)[0] for b in batches]
    return {k: percentiles(v) for k, v in samples.items()}, scores


def _with_map(latency: dict) -> dict:
    """Percentiles of the frame's latency including the anomaly map (torch's total has it)."""
    return latency.get("total_with_map", latency["total"])


def run_edgead(model_dir: Path, frames: list, n: int, warmup: int, threads: int) -> dict:
    out = {}
    for precision, search in EDGEAD_CONFIGS:
        model = load_model(model_dir, precision=precision, threads=threads, search=search)
        samples = measure(model, frames, n, warmup)
        scores = [model.score(decode_image(f.data, f.name), with_map=False).score for f in frames]
        out[f"edgead {precision} {search}"] = {"latency_ms": {k: percentiles(v) for k, v in samples.items()},
                                               "scores": scores}
    return out


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    manifest = read_manifest(args.model)
    if manifest.method != "patchcore":
        raise SystemExit("compare.py: a PatchCore artifact is needed")
    frames = load_frames(args.images, 16, max(manifest.preprocess.input_size))  # 16: the scores are compared
    results = run_edgead(args.model, frames, args.n, args.warmup, args.threads)
    torch_latency, torch_scores = run_torch(args.model, frames, args.n, args.warmup)
    results["torch fp32 cdist"] = {"latency_ms": torch_latency, "scores": torch_scores}
    ref_total = torch_latency["total"]["p50"]
    base = np.asarray(results["edgead fp32 exact"]["scores"])
    for r in results.values():
        s = np.asarray(r["scores"])
        # like for like: the torch reference computes the map; edgead's decision comes before it
        r["speedup_vs_torch_p50"] = ref_total / _with_map(r["latency_ms"])["p50"]
        r["score_max_rel_diff_vs_fp32_exact"] = float(np.max(np.abs(s - base) / np.maximum(np.abs(base), 1e-12)))
        r["spearman_vs_torch"] = spearman(np.asarray(torch_scores), s)
    lat = {name: _with_map(r["latency_ms"])["p50"] for name, r in results.items()}
    ratios = {
        "int8_over_fp32_backbone_p50": results["edgead int8 exact"]["latency_ms"]["backbone"]["p50"]
        / results["edgead fp32 exact"]["latency_ms"]["backbone"]["p50"],
        "hnsw_over_exact_search_p50": results["edgead int8 hnsw"]["latency_ms"]["search"]["p50"]
        / results["edgead int8 exact"]["latency_ms"]["search"]["p50"],
        "edgead_fp32_exact_over_torch_total_p50": lat["edgead fp32 exact"] / lat["torch fp32 cdist"],
        "edgead_best_over_torch_total_p50": min(v for k, v in lat.items() if k.startswith("edgead")) / lat["torch fp32 cdist"],
    }
    report = {"model": str(args.model), "bank_size": manifest.bank_size, "frames": args.n,
              "threads": args.threads, "images": str(args.images) if args.images else "synthetic",
              "configs": {k: {kk: vv for kk, vv in v.items() if kk != "scores"} for k, v in results.items()},
              "ratios": ratios}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.model} (bank {report['bank_size']}), {args.n} frames, {args.threads} thread(s), {report['images']}")
    print("decision = the score (edgead: before the map); total = with the anomaly map; x torch on totals")
    print(f"{'configuration':<20} {'backbone':>9} {'search':>9} {'decision':>9} {'total p50':>10} {'total p99':>10} "
          f"{'x torch':>8} {'score diff':>11} {'rho torch':>9}")
    for name, r in report["configs"].items():
        lt = r["latency_ms"]
        tot = _with_map(lt)
        print(f"{name:<20} {lt['backbone']['p50']:>7.2f}ms {lt['search']['p50']:>7.2f}ms {lt['total']['p50']:>7.2f}ms "
              f"{tot['p50']:>8.2f}ms {tot['p99']:>8.2f}ms {r['speedup_vs_torch_p50']:>7.2f}x "
              f"{r['score_max_rel_diff_vs_fp32_exact']:>10.2%} {r['spearman_vs_torch']:>9.4f}")
    print("\n" + "\n".join(f"{k:<40} {v:.3f}" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
