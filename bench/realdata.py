"""Export + evaluate on real datasets in MVTec layout; prints a table (and --json).

The sets are read from --root (default: $EDGEAD_SHARED_DATA, else ../shared/data beside the
repository).

    python bench/realdata.py --datasets magnetic_tile,elpv_poly,deeppcb \
        --config "size=224 coreset=0.01" --config "size=256 tiles=3x3 overlap=0.25"

Each config is space-separated key=value pairs of ExportConfig fields (size=HxW or N,
method, coreset, coreset_max, resize, roi=x,y,w,h or roi=auto, tiles=RxC, overlap, banks=shared|per_tile,
merge=mean|max, backbone, taps=4,10, target_dim). Both precisions are evaluated (latency: one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgead.evaluate import evaluate  # noqa: E402
from edgead.manifest import BACKBONE_FILES  # noqa: E402
from edgead.model import load_model  # noqa: E402
from edgead_export.auto import apply_spec  # noqa: E402
from edgead_export.pipeline import ExportConfig, export_model  # noqa: E402


def make_export_config(data: Path, out: Path, spec: str, threads: int | None = None) -> ExportConfig:
    """A config spec (export.auto's syntax) on top of the export defaults (224 px, coreset 0.01);
    ``threads`` (torch threads of the export) when given, else the export default."""
    base = ExportConfig(data=data, out=out, progress=False, keep_fp32=True,  # both precisions are evaluated
                        **({} if threads is None else {"threads": int(threads)}))
    return apply_spec(base, spec)


def unused_backbones(precision: str) -> set[str]:
    return {name for p, name in BACKBONE_FILES.items() if p != precision}


def markdown_table(rows: list[dict]) -> str:
    """Result rows (the --json lines) as a Markdown table, last row winning for repeated keys."""
    unique = {(r["dataset"], r["config"], r["precision"]): r for r in rows}
    lines = ["| dataset | config | precision | image AUROC | pixel AUROC | F1 @ thr | p50 ms (1 thread) | bank rows | artifact MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in unique.values():
        pa = "–" if r["pixel_auroc"] is None else f"{r['pixel_auroc']:.4f}"
        lines.append(f"| {r['dataset']} | `{r['config']}` | {r['precision']} | {r['image_auroc']:.4f} | {pa} | "
                     f"{r['f1_at_threshold']:.3f} | {r['latency_ms_p50']:.1f} | {r['bank_size']} | {r['artifact_mb']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(os.environ.get("EDGEAD_SHARED_DATA") or REPO.parent / "shared" / "data"),
                    help="folder holding the sets (default: $EDGEAD_SHARED_DATA)")
    ap.add_argument("--datasets", default="magnetic_tile,elpv_poly,deeppcb")
    ap.add_argument("--config", action="append", default=None)
    ap.add_argument("--json", type=Path, default=None, help="append result rows to this JSON-lines file")
    ap.add_argument("--keep", type=Path, default=None, help="keep artifacts under this folder")
    ap.add_argument("--precisions", default="fp32,int8", help="evaluate these precisions (default fp32,int8)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the export (default: the export's own)")
    ap.add_argument("--markdown", type=Path, default=None, help="only print this JSON-lines file as a Markdown table")
    args = ap.parse_args()
    if args.markdown:
        print(markdown_table([json.loads(line) for line in args.markdown.read_text().splitlines() if line.strip()]))
        return 0
    configs = args.config or ["size=224 coreset=0.01"]
    rows = []
    for name in args.datasets.split(","):
        data = args.root / name
        for conf_text in configs:
            with tempfile.TemporaryDirectory() as tmp:
                base = args.keep or Path(tmp)
                out = base / f"{name}-{conf_text.replace(' ', '_').replace('=', '').replace(',', '-')}"
                t0 = time.time()
                _, manifest = export_model(make_export_config(data, out, conf_text, args.threads))
                export_s = time.time() - t0
                for precision in args.precisions.split(","):
                    r = evaluate(load_model(out, precision=precision, threads=1), data)
                    row = {
                        "dataset": name, "config": conf_text, "precision": precision,
                        "image_auroc": round(r["image_auroc"], 4),
                        "pixel_auroc": None if r["pixel_auroc"] is None else round(r["pixel_auroc"], 4),
                        "f1_at_threshold": round(r["at_threshold"]["f1"], 3),
                        "latency_ms_p50": round(r["latency_ms_p50"], 1),
                        "bank_size": manifest.get("bank_size"),
                        "artifact_mb": round(sum(v["bytes"] for k, v in manifest["files"].items()
                                                 if k not in unused_backbones(precision)) / 1e6, 2),
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
