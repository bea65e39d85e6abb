"""`edgead eval`: image AUROC, pixel AUROC (when masks exist), F1 and confusion at the stored threshold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgead.errors import EdgeadError
from edgead.images import list_images, read_image
from edgead.metrics_math import auroc, confusion, f1_optimal_threshold, roc_curve
from edgead.model import InspectionModel

PIXEL_EVAL_SIDE = 128  # maps and masks are compared at most this many pixels on a side


@dataclass
class TestImage:
    path: Path
    label: int  # 0 good, 1 defective
    defect: str
    mask: Path | None


def find_test_images(root: str | Path) -> list[TestImage]:
    """MVTec layout: test/good (label 0), test/<defect> (label 1), ground_truth/<defect>/<stem>_mask.png."""
    root = Path(root)
    test = root / "test"
    if not test.is_dir():
        raise EdgeadError(f"{test}: not found (expected an MVTec-style category root with test/good and test/<defect>)")
    items = []
    for sub in sorted(p for p in test.iterdir() if p.is_dir()):
        label = 0 if sub.name == "good" else 1
        for img in list_images(sub):
            mask = None
            if label:
                for suffix in ("_mask.png", ".png"):
                    cand = root / "ground_truth" / sub.name / f"{img.stem}{suffix}"
                    if cand.is_file():
                        mask = cand
                        break
            items.append(TestImage(img, label, sub.name, mask))
    if not any(i.label == 0 for i in items) or not any(i.label == 1 for i in items):
        raise EdgeadError(f"{test}: needs both good and defective images for AUROC")
    return items


def _small(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    s = min(1.0, PIXEL_EVAL_SIDE / max(h, w))
    return cv2.resize(a, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def evaluate(model: InspectionModel, root: str | Path, progress: bool = False) -> dict:
    """Score every test image; return metrics and per-image scores."""
    items = find_test_images(root)
    has_masks = any(i.mask is not None for i in items)
    scores, latencies, pix_scores, pix_labels = [], [], [], []
    iterator = items
    if progress:
        import sys

        try:
            from tqdm import tqdm

            iterator = tqdm(items, desc="eval", unit="img", file=sys.stderr)
        except ImportError:
            pass
    for item in iterator:
        image = read_image(item.path)
        res = model.score(image, with_map=has_masks, defer_map=False)  # every map is read
        scores.append(res.score)
        latencies.append(res.timings_ms["total"])
        if has_masks:
            if item.label and item.mask is None:
                continue
            mask = np.zeros(image.shape[:2], np.uint8) if item.mask is None else cv2.imread(str(item.mask), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise EdgeadError(f"{item.mask}: unreadable mask")
            if mask.shape != image.shape[:2]:
                mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
            pix_scores.append(_small(res.anomaly_map).ravel())
            pix_labels.append((_small(mask) > 127).ravel())
    labels = np.array([i.label for i in items])
    scores = np.array(scores)
    thr = model.threshold
    best_thr, best_f1 = f1_optimal_threshold(labels, scores)
    result = {
        "model": model.name, "precision": model.precision, "data": str(root), "images": len(items),
        "good": int((labels == 0).sum()), "defective": int(labels.sum()),
        "image_auroc": auroc(labels, scores),
        "pixel_auroc": auroc(np.concatenate(pix_labels), np.concatenate(pix_scores)) if pix_scores else None,
        "threshold": thr, "at_threshold": confusion(labels, scores, thr),
        "best_f1": best_f1, "best_f1_threshold": best_thr,
        "latency_ms_p50": float(np.percentile(latencies, 50)),
        "per_defect_auroc": {
            d: auroc(np.r_[np.zeros((labels == 0).sum()), np.ones(sum(1 for i in items if i.defect == d))],
                     np.r_[scores[labels == 0], [s for s, i in zip(scores, items) if i.defect == d]])
            for d in sorted({i.defect for i in items if i.label})
        },
    }
    result["_scores"] = {"labels": labels.tolist(), "scores": scores.tolist(), "paths": [str(i.path) for i in items]}
    return result


def format_table(r: dict) -> str:
    c = r["at_threshold"]
    lines = [
        f"model {r['model']} ({r['precision']}) on {r['data']}: {r['images']} images ({r['good']} good, {r['defective']} defective)",
        f"  image AUROC      {r['image_auroc']:.4f}",
        f"  pixel AUROC      {r['pixel_auroc']:.4f}" if r["pixel_auroc"] is not None else "  pixel AUROC      (no masks)",
        f"  threshold        {r['threshold']:.4f}: F1 {c['f1']:.3f}  precision {c['precision']:.3f}  recall {c['recall']:.3f}",
        f"  confusion        TP {c['tp']}  FP {c['fp']}  FN {c['fn']}  TN {c['tn']}",
        f"  best F1          {r['best_f1']:.3f} at threshold {r['best_f1_threshold']:.4f}",
        f"  latency p50      {r['latency_ms_p50']:.1f} ms",
    ]
    for d, a in r["per_defect_auroc"].items():
        lines.append(f"  AUROC {d:<10} {a:.4f}")
    return "\n".join(lines)


def write_plots(r: dict, out_dir: str | Path) -> list[Path]:
    """ROC curve and score histogram PNGs (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EdgeadError("--plots needs matplotlib (pip install matplotlib)") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = np.array(r["_scores"]["labels"])
    scores = np.array(r["_scores"]["scores"])
    fpr, tpr = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, lw=2, label=f"AUROC {r['image_auroc']:.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {r['model']}")
    ax.legend(loc="lower right")
    roc = out_dir / "roc.png"
    fig.savefig(roc, dpi=100, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(scores.min(), scores.max(), 40)
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="good")
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="defective")
    ax.axvline(r["threshold"], color="k", ls="--", label="threshold")
    ax.set(xlabel="anomaly score", ylabel="images")
    ax.legend()
    hist = out_dir / "score_histogram.png"
    fig.savefig(hist, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [roc, hist]
