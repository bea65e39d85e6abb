"""`edgead bench`: per-stage latency, memory and size figures of one artifact on this machine.

Runtime only (numpy, OpenCV, onnxruntime; never torch). The frames are read and decoded once
into memory; decode is timed on its own (``cv2.imdecode`` of the encoded file bytes, as the
daemon decodes an upload), then N frames are scored after a warm-up and each stage's
p50/p95/p99 is reported with the peak RSS, the artifact and bank size and the search backend
in use. ``--resolutions`` repeats the measurement at several input sides (edgead.scaling).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STAGES = ("decode", "preprocess", "backbone", "search", "score", "total", "map", "total_with_map")
STAGE_LABELS = {"decode": "decode (imdecode)", "preprocess": "resize + normalise", "backbone": "backbone",
                "search": "NN search", "score": "image score", "total": "total -> decision",
                "map": "anomaly map", "total_with_map": "total + map"}
# distinct frames: up to N, kept encoded (each decoded when it is scored, as the daemon does) within
# this many bytes: every frame of a test folder counts in the tails, and the bench's own RSS stays
# small (16 decoded frames cycled over N made p99 the cost of whichever 1-2 frames were slowest)
MAX_ENCODED_BYTES = 32 << 20
SYNTHETIC_FRAMES = 16


@dataclass
class Frame:
    name: str
    data: bytes  # encoded (PNG/JPEG...) as a client would upload it


def process_memory_mib() -> dict[str, float | None]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process, MiB."""
    out: dict[str, float | None] = {"rss": None, "peak": None}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out["rss" if key == "VmRSS" else "peak"] = int(value.split()[0]) / 1024
    except OSError:
        pass
    if out["peak"] is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak"] = peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return out


def percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(v, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(v.mean()),
            "min": float(v.min()), "max": float(v.max())}


