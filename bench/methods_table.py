"""The methods side by side on the real development sets: export, eval (both precisions), bench.

    nice -n 10 env OMP_NUM_THREADS=1 python bench/methods_table.py --json methods.jsonl \
        --datasets magnetic_tile,elpv_poly,deeppcb,casting,bsdata --methods patchcore,padim,spade,simplenet
    python bench/methods_table.py --markdown methods.jsonl

Each set's training goods are capped at --train-cap images and its test split at --test-cap
(half good, half defective), evenly spaced in name order. One JSON line per (set, method) is appended as soon as it is measured
and a rerun skips what the file already holds, so a long run can stop and resume. Every export,
eval and bench runs on one thread. PatchCore and SimpleNet learn on the same patch features:
they are extracted once per set and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import edgead_export.pipeline as pipeline  # noqa: E402
from edgead.bench import run_bench  # noqa: E402
from edgead.evaluate import evaluate  # noqa: E402
from edgead.images import list_images  # noqa: E402
from edgead.model import load_model  # noqa: E402
from edgead_export.config import ExportConfig  # noqa: E402
from quality_sweep import evenly  # noqa: E402

# Pi 5 estimate: a row's times over its own backbone stage (same run, so the host's load cancels)
# times the backbone's Pi 5 estimate: 2.35 ms quiet here (Latency per stage) x 2.7 (this core's
# FP32 throughput over a Cortex-A76's, Raspberry Pi section); FP32 backbone: 1.7x the INT8 one
# (measured alternating with it in one run, bench/simplenet_ratio.py)
PI5_BACKBONE_MS = {"int8": 2.35 * 2.7, "fp32": 2.35 * 2.7 * 1.7}
BENCH_FRAMES = 40


def capped_root(data: Path, cap: int, test_cap: int, into: Path) -> Path:
    """An MVTec root (links) with ``cap`` of ``data``'s training goods and ``test_cap`` test
    images, half good, half defective across the defect folders, evenly spaced in name order."""
    root = into / data.name
    chosen = {"train/good": evenly(list_images(data / "train" / "good"), cap),
              "test/good": evenly(list_images(data / "test" / "good"), test_cap // 2)}
    bad = sorted(p for d in (data / "test").iterdir() if d.is_dir() and d.name != "good" for p in list_images(d))
    for p in evenly(bad, test_cap - len(chosen["test/good"])):
        chosen.setdefault(f"test/{p.parent.name}", []).append(p)
    for folder, paths in chosen.items():
        (root / folder).mkdir(parents=True)
        for p in paths:
            (root / folder / p.name).symlink_to(p)
    if (data / "ground_truth").exists():
        (root / "ground_truth").symlink_to(data / "ground_truth")
    return root


class FeatureCache:
    """extract_features memoised on (patch-feature kind, images): PatchCore and SimpleNet share one pass."""

    def __init__(self):
        self.real, self.store = pipeline.extract_features, {}

    def __call__(self, graph, paths, cfg, **kw):
        key = (graph.method, graph.channel_index is None, tuple(map(str, paths)), repr(cfg), repr(kw.get("tiling")))
        if key not in self.store:
            self.store = {k: v for k, v in self.store.items() if k[2] == key[2]}  # one set at a time
            self.store[key] = self.real(graph, paths, cfg, **kw)
        return self.store[key]


def measure(name: str, root: Path, method: str, out: Path, spec: str) -> dict:
    cfg = ExportConfig(data=root, out=out, method=method, threads=1, progress=False, keep_fp32=True)
    if spec:
        cfg = cfg.with_spec(spec)
    t0 = time.time()
    _, manifest = pipeline.export_model(cfg)
    row = {"dataset": name, "method": method, "spec": spec, "export_s": round(time.time() - t0, 1),
           "training_images": manifest["training_images"], "default_precision": manifest["default_precision"],
           "int8_parity": manifest["parity"]}
    fit = manifest.get("simplenet", {}).get("train_seconds") or manifest.get("patchcore", {}).get("coreset_seconds")
    row["fit_s"] = fit
    for precision in ("fp32", "int8"):
        r = evaluate(load_model(out, precision=precision, threads=1), root)
        c = r["at_threshold"]
        row[precision] = {"image_auroc": round(r["image_auroc"], 4),
                          "pixel_auroc": None if r["pixel_auroc"] is None else round(r["pixel_auroc"], 4),
                          "false_rejects": c["fp"], "good": r["good"], "misses": c["fn"], "defective": r["defective"]}
    default = manifest["default_precision"]
    b = run_bench(out, images=root / "test" / "good", n=BENCH_FRAMES, warmup=5, threads=1, precision=default)
    lat = b["latency_ms"]
    row["bench"] = {"precision": default, "decision_p50": round(lat["total"]["p50"], 2),
                    "with_map_p50": round(lat["total_with_map"]["p50"], 2),
                    "backbone_p50": round(lat["backbone"]["p50"], 2), "machine": b["machine"]}
    unused = {"backbone.onnx"} if default == "int8" else {"backbone.int8.onnx"}
    row["artifact_mb"] = round(sum(v["bytes"] for k, v in manifest["files"].items() if k not in unused) / 1e6, 2)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| set | method | image AUROC int8 / fp32 | pixel AUROC | FR / good, miss / defective | "
             "decision / with map, ms here (x backbone) | Pi 5 est., ms | artifact MB | export s (fit) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted({(r["dataset"], r["method"]): r for r in rows}.values(), key=lambda r: (r["dataset"], r["method"])):
        d = r[r["default_precision"]]
        pa = "–" if d["pixel_auroc"] is None else f"{d['pixel_auroc']:.3f}"
        b = r["bench"]
        dec, wm = b["decision_p50"] / b["backbone_p50"], b["with_map_p50"] / b["backbone_p50"]
        pi = PI5_BACKBONE_MS[b["precision"]]
        prec = "" if r["default_precision"] == "int8" else " (FP32: INT8 failed parity)"
        lines.append(
            f"| {r['dataset']} | {r['method']}{prec} | {r['int8']['image_auroc']:.3f} / {r['fp32']['image_auroc']:.3f} | {pa} | "
            f"{d['false_rejects']}/{d['good']}, {d['misses']}/{d['defective']} | "
            f"{b['decision_p50']:.0f} / {b['with_map_p50']:.0f} ({dec:.2f} / {wm:.2f}) | "
            f"~{dec * pi:.0f} / ~{wm * pi:.0f} | {r['artifact_mb']:.2f} | "
            f"{r['export_s']:.0f}" + (f" ({r['fit_s']:.0f})" if r.get("fit_s") else "") + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(os.environ.get("EDGEAD_SHARED_DATA") or REPO.parent / "shared" / "data"))
    ap.add_argument("--datasets", default="magnetic_tile,elpv_poly,deeppcb,casting,bsdata")
    ap.add_argument("--methods", default="patchcore,padim,spade,simplenet")
    ap.add_argument("--spec", action="append", default=[], metavar="METHOD:SPEC",
                    help="extra export settings of one method, e.g. 'simplenet:simplenet_steps=500'")
    ap.add_argument("--train-cap", type=int, default=200)
    ap.add_argument("--test-cap", type=int, default=200, help="test images per set, half good, half defective")
    ap.add_argument("--json", type=Path, default=Path("methods.jsonl"))
    ap.add_argument("--markdown", type=Path, default=None, help="only print this JSON-lines file as a table")
    args = ap.parse_args()
    if args.markdown:
        print(markdown([json.loads(x) for x in args.markdown.read_text().splitlines() if x.strip()]))
        return 0
    specs = dict(s.split(":", 1) for s in args.spec)
    done = set()
    if args.json.exists():
        done = {(r["dataset"], r["method"]) for r in map(json.loads, args.json.read_text().splitlines()) if r}
    pipeline.extract_features = FeatureCache()
    np.seterr(all="ignore")
    for name in args.datasets.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            root = capped_root(args.root / name, args.train_cap, args.test_cap, Path(tmp))
            for method in args.methods.split(","):
                if (name, method) in done:
                    continue
                row = measure(name, root, method, Path(tmp) / f"{name}-{method}", specs.get(method, ""))
                row["train_cap"], row["test_cap"] = args.train_cap, args.test_cap
                print(json.dumps(row), flush=True)
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
