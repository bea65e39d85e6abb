"""`edgead export --auto`: export a few candidate configurations, keep the best within a latency budget.

Each candidate (input size, tiling, coreset, ...) is exported in full, then judged on the
held-out good images (the export's own seeded split) plus ``--val-defects`` when given. Without
real defects the AUROC is against *pseudo-defects* (small blobs and scratches drawn on the
held-out good images): a proxy, and the report says so. Latency is the p50 of one-thread
scoring on this machine times ``PI_CPU_FACTOR``; the best AUROC within ``--budget-ms`` wins
(ties within ``AUROC_TIE`` go to the faster candidate).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from edgead.artifact import update_manifest
from edgead.errors import ConfigError
from edgead.images import list_images, read_image, resolve_train_folder
from edgead.metrics_math import auroc
from edgead.model import InspectionModel
from edgead_export.pipeline import ExportConfig, export_model, log, split_holdout
from edgead_export.pseudo_defects import small_pseudo_defect

# Pi 5 (Cortex-A76, 2.4 GHz) one-thread time / this workstation's one-thread time for the
# INT8 backbone + search: an estimate (docs/benchmarks.md, "Raspberry Pi"), deliberately on the
# slow side; measure with `edgead bench` on the target and pass --pi-factor (a Pi 4 is slower).
PI_CPU_FACTOR = 5.0
AUROC_TIE = 0.002
LATENCY_IMAGES = 10
DEFAULT_CANDIDATES = (
    "size=224",
    "size=320",
    "size=448",
    "size=224 tiles=2x2",
    "size=320 tiles=2x2",
    # the recipes measured best on public industrial sets (docs/benchmarks.md): deeper, coarser
    # features for surface textures, finer ones and upsampled tiles for boards
    "backbone=efficientnet-lite1 taps=14,19,s8 size=224 score=topk_mean topk=40",
    # the same with histogram equalisation: it helps some textures and hurts others, so a per-line
    # choice
    "backbone=efficientnet-lite1 taps=14,19,s8 size=224 score=topk_mean topk=40 photometric=equalize",
    "size=320 tiles=3x3 taps=2,4,10,s8 coreset_max=5000 score=topk_mean topk=20",
)


def apply_spec(base: ExportConfig, spec: str) -> ExportConfig:
    """``base`` with the fields a candidate spec names replaced (keys: edgead_export.config)."""
    return base.with_spec(spec)


def judge(model: InspectionModel, hold: list[Path], defects: list[Path], seed: int) -> dict:
    """AUROC (real or pseudo defects) and one-thread latency p50 of one candidate artifact."""
    rng = np.random.default_rng(seed)
    good_scores, bad_scores, latencies = [], [], []
    for p in hold:
        img = read_image(p)
        res = model.score(img, with_map=False)
        good_scores.append(res.score)
        latencies.append(res.timings_ms["total"])
        if not defects:
            bad_scores.append(model.score(small_pseudo_defect(img, rng, model.preprocess_cfg), with_map=False).score)
    for p in defects:
        bad_scores.append(model.score(read_image(p), with_map=False).score)
    for p in hold[: max(0, LATENCY_IMAGES - len(hold))]:
        latencies.append(model.score(read_image(p), with_map=False).timings_ms["total"])
    labels = np.r_[np.zeros(len(good_scores)), np.ones(len(bad_scores))]
    return {"auroc": auroc(labels, np.r_[good_scores, bad_scores]),
            "latency_ms_p50": float(np.percentile(latencies[1:] or latencies, 50))}


def choose(results: list[dict], budget_ms: float | None) -> tuple[dict, bool]:
    """(winner, within_budget): best AUROC within the budget, ties go to the faster one;
    the fastest candidate when none fits."""
    fits = [r for r in results if budget_ms is None or r["pi_ms_estimate"] <= budget_ms]
    if not fits:
        return min(results, key=lambda r: r["pi_ms_estimate"]), False
    best = max(r["auroc"] for r in fits)
    return min((r for r in fits if r["auroc"] >= best - AUROC_TIE), key=lambda r: r["pi_ms_estimate"]), True


def auto_export(base: ExportConfig, candidates: list[str] | None = None, budget_ms: float | None = None,
                pi_factor: float = PI_CPU_FACTOR) -> tuple[Path, dict]:
    """Export every candidate, write the chosen one to ``base.out`` (its manifest gains ``auto``)."""
    candidates = list(candidates or DEFAULT_CANDIDATES)
    if budget_ms is not None and budget_ms <= 0:
        raise ConfigError(f"--budget-ms {budget_ms}: expected a positive number of milliseconds")
    if pi_factor <= 0:
        raise ConfigError(f"--pi-factor {pi_factor}: expected a positive factor")
    configs = [apply_spec(base, spec) for spec in candidates]  # refuse bad specs before any work
    out = Path(base.out).resolve()
    work = out.parent / f".{out.name}.auto"
    shutil.rmtree(work, ignore_errors=True)
    paths = list_images(resolve_train_folder(base.data))
    _, hold = split_holdout(paths, base.holdout, base.min_holdout, base.seed)
    defects = list_images(base.val_defects) if base.val_defects else []
    basis = (f"{len(hold)} held-out good + {len(defects)} --val-defects images" if defects else
             f"GOOD IMAGES ONLY: {len(hold)} held-out good images vs pseudo-defects drawn on them "
             "(a proxy; pass --val-defects for a choice on real defects)")
    results = []
    try:
        for i, (spec, cfg) in enumerate(zip(candidates, configs)):
            log(f"auto [{i + 1}/{len(candidates)}]: {spec}")
            t0 = time.time()
            # candidates are judged without the out-of-fold threshold (it does not change the
            # ranking and costs a pass over every training image); the winner is exported with it
            artifact, manifest = export_model(cfg.updated(out=work / f"candidate-{i}", name=cfg.name or out.name,
                                                          target_frr=None))
            model = InspectionModel(artifact, threads=1)
            r = {"spec": spec, "cfg": cfg, **judge(model, hold, defects, base.seed), "precision": model.precision,
                 "bank_size": manifest.get("bank_size"), "export_seconds": round(time.time() - t0, 1),
                 "bytes": sum(v["bytes"] for k, v in manifest["files"].items()), "path": artifact}
            r["pi_ms_estimate"] = r["latency_ms_p50"] * pi_factor
            results.append(r)
            log(f"auto [{i + 1}/{len(candidates)}]: AUROC {r['auroc']:.4f}, {r['latency_ms_p50']:.1f} ms here "
                f"-> ~{r['pi_ms_estimate']:.0f} ms on the Pi, bank {r['bank_size']}")
        winner, within = choose(results, budget_ms)
        if not within:
            log(f"WARNING: no candidate fits --budget-ms {budget_ms:g} on the Pi (estimate); taking the fastest")
        if base.target_frr is None:
            _replace_dir(winner["path"], out)
        else:
            log(f"auto: exporting {winner['spec']!r} with the threshold for false-reject rate {base.target_frr:g}")
            export_model(winner["cfg"].updated(out=out, name=winner["cfg"].name or out.name))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "basis": basis, "budget_ms": budget_ms, "pi_factor": pi_factor, "within_budget": within,
        "chosen": winner["spec"],
        "candidates": [{k: v for k, v in r.items() if k not in ("path", "cfg")} for r in results],
    }
    log(f"auto: chose {winner['spec']!r} (AUROC {winner['auroc']:.4f} on {basis})")
    return out, update_manifest(out, auto=report)


def _replace_dir(src: Path, dst: Path) -> None:
    old = None
    if dst.exists():
        old = dst.parent / f".{dst.name}.old-{os.getpid()}-{time.time_ns()}"
        os.rename(dst, old)
    os.rename(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
