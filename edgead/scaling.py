"""How latency and memory grow with the input side (``edgead bench --resolutions``).

Each side is benched in its own child process (``python -m edgead.bench``), so each peak RSS
belongs to that configuration alone. The artifact for a side is either

* refitted on the given images (``edgead export`` at that size; needs the workstation extra,
  i.e. torch), or
* the base artifact with a synthetic memory bank of the shape a refit would give (rows =
  coreset ratio x training images x patches per image, capped as export caps it; values
  resampled from the real bank), which needs a backbone exported with a free input size.

Runtime and memory are fitted with least squares as ``a + b*s + c*s^2`` of the side ``s``
(the compute of a CNN and of the patch search grows with the pixel count, s^2) and evaluated
at the side of a square frame with a 5 MP sensor's pixel count (2592 x 1944).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgead import workstation
from edgead.bank.hnsw_file import strip_vectors
from edgead.bank.store import load_bank, save_bank
from edgead.errors import ConfigError, EdgeadError
from edgead.manifest import BACKBONE_FILES, Manifest, gaussian_file, index_file
from edgead.orientations import bank_share
from edgead.scorer.search.hnsw import build_hnsw_index
from edgead.scorer.search.registry import HNSW_CROSSOVER

SENSOR_5MP = (1944, 2592)  # (height, width) of a 5 MP camera (e.g. OV5647)
CHILD_FRAMES = 20  # frames per side (large sides are slow: the search grows with s^2 x bank)
FITTED = ("total_p50_ms", "decision_p50_ms", "backbone_p50_ms", "search_p50_ms", "peak_rss_mib")


def parse_sides(text: str) -> list[int]:
    try:
        sides = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ConfigError(f"--resolutions {text!r}: expected comma-separated sides, e.g. 224,320,448") from None
    if not sides or any(s <= 0 or s % 32 for s in sides):
        raise ConfigError(f"--resolutions {text!r}: sides must be positive multiples of 32")
    return sides


def quadratic_fit(sides: list[float], values: list[float]) -> dict[str, float]:
    """Least-squares ``a + b*s + c*s^2`` with a, b, c >= 0 (time and memory do not shrink as
    the input grows; an unconstrained fit through a few noisy points can bend down and
    extrapolate to negative figures), and its R^2. Exact for three coefficients: the best of
    the unconstrained fits over every subset of {1, s, s^2} whose coefficients are all >= 0."""
    s, y = np.asarray(sides, dtype=np.float64), np.asarray(values, dtype=np.float64)
    basis = np.stack([np.ones_like(s), s, s * s], axis=1)
    best, best_err = np.zeros(3), float(((y - 0) ** 2).sum())
    for subset in ([0, 1, 2], [0, 2], [1, 2], [0, 1], [2], [1], [0]):
        coef, *_ = np.linalg.lstsq(basis[:, subset], y, rcond=None)
        if (coef >= 0).all():
            full = np.zeros(3)
            full[subset] = coef
            err = float(((y - basis @ full) ** 2).sum())
            if err < best_err - 1e-12 * max(1.0, best_err):
                best, best_err = full, err
    spread = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - best_err / spread if spread > 0 else 1.0
    return {"a": float(best[0]), "b": float(best[1]), "c": float(best[2]), "r2": r2}


def evaluate_fit(fit: dict[str, float], side: float) -> float:
    return fit["a"] + fit["b"] * side + fit["c"] * side * side


def equivalent_side(shape: tuple[int, int]) -> float:
    """Side of the square input with the same pixel count as ``shape``."""
    return math.sqrt(shape[0] * shape[1])


def export_available() -> bool:
    return workstation.available("refit")


def backbone_accepts_any_size(model_dir: Path, manifest: Manifest) -> bool:
    import onnxruntime as ort

    name = BACKBONE_FILES[manifest.default_precision]
    session = ort.InferenceSession(str(model_dir / name), providers=["CPUExecutionProvider"])
    return not all(isinstance(d, int) for d in session.get_inputs()[0].shape[2:])


def _stride(manifest: Manifest) -> float:
    """Input pixels per patch-feature cell."""
    return manifest.preprocess.input_size[0] / manifest.backbone.feature_grid[0]


def refit_bank_rows(manifest: Manifest, side: int) -> int:
    """Memory-bank rows an export of the same images at ``side`` would give."""
    pc = manifest.pc
    patches = (manifest.training_images or 1) * manifest.maps_per_image * round(side / _stride(manifest)) ** 2
    coreset = bank_share(pc.coreset if pc.coreset is not None else 0.1, manifest.orientations)
    rows = int(coreset) if coreset > 1 else max(1, math.ceil(coreset * patches))
    return min(rows, pc.coreset_max) if pc.coreset_max else rows


def _synthetic_scorer(model_dir: Path, base: Manifest, manifest: dict, side: int, writer, seed: int,
                      hnsw: str) -> None:
    """Write a PatchCore bank / PaDiM Gaussians of the right shape for ``side`` and record them
    in ``manifest`` (the new artifact's, as JSON); ``hnsw`` (yes | auto | no) says when to build
    an index, as export's --hnsw."""
    rng = np.random.default_rng(seed)
    if base.method == "patchcore":
        bank_base, quantized = load_bank(model_dir, base.files)
        rows = refit_bank_rows(base, side)
        pick = rng.integers(0, len(bank_base), rows)
        noise = rng.normal(0, 1, (rows, bank_base.shape[1])) * (0.1 * bank_base.std(axis=0))
        dtype = "int8" if quantized is not None else base.pc.bank_dtype or "float16"
        _, bank = save_bank(writer.staging, np.clip(bank_base[pick] + noise, 0, None), dtype)
        manifest["bank_size"] = rows
        if hnsw == "yes" or (hnsw == "auto" and rows > HNSW_CROSSOVER):
            index = writer.path(index_file())
            manifest["patchcore"]["hnsw"] = build_hnsw_index(bank, index, threads=os.cpu_count() or 1)
            strip_vectors(index, bank)  # as export writes it
        return
    with np.load(model_dir / gaussian_file()) as g:
        mean, precision = g["mean"], g["precision"]
    positions = round(side / _stride(base)) ** 2
    idx = np.resize(np.arange(len(mean)), positions)
    np.savez(writer.path(gaussian_file()), mean=mean[idx], precision=precision[idx])
    manifest["bank_size"] = positions


def write_synthetic_artifact(model_dir: Path, side: int, out: Path, search: str = "auto", seed: int = 0) -> Path:
    """The base artifact at input ``side`` with a synthetic bank (its backbone files linked)."""
    from edgead.artifact import ArtifactWriter, read_manifest, read_manifest_json

    base = read_manifest(model_dir)
    if base.tiling.count > 1:
        raise ConfigError("--resolutions with a synthetic bank: tiled artifacts are not supported; pass --images "
                          "with the export extra installed to refit instead")
    manifest = read_manifest_json(model_dir)
    manifest.pop("files")
    manifest["preprocess"]["input_size"] = [side, side]
    manifest["backbone"]["feature_grid"] = [round(side / _stride(base))] * 2
    base_index = base.method == "patchcore" and manifest.setdefault("patchcore", {}).pop("hnsw", None) is not None
    # the base was exported with --hnsw yes when it has an index below the crossover
    hnsw = "no" if search == "exact" else ("yes" if base_index and (base.bank_size or 0) <= HNSW_CROSSOVER
                                            else "auto")
    with ArtifactWriter(out) as writer:
        for name in BACKBONE_FILES.values():
            if (model_dir / name).is_file():
                os.symlink((model_dir / name).resolve(), writer.path(name))
        _synthetic_scorer(model_dir, base, manifest, side, writer, seed, hnsw)
        manifest["synthetic_bank"] = True
        return writer.commit(manifest)


def bench_child(model_dir: Path, args, precision: str | None, n: int) -> dict:
    """One ``edgead bench --json`` in a fresh process (its own peak RSS)."""
    cmd = [sys.executable, "-m", "edgead.bench", "--model", str(model_dir), "--n", str(n), "--warmup", "2",
           "--threads", str(args.threads), "--search", args.search, "--json"]
    cmd += ["--precision", precision] if precision else []
    cmd += ["--images", str(args.images)] if args.images else []
    cmd += ["--no-map"] if args.no_map else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EdgeadError(f"bench of {model_dir} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scaling_study(args, sides: list[int], progress: bool = False) -> dict:
    """Bench every side; fit and extrapolate. ``args``: the parsed ``edgead bench`` arguments."""
    from edgead.artifact import read_manifest

    manifest = read_manifest(args.model)
    precision = args.precision or manifest.default_precision
    if args.images is not None and export_available() and not args.synthetic_bank:
        mode = "refit"
    elif backbone_accepts_any_size(args.model, manifest):
        mode = "synthetic-bank"
    elif export_available():
        raise ConfigError("--resolutions: this artifact's backbone was exported for one input size; pass --images "
                          "DIR to refit it at each size (or re-export it with this edgead: free input size)")
    else:
        raise ConfigError(
            "--resolutions: this artifact's backbone was exported for one input size and torch (the export extra) "
            "is not installed here, so it can neither be refitted nor run at other sizes; run the study on the "
            "workstation with --images, or re-export the model with this edgead (free input size)")
    note = None if mode == "refit" else (
        "synthetic bank: the base artifact's backbone with a memory bank of the size a refit would give"
        + ("" if args.images is None or args.synthetic_bank else " (the export extra is not installed here, so no refit)"))
    points = []
    n = max(3, min(args.n, CHILD_FRAMES))
    with tempfile.TemporaryDirectory(prefix="edgead-scaling-") as tmp:
        for side in sides:
            if progress:
                print(f"resolution {side}: {'exporting' if mode == 'refit' else 'synthetic bank'}...",
                      file=sys.stderr, flush=True)
            out = Path(tmp) / f"side{side}"
            if mode == "refit":
                workstation.feature("refit")(manifest, args.images, side, out, args.threads)
            else:
                write_synthetic_artifact(args.model, side, out, args.search)
            r = bench_child(out, args, precision, n)
            lat = r["latency_ms"]
            points.append({"side": side, "bank_size": r["bank_size"], "search": r["search"], "frames": n,
                           "total_p50_ms": lat["total_with_map"]["p50"], "total_p99_ms": lat["total_with_map"]["p99"],
                           "decision_p50_ms": lat["total"]["p50"],
                           "preprocess_p50_ms": lat["preprocess"]["p50"], "backbone_p50_ms": lat["backbone"]["p50"],
                           "search_p50_ms": lat["search"]["p50"], "score_p50_ms": lat["score"]["p50"],
                           "peak_rss_mib": r["memory_mib"]["peak_rss"],
                           "artifact_loaded_bytes": r["artifact_bytes"]["loaded"]})
    study = {"mode": mode, "note": note, "precision": precision, "points": points}
    if len(points) >= 3:
        s5 = equivalent_side(SENSOR_5MP)
        fits = {key: quadratic_fit([p["side"] for p in points], [p[key] for p in points]) for key in FITTED}
        study["fit"] = fits
        study["extrapolation"] = {
            "sensor": list(SENSOR_5MP[::-1]), "equivalent_side": s5,
            **{key: evaluate_fit(fit, s5) for key, fit in fits.items()},
            "bank_size": refit_bank_rows(manifest, round(s5)) if manifest.method == "patchcore" else None,
            "caveat": "extrapolated far outside the measured sides; the search costs patches x bank rows, which "
                      "grows as s^4 until the bank reaches coreset_max and as s^2 after: measure sides beyond "
                      "the cap for a fair extrapolation",
        }
    else:
        study["fit"] = None
        study["note"] = ((note + "; ") if note else "") + "three or more sides are needed for the quadratic fit"
    return study


def format_scaling(study: dict) -> str:
    lines = [f"resolution study ({study['mode']}, {study['precision']}, {study['points'][0]['frames']} frames per side)"]
    if study.get("note"):
        lines.append(f"  {study['note']}")
    lines.append(f"  {'side':>5} {'bank':>7} {'search':>6} {'decision':>10} {'+ map p50':>10} {'backbone':>9} "
                 f"{'NN search':>10} {'peak RSS':>9}")
    for p in study["points"]:
        lines.append(f"  {p['side']:>5} {p['bank_size']:>7} {p['search']:>6} {p.get('decision_p50_ms', 0):>8.1f}ms "
                     f"{p['total_p50_ms']:>8.1f}ms "
                     f"{p['backbone_p50_ms']:>7.1f}ms {p['search_p50_ms']:>8.1f}ms {p['peak_rss_mib']:>6.1f}MiB")
    if study.get("fit"):
        for key, unit in (("decision_p50_ms", "ms"), ("total_p50_ms", "ms"), ("peak_rss_mib", "MiB")):
            f = study["fit"][key]
            lines.append(f"  fit {key}: {f['a']:.4g} + {f['b']:.4g}*s + {f['c']:.4g}*s^2 (R^2 {f['r2']:.3f})")
        e = study["extrapolation"]
        lines.append(f"  5 MP ({e['sensor'][0]}x{e['sensor'][1]}, as a {e['equivalent_side']:.0f} px square): "
                     + (f"~{e['decision_p50_ms']:.0f} ms to the decision, " if "decision_p50_ms" in e else "")
                     + f"~{e['total_p50_ms']:.0f} ms with the map, ~{e['peak_rss_mib']:.0f} MiB peak RSS (extrapolated"
                     + (f", bank {e['bank_size']} rows)" if e.get("bank_size") else ")"))
    return "\n".join(lines)