def synthetic_frames(count: int, side: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """Encoded PNG frames of the synthetic washer (every 4th with a defect), ``side`` px."""
    import cv2
    import numpy as np

    from edgead.synthetic import DEFECTS, make_part

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        defect = DEFECTS[(i // 4) % len(DEFECTS)] if i % 4 == 3 else None
        _, buf = cv2.imencode(".png", make_part(rng, side, defect)[0])
        out.append((f"synthetic-{i:03d}.png", buf.tobytes()))
    return out


def load_frames(images: Path | None, count: int, side: int) -> list[Frame]:
    """Up to ``count`` distinct encoded frames (within MAX_ENCODED_BYTES): the image files in
    ``images`` (a folder, or an MVTec category root: its train/good), evenly spaced, or
    SYNTHETIC_FRAMES synthetic ones of ``side`` px."""
    from edgead.images import list_images, resolve_train_folder

    count = max(1, count)
    if images is None:
        return [Frame(name, data) for name, data in synthetic_frames(min(count, SYNTHETIC_FRAMES), side)]
    paths = list_images(resolve_train_folder(images))
    step = max(1, len(paths) // count)
    frames, size = [], 0
    for p in paths[::step][:count]:
        data = p.read_bytes()
        if frames and size + len(data) > MAX_ENCODED_BYTES:
            break
        frames.append(Frame(p.name, data))
        size += len(data)
    return frames


def artifact_sizes(model) -> dict:
    """Bytes on disk: every file of the artifact, and only those this configuration loads
    (the backbone of the chosen precision, the scorer files, the index when searching with hnsw)."""
    from edgead.manifest import BACKBONE_FILES, MANIFEST, index_file, tile_tag

    manifest = model.manifest
    files = {name: meta.bytes for name, meta in manifest.files.items()}
    manifest_bytes = (model.path / MANIFEST).stat().st_size
    unused = {f for p, f in BACKBONE_FILES.items() if p != model.precision}
    if model.search_backend != "hnsw":
        unused |= {index_file(tile_tag(t)) for t in manifest.scorer_tiles()}
    loaded = {n: b for n, b in files.items() if n not in unused}
    return {"total": sum(files.values()) + manifest_bytes, "loaded": sum(loaded.values()) + manifest_bytes,
            "loaded_files": sorted(loaded), "files": files}


def machine_info() -> dict:
    import numpy as np
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "machine": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "onnxruntime": ort.__version__}


def blas_threads() -> int | None:
    from threadpoolctl import threadpool_info

    pools = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return max(pools) if pools else None


def measure(model, frames: list[Frame], n: int, warmup: int, with_map: bool = True) -> dict[str, list[float]]:
    """Per-stage milliseconds of ``n`` scored frames (cycling over ``frames``) after ``warmup``."""
    from edgead.images import decode_image

    for i in range(warmup):
        frame = frames[i % len(frames)]
        model.score(decode_image(frame.data, frame.name), with_map=with_map)
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for i in range(n):
        frame = frames[i % len(frames)]
        t0 = time.perf_counter()
        image = decode_image(frame.data, frame.name)  # timed apart: "total" starts from a decoded frame
        samples["decode"].append((time.perf_counter() - t0) * 1e3)
        result = model.score(image, with_map=with_map)
        if with_map:
            _ = result.anomaly_map  # computed after the decision (ScoreResult): timed as "map"
        timings = result.timings_ms
        timings["total_with_map"] = timings["total"] + timings.get("map", 0.0)
        for stage in STAGES[1:]:
            samples[stage].append(float(timings.get(stage, 0.0)))
    return samples


def frames_at_input_size(frames: list[Frame], model) -> list[Frame]:
    """The frames as a camera set to the model's input size delivers them (picamera2's default:
    its ISP scales, so ``resize + normalise`` is a normalise): resized once (INTER_AREA) to the
    input size, or for a letterboxed model to its content box (the aspect kept), PNG.
    Refused for a model with a ROI or tiles, whose frames the camera cannot pre-scale alone."""
    import cv2

    from edgead.errors import ConfigError
    from edgead.images import decode_image
    from edgead.preprocess import content_box

    cfg = model.preprocess_cfg
    if cfg.roi is not None or model.tiling.count > 1:
        raise ConfigError("--frames-at-input-size needs a model without ROI or tiles "
                          f"({model.path}: roi {cfg.roi}, {model.tiling.count} tiles)")
    out = []
    for f in frames:
        image = decode_image(f.data, f.name)
        _, _, cw, ch = content_box(cfg, image.shape[1], image.shape[0])
        small = cv2.resize(image, (cw, ch), interpolation=cv2.INTER_AREA)
        out.append(Frame(f.name, cv2.imencode(".png", small)[1].tobytes()))
    return out


def run_bench(model_dir: Path, images: Path | None = None, n: int = 200, warmup: int = 10, threads: int = 1,
              precision: str | None = None, search: str = "auto", with_map: bool = True,
              at_input_size: bool = False) -> dict:
    """Load the artifact, score ``n`` frames and return the figures as one JSON-able dict.
    ``at_input_size``: frames pre-scaled to the input size (:func:`frames_at_input_size`)."""
    from edgead.artifact import read_manifest
    from edgead.images import decode_image
    from edgead.model import load_model

    side = max(read_manifest(model_dir).preprocess.input_size)
    frames = load_frames(images, n, side)
    before_load = process_memory_mib()["rss"]
    t0 = time.perf_counter()
    model = load_model(model_dir, precision=precision, threads=threads, search=search)
    load_s = time.perf_counter() - t0
    if at_input_size:
        frames = frames_at_input_size(frames, model)
    after_load = process_memory_mib()["rss"]
    samples = measure(model, frames, n, warmup, with_map)
    memory = process_memory_mib()
    latency = {stage: percentiles(values) for stage, values in samples.items()}
    total, backbone = latency["total"], latency["backbone"]
    return {
        "model": str(model_dir), "name": model.name, "method": model.manifest.method,
        "backbone": model.manifest.backbone.name, "input_size": list(model.input_size),
        "tiles": model.tiling.count, "precision": model.precision, "threads": threads,
        "search": model.search_backend, "search_requested": search,
        "bank_size": model.manifest.bank_size or 0, "feature_dim": model.manifest.feature_dim,
        "frames": n, "warmup": warmup, "distinct_frames": len(frames), "with_map": with_map,
        "images": str(images) if images else f"synthetic {side}x{side}", "frames_at_input_size": at_input_size,
        "frame_shape": list(decode_image(frames[0].data, frames[0].name).shape[:2]),
        "latency_ms": latency,
        "ratios": {"total_over_backbone_p50": total["p50"] / backbone["p50"],
                   "total_p99_over_p50": total["p99"] / total["p50"],
                   "total_with_map_over_backbone_p50": latency["total_with_map"]["p50"] / backbone["p50"]},
        "memory_mib": {"peak_rss": memory["peak"], "rss_after_run": memory["rss"],
                       "model_load": (after_load or 0) - (before_load or 0), "before_model_load": before_load},
        "load_seconds": load_s,
        "artifact_bytes": artifact_sizes(model),
        "machine": machine_info(),
        "blas_threads": blas_threads(),
    }


def format_table(r: dict) -> str:
    lines = [
        f"{r['name']}: {r['method']} {r['backbone']} {'x'.join(map(str, r['input_size']))}, {r['precision']}, "
        f"{r['threads']} thread(s), search {r['search']} (bank {r['bank_size']} x {r['feature_dim']})",
        f"{r['frames']} frames after {r['warmup']} warm-up, {r['images']} "
        f"({'x'.join(map(str, r['frame_shape']))} px{', pre-scaled as a camera at input size' if r.get('frames_at_input_size') else ''}), "
        f"{r['machine']['cpu']}",
        "",
        f"{'stage':<22} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8}",
    ]
    for stage in STAGES:
        s = r["latency_ms"][stage]
        lines.append(f"{STAGE_LABELS[stage]:<22} {s['p50']:>8.2f} {s['p95']:>8.2f} {s['p99']:>8.2f} {s['mean']:>8.2f}")
    ratios, mem, size = r["ratios"], r["memory_mib"], r["artifact_bytes"]
    lines += [
        "",
        f"total / backbone (p50)  {ratios['total_over_backbone_p50']:.2f}x (with map "
        f"{ratios['total_with_map_over_backbone_p50']:.2f}x)      total p99 / p50  {ratios['total_p99_over_p50']:.2f}x",
        f"peak RSS                {mem['peak_rss']:.1f} MiB (model load +{mem['model_load']:.1f} MiB)",
        f"artifact                {size['total'] / 1e6:.2f} MB all files, {size['loaded'] / 1e6:.2f} MB loaded "
        f"({', '.join(size['loaded_files'])})",
    ]
    if "scaling" in r:
        from edgead.scaling import format_scaling

        lines += ["", format_scaling(r["scaling"])]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgead bench", description="Per-stage latency, memory and size of an artifact.")
    p.add_argument("--model", required=True, type=Path, help="artifact directory")
    p.add_argument("--images", type=Path, default=None,
                   help="folder of images (or MVTec category root); default: synthetic frames")
    p.add_argument("--n", type=int, default=200, help="frames to time after the warm-up (default 200)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime, search and BLAS threads (default 1)")
    p.add_argument("--precision", choices=["int8", "fp32"], default=None, help="default: the artifact's")
    p.add_argument("--search", choices=["auto", "int8", "exact", "hnsw"], default="auto")
    p.add_argument("--no-map", action="store_true", help="score only (no anomaly map)")
    p.add_argument("--frames-at-input-size", action="store_true",
                   help="pre-scale the frames to the model's input size, as a camera configured to it "
                        "delivers them (picamera2's default: the ISP scales); models without ROI or tiles")
    p.add_argument("--resolutions", default=None,
                   help="comma-separated input sides, e.g. 224,320,448: latency and memory vs resolution, "
                        "refitted on --images where torch (the export extra) is installed, else a synthetic bank")
    p.add_argument("--synthetic-bank", action="store_true",
                   help="--resolutions: a synthetic bank of the right shape even where a refit is possible (fast)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p


def bench_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1 or args.warmup < 0 or args.threads < 1:
        from edgead.errors import ConfigError

        raise ConfigError("--n and --threads must be >= 1, --warmup >= 0")
    from edgead.threads import limit_threads

    limit_threads(args.threads)  # before numpy is imported: BLAS reads its thread count at load
    result = run_bench(args.model, args.images, args.n, args.warmup, args.threads, args.precision, args.search,
                       with_map=not args.no_map, at_input_size=args.frames_at_input_size)
    if args.resolutions:
        from edgead.scaling import parse_sides, scaling_study

        result["scaling"] = scaling_study(args, parse_sides(args.resolutions), progress=not args.json)
    print(json.dumps(result) if args.json else format_table(result))
    return 0


if __name__ == "__main__":  # child processes of the resolution study
    from edgead.cli import main

    sys.exit(main(["bench", *sys.argv[1:]]))
