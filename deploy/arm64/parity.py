"""Score parity between two machines: the same artifacts and images scored on each, compared.

    python deploy/arm64/parity.py score --out x86.json --images DIR MODEL_DIR [MODEL_DIR ...]
    python deploy/arm64/parity.py compare x86.json arm.json [arm-a72.json ...] [--markdown FILE]

``score`` runs with the runtime alone (numpy + onnxruntime, no torch), so the same file scores on
the workstation and on the Pi (or the emulated arm64 root): every model in every precision it
ships, with the search the model loads by default, and records the machine it ran on (CPU
features included: they pick onnxruntime's integer kernels on arm64).

``compare`` takes the first file as the reference and, for every other file and every
(model, precision), prints the largest relative difference of the image scores and whether every
decision at the stored threshold is the same.  It exits 1 when a score is further off than the
tolerance (``--fp32-tol``, ``--int8-tol``, relative), when the int8 search's scores leave its
certified bound (equal to exact search's on the same machine), or when a decision differs for an
image whose reference score is further from the threshold than that tolerance (an image within it
may fall either side on two machines: listed, not failed).

The INT8 tolerance is wider than FP32's, from measurement: the model input is the same bits on
every CPU (edgead.preprocess.RESIZE_DTYPES), and most INT8 models then score within ~1e-7 on
x86 and arm64 (no NCHWc layout, edgead/backbone.py), but onnxruntime's INT8 kernels do not round
alike on every model: for one of the five models the check exports, the same input gave features
that differ on arm64 (the Cortex-A76 and A72 alike) and image scores up to 2.2e-3 apart
(docs/howto/check-on-arm64.md).  5e-3 is a little over twice that; anything larger fails, and a
decision may differ only for a score that close to the threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

# AT_HWCAP / AT_HWCAP2 bits on arm64 (Linux uapi asm/hwcap.h): the int8 dot-product instructions
# onnxruntime's MLAS chooses its integer GEMM kernels by
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_ARM_FEATURES = {(_AT_HWCAP, 1 << 20): "asimddp (SDOT/UDOT)", (_AT_HWCAP2, 1 << 13): "i8mm (SMMLA/UMMLA)"}


def cpu_features() -> list[str]:
    """The arm64 int8 features the kernel (or qemu-user) reports for this process; [] elsewhere."""
    if platform.machine() not in ("aarch64", "arm64"):
        return []
    try:
        raw = Path("/proc/self/auxv").read_bytes()
    except OSError:
        return ["unknown (no /proc/self/auxv)"]
    words = [int.from_bytes(raw[i: i + 8], "little") for i in range(0, len(raw) - 7, 8)]
    aux = dict(zip(words[::2], words[1::2]))
    found = [name for (key, bit), name in _ARM_FEATURES.items() if aux.get(key, 0) & bit]
    return found or ["plain NEON (no int8 dot product)"]


def machine_info() -> dict:
    import numpy
    import onnxruntime

    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "onnxruntime": onnxruntime.__version__,
        "emulated_cpu": os.environ.get("QEMU_CPU"),
        "cpu_features": cpu_features(),
    }


def precisions_of(model_dir: Path) -> list[str]:
    from edgead.model import BACKBONE_FILES

    return [p for p, name in BACKBONE_FILES.items() if (model_dir / name).is_file()]


def score_models(models: list[Path], images: list[Path], threads: int = 1) -> dict:
    """{"machine": ..., "models": {name: {precision: {"search", "threshold", "scores": {image: [score, decision]}}}}}"""
    from edgead.images import read_image
    from edgead.manifest import MANIFEST
    from edgead.model import load_model
    from edgead.scorer.registry import scorer_class

    frames = {p.name: read_image(p) for p in images}
    out: dict = {"machine": machine_info(), "models": {}}
    for model_dir in models:
        per_precision = {}
        for precision in precisions_of(model_dir):
            model = load_model(model_dir, precision, threads)
            search = model.scorer.backend if model.manifest.method == "patchcore" else None
            # the certified search on this machine's int8 kernels against brute force over the
            # same features: equal image scores is what its error bound promises
            exact = None
            if search == "int8":  # the scorer alone: the features come from ``model``'s backbone
                exact = scorer_class(model.manifest.method, model_dir / MANIFEST).from_artifact(
                    model_dir, model.manifest, search="exact", threads=threads)
            scores, exact_scores = {}, {}
            for name, frame in frames.items():
                feats, _, _ = model.features(frame)  # the backbone once (the slow part under emulation)
                score, _, _ = model.score_features(feats, with_map=False)
                result = model.decision.result(score, None, {})
                scores[name] = [result.score, result.decision]
                if exact is not None:
                    exact_scores[name] = exact.score(feats, with_map=False).score
            per_precision[precision] = {
                # the nearest-neighbour search PatchCore loaded (int8, exact, hnsw); PaDiM has none
                "search": search,
                "threshold": model.threshold,
                "scores": scores,
                **({"exact_scores": exact_scores} if exact is not None else {}),
            }
        out["models"][model_dir.name] = per_precision
    return out


def compare(reference: dict, other: dict, fp32_tol: float, int8_tol: float) -> list[dict]:
    """One row per (model, precision) present in both: max relative difference, decisions."""
    rows = []
    for model, precisions in reference["models"].items():
        for precision, ref in precisions.items():
            got = other["models"].get(model, {}).get(precision)
            if got is None:
                rows.append({"model": model, "precision": precision, "missing": True, "ok": False})
                continue
            names = sorted(ref["scores"])
            missing = [n for n in names if n not in got["scores"]]
            rel = [abs(got["scores"][n][0] - ref["scores"][n][0]) / max(abs(ref["scores"][n][0]), 1e-12)
                   for n in names if n not in missing]
            flipped = [n for n in names if n not in missing and got["scores"][n][1] != ref["scores"][n][1]]
            tol = int8_tol if precision == "int8" else fp32_tol
            # a score within the tolerance of the threshold may land either side on two machines
            near = [n for n in flipped if abs(ref["scores"][n][0] - ref["threshold"]) <= tol * abs(ref["threshold"])]
            worst = max(rel, default=0.0)
            exact = got.get("exact_scores") or {}
            search_rel = max((abs(got["scores"][n][0] - exact[n]) / max(abs(exact[n]), 1e-12)
                              for n in names if n in exact and n not in missing), default=None)
            rows.append({
                "model": model, "precision": precision, "images": len(names), "search": got.get("search"),
                "int8_search_vs_exact": search_rel,
                "max_rel_diff": worst, "tolerance": tol,
                "threshold_rel_diff": abs(got["threshold"] - ref["threshold"]) / max(abs(ref["threshold"]), 1e-12),
                "rejects": sum(ref["scores"][n][1] == "reject" for n in names),
                "decisions_differ": flipped, "decisions_differ_near_threshold": near, "missing": missing,
                "ok": len(flipped) == len(near) and not missing and worst <= tol and (search_rel is None or search_rel <= 1e-5),
            })
    return rows


def _machine_label(info: dict) -> str:
    cpu = info.get("emulated_cpu") or info["machine"]
    return f"{info['machine']} {cpu}, onnxruntime {info['onnxruntime']}, numpy {info['numpy']}"


def markdown(reference: dict, others: list[dict], tables: list[list[dict]]) -> str:
    lines = [f"Reference: {_machine_label(reference['machine'])}.", ""]
    for other, rows in zip(others, tables):
        feats = ", ".join(other["machine"]["cpu_features"]) or "-"
        lines += [f"Against {_machine_label(other['machine'])} (int8 features: {feats}):", "",
                  "| model | precision | search | images (rejects) | max rel. diff of image scores | decisions "
                  "| int8 search vs exact, same machine | within |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r.get("images") is None:
                lines.append(f"| {r['model']} | {r['precision']} | missing | | | FAIL |")
                continue
            same = "identical" if not r["decisions_differ"] else f"{len(r['decisions_differ'])} differ" + (
                f" ({len(r['decisions_differ_near_threshold'])} within tolerance of the threshold)"
                if r["decisions_differ_near_threshold"] else "")
            certified = "-" if r["int8_search_vs_exact"] is None else f"{r['int8_search_vs_exact']:.1e}"
            lines.append(f"| {r['model']} | {r['precision']} | {r['search'] or '-'} | {r['images']} ({r['rejects']}) | "
                         f"{r['max_rel_diff']:.2e} | {same} | {certified} | {'yes' if r['ok'] else 'NO'} ({r['tolerance']:g}) |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="score every model on the images, write JSON")
    s.add_argument("models", nargs="+", type=Path)
    s.add_argument("--images", required=True, type=Path, help="a folder of images")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("compare", help="compare score files against the first")
    c.add_argument("reference", type=Path)
    c.add_argument("others", nargs="+", type=Path)
    c.add_argument("--fp32-tol", type=float, default=1e-3)
    c.add_argument("--int8-tol", type=float, default=5e-3)
    c.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    args = p.parse_args(argv)

    if args.cmd == "score":
        from edgead.images import list_images

        images = list_images(args.images)
        if not images:
            print(f"parity: no images in {args.images}", file=sys.stderr)
            return 2
        result = score_models(args.models, images, args.threads)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"parity: {len(images)} images x {len(args.models)} models -> {args.out}")
        return 0

    reference = json.loads(args.reference.read_text())
    others = [json.loads(path.read_text()) for path in args.others]
    tables = [compare(reference, other, args.fp32_tol, args.int8_tol) for other in others]
    text = markdown(reference, others, tables)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    bad = [r for rows in tables for r in rows if not r["ok"]]
    for r in bad:
        print(f"parity: {r['model']} {r['precision']}: {r}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
