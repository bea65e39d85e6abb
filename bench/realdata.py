"""Export + evaluate on the real datasets in ../shared/data; prints a table (and --json).

    python bench/realdata.py --datasets magnetic_tile,elpv_poly,deeppcb \
        --config "size=224 coreset=0.1" --config "size=320 coreset=0.1"

Each config is space-separated key=value pairs of ExportConfig fields (size=HxW or N,
method, coreset, resize, roi=x,y,w,h, backbone, taps=4,10, target_dim). Both precisions are evaluated.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgead.cli_common import parse_roi, parse_size  # noqa: E402
from edgead.evaluate import evaluate  # noqa: E402
from edgead.model import load_model  # noqa: E402
from edgead.preprocess import PreprocessConfig  # noqa: E402
from export.pipeline import ExportConfig, export_model  # noqa: E402


def parse_config(text: str) -> dict:
    out = {}
    for item in text.split():
        k, v = item.split("=", 1)
        out[k] = v
    return out


def make_export_config(data: Path, out: Path, conf: dict) -> ExportConfig:
    pre = {"input_size": parse_size(conf.get("size", "224")), "resize_mode": conf.get("resize", "stretch")}
    if "roi" in conf:
        pre["roi"], pre["roi_units"] = parse_roi(conf["roi"])
    kw = {"preprocess": PreprocessConfig(**pre), "progress": False}
    if "method" in conf:
        kw["method"] = conf["method"]
    if "coreset" in conf:
        c = float(conf["coreset"])
        kw["coreset"] = int(c) if c > 1 else c
    if "backbone" in conf:
        kw["backbone"] = conf["backbone"]
    if "taps" in conf:
        kw["taps"] = [int(t) if t.isdigit() else t for t in conf["taps"].split(",")]
    if "target_dim" in conf:
        kw["target_dim"] = int(conf["target_dim"])
    return ExportConfig(data=data, out=out, **kw)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--datasets", default="magnetic_tile,elpv_poly,deeppcb")
    ap.add_argument("--config", action="append", default=None)
    ap.add_argument("--json", type=Path, default=None, help="append result rows to this JSON-lines file")
    ap.add_argument("--keep", type=Path, default=None, help="keep artifacts under this folder")
    args = ap.parse_args()
    configs = args.config or ["size=224 coreset=0.1"]
    rows = []
    for name in args.datasets.split(","):
        data = args.root / name
        for conf_text in configs:
            conf = parse_config(conf_text)
            with tempfile.TemporaryDirectory() as tmp:
                base = args.keep or Path(tmp)
                out = base / f"{name}-{conf_text.replace(' ', '_').replace('=', '').replace(',', '-')}"
                t0 = time.time()
                _, manifest = export_model(make_export_config(data, out, conf))
                export_s = time.time() - t0
                for precision in ("fp32", "int8"):
                    r = evaluate(load_model(out, precision=precision, threads=1), data)
                    row = {
                        "dataset": name, "config": conf_text, "precision": precision,
                        "image_auroc": round(r["image_auroc"], 4),
                        "pixel_auroc": None if r["pixel_auroc"] is None else round(r["pixel_auroc"], 4),
                        "f1_at_threshold": round(r["at_threshold"]["f1"], 3),
                        "latency_ms_p50": round(r["latency_ms_p50"], 1),
                        "bank_size": manifest.get("bank_size"),
                        "artifact_mb": round(sum(v["bytes"] for k, v in manifest["files"].items()
                                                 if k != ("backbone.onnx" if precision == "int8" else "backbone.int8.onnx")) / 1e6, 2),
                        "export_s": round(export_s, 1),
                        "int8_spearman": round(manifest["parity"]["int8_vs_fp32_spearman"], 4),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps(row) + "\n")
    print()
    hdr = f"{'dataset':<14} {'config':<34} {'prec':<5} {'imgAUROC':>8} {'pixAUROC':>8} {'F1@thr':>6} {'p50 ms':>7} {'bank':>7} {'MB':>6}"
    print(hdr)
    for r in rows:
        pa = "-" if r["pixel_auroc"] is None else f"{r['pixel_auroc']:.4f}"
        print(f"{r['dataset']:<14} {r['config']:<34} {r['precision']:<5} {r['image_auroc']:>8.4f} {pa:>8} "
              f"{r['f1_at_threshold']:>6.3f} {r['latency_ms_p50']:>7.1f} {r['bank_size']:>7} {r['artifact_mb']:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
