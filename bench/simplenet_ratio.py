"""SimpleNet's time to the decision against the backbone alone, alternating rounds in one run.

    OMP_NUM_THREADS=1 python bench/simplenet_ratio.py --simplenet SN_DIR --patchcore PC_DIR \
        --images DATA/test/good --rounds 7 --n 100

Both artifacts must be exported with the same backbone, taps and input size. "The backbone
alone" is the PatchCore artifact's backbone stage: the same feature graph SimpleNet's head is
fused into, without the head. Each round scores, one thread, without the map, frames at the
input size (the camera scales), frame by frame alternating between the two models (so both
see the same load on a shared host): SimpleNet's total (preprocessing, graph, decision)
against PatchCore's backbone stage, same precision. A round's ratio is the ratio of the
medians of its --n frames; the median and range over the rounds are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgead.bench import frames_at_input_size, load_frames, machine_info, measure  # noqa: E402
from edgead.model import load_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--simplenet", type=Path, required=True)
    ap.add_argument("--patchcore", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=100, help="frames per model and round")
    ap.add_argument("--precisions", default="int8,fp32")
    args = ap.parse_args()
    models = {}
    for precision in args.precisions.split(","):
        sn = load_model(args.simplenet, precision=precision, threads=1)
        models[precision] = (sn, load_model(args.patchcore, precision=precision, threads=1))
    frames = frames_at_input_size(load_frames(args.images, args.n, 224), sn)
    for sn, pc in models.values():  # warm-up
        measure(sn, frames, 10, 0, with_map=False), measure(pc, frames, 10, 0, with_map=False)
    ratios: dict[str, list[float]] = {p: [] for p in models}
    for r in range(args.rounds):
        row: dict = {"round": r + 1}
        for precision, (sn, pc) in models.items():
            total, graph, backbone = [], [], []
            for i in range(args.n):  # frame by frame, alternating: both models see the same load
                a = measure(sn, frames[i % len(frames):][:1], 1, 0, with_map=False)
                b = measure(pc, frames[i % len(frames):][:1], 1, 0, with_map=False)
                total.append(a["total"][0]), graph.append(a["backbone"][0]), backbone.append(b["backbone"][0])
            row[precision] = {"simplenet_total": float(np.median(total)), "simplenet_graph": float(np.median(graph)),
                              "backbone_alone": float(np.median(backbone))}
            row[precision]["ratio"] = row[precision]["simplenet_total"] / row[precision]["backbone_alone"]
            ratios[precision].append(row[precision]["ratio"])
        print(json.dumps(row), flush=True)
    summary = {"machine": machine_info(), "rounds": args.rounds, "frames": args.n}
    for precision, r in ratios.items():
        summary[precision] = {"median_ratio": round(float(np.median(r)), 3), "min": round(float(min(r)), 3),
                              "max": round(float(max(r)), 3)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
