"""The stored threshold on real data: false rejects of test goods and defects caught, for the
threshold from out-of-fold good scores (--target-frr) and for the older held-out rule
(max / mean + 3 std of the held-out goods), from one export per set.

    python bench/threshold_frr.py --datasets casting,bsdata --keep /tmp/models --json rows.jsonl

Both thresholds come from the same artifact: the held-out goods are scored by the same bank
either way, and the manifest's ``score_stats`` keep their mean, std and max.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from edgead.evaluate import evaluate  # noqa: E402
from edgead.model import load_model  # noqa: E402
from edgead_export.pipeline import export_model  # noqa: E402
from realdata import make_export_config, unused_backbones  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def held_out_rule(stats: dict, n: int) -> float:
    """The older threshold from the held-out goods' mean, std (ddof 0 in score_stats) and max."""
    std = stats["good_std"] * np.sqrt(n / max(n - 1, 1))
    return float(max(stats["good_max"], stats["good_mean"] + 3 * std))


def at(labels: np.ndarray, scores: np.ndarray, thr: float) -> dict:
    good, bad = scores[labels == 0], scores[labels == 1]
    return {"false_rejects": int((good > thr).sum()), "good": int(len(good)),
            "missed": int((bad <= thr).sum()), "defective": int(len(bad))}


def test_goods_threshold(labels: np.ndarray, scores: np.ndarray, frr: float) -> float:
    """The threshold that rejects at most ``frr`` of the test goods (an oracle: it looks at the
    test images; what a threshold set on the line's own goods could reach at best)."""
    good = np.sort(scores[labels == 0])[::-1]
    return float(good[min(int(np.floor(frr * len(good))), len(good) - 1)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--datasets", default="magnetic_tile,elpv_poly,deeppcb,casting,bsdata")
    ap.add_argument("--config", default="size=224", help="a candidate spec, or 'auto' (export --auto)")
    ap.add_argument("--keep", type=Path, required=True, help="artifacts go here (reused when present)")
    ap.add_argument("--json", type=Path, default=None, help="append result rows to this JSON-lines file")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--candidates", default=None,
                    help="with --config auto: the candidate specs, ';'-separated (export --candidates)")
    ap.add_argument("--tag", default=None, help="artifact folder suffix (default: from --config)")
    args = ap.parse_args()
    for name in args.datasets.split(","):
        out = args.keep / f"{name}-{args.tag or args.config.replace(' ', '_').replace('=', '')}"
        t0, cpu0 = time.time(), cpu_seconds()
        export_cpu_s = None
        if (out / "manifest.json").is_file():
            manifest, export_s = json.loads((out / "manifest.json").read_text()), None
        elif args.config == "auto":  # `export --auto`, its default candidates unless --candidates
            from edgead_export.auto import auto_export

            candidates = None if args.candidates is None else [c.strip() for c in args.candidates.split(";")]
            auto_export(make_export_config(args.root / name, out, "", args.threads), candidates)
            manifest, export_s = json.loads((out / "manifest.json").read_text()), round(time.time() - t0, 1)
            export_cpu_s = round(cpu_seconds() - cpu0, 1)
        else:
            _, manifest = export_model(make_export_config(args.root / name, out, args.config, args.threads))
            export_s, export_cpu_s = round(time.time() - t0, 1), round(cpu_seconds() - cpu0, 1)
        for precision in ("fp32", "int8"):
            r = evaluate(load_model(out, precision=precision, threads=1), args.root / name)
            labels, scores = np.array(r["_scores"]["labels"]), np.array(r["_scores"]["scores"])
            old = held_out_rule(manifest["score_stats"][precision], manifest["holdout_images"])
            new = manifest["thresholds"][precision]
            row = {"dataset": name, "config": args.config, "precision": precision,
                   "image_auroc": round(r["image_auroc"], 4),
                   "pixel_auroc": None if r["pixel_auroc"] is None else round(r["pixel_auroc"], 4),
                   "latency_ms_p50": round(r["latency_ms_p50"], 1), "export_s": export_s,
                   "export_cpu_s": export_cpu_s, "candidates": args.candidates,
                   "artifact_mb": round(sum(v["bytes"] for k, v in manifest["files"].items()
                                            if k not in unused_backbones(precision)) / 1e6, 2),
                   "default_precision": manifest["default_precision"],
                   "auto_chosen": (manifest.get("auto") or {}).get("chosen"),
                   "held_out_rule": {"threshold": old, **at(labels, scores, old)},
                   "test_goods_1pct_oracle": {"threshold": (o := test_goods_threshold(labels, scores, 0.01)),
                                              **at(labels, scores, o)},
                   "target_frr_rule": {"threshold": new, **at(labels, scores, new),
                                       "estimate": (manifest.get("false_rejects") or {}).get(precision)}}
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
