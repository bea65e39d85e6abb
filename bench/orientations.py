#!/usr/bin/env python3
"""What turned copies of the training images (``--orientations``) do on real sets.

    python bench/orientations.py --root DATA --json orient.jsonl
    python bench/orientations.py --table orient.jsonl

Per set: 100 training images (evenly spaced, the export's 10 % hold-out split off), 150 good +
150 defective test images (evenly spaced); the default model (Lite0, 224 px, top-k 60 of the
export's coreset) fitted with the training images fixed, with ``flips`` and with ``all``, every
test image scored as the Pi scores it (one orientation).  Two readings: the sets as they are,
and the same sets with every training and test image turned and mirrored at random (a seeded
one of the 8 orientations per image: a line that delivers parts in any orientation).  The proxy
AUROC (held-out goods against --auto's proxy defects drawn on them) is recorded too: whether
--auto could tell when the copies help.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from auto_features import set_images  # noqa: E402
from quality_sweep import halves  # noqa: E402

from edgead.fit.threshold import split_holdout  # noqa: E402
from edgead.images import read_image  # noqa: E402
from edgead.metrics_math import auroc  # noqa: E402
from edgead.orientations import ORIENTATIONS  # noqa: E402
from edgead_export.auto import PROXY_KINDS, PROXY_PER_IMAGE  # noqa: E402
from edgead_export.auto_search import fit_banks, frame_scores  # noqa: E402
from edgead_export.config import ExportConfig  # noqa: E402
from edgead_export.extract import extract_features  # noqa: E402
from edgead_export.pipeline import build_graph  # noqa: E402
from edgead_export.pseudo_defects import proxy_defects  # noqa: E402

SETTINGS = ("fixed", "flips", "all")


def turned(frame: np.ndarray, key: str) -> np.ndarray:
    """``frame`` in one of the 8 orientations, chosen by a hash of ``key`` (seeded, per image)."""
    turns, mirror = ORIENTATIONS["all"][zlib.crc32(key.encode()) % 8]
    out = np.rot90(frame, turns) if turns else frame
    return np.ascontiguousarray(out[:, ::-1] if mirror else out)


def run_set(root: Path, name: str, randomised: bool, args) -> dict:
    train, test, labels = set_images(root, name, args.max_train, args.max_test)
    fit_paths, hold = split_holdout(train, 0.1, 5, 0)

    def load(paths):
        return [turned(read_image(p), str(p)) if randomised else read_image(p) for p in paths]

    fit, hold_f, test_f = load(fit_paths), load(hold), load(test)
    cfg = ExportConfig(data=root / name, out=Path("/tmp/unused"))
    graph, _ = build_graph(cfg, [])
    bad = proxy_defects(hold_f, PROXY_KINDS, PROXY_PER_IMAGE, cfg.preprocess, 0)
    t0 = time.perf_counter()
    judged = extract_features(graph, hold_f + bad + test_f, cfg.preprocess)
    frames = [f[None].astype(np.float32) for f in judged]
    res = {"set": name, "randomised": randomised, "labels": labels.tolist(), "fit": len(fit), "settings": {}}
    for setting in SETTINGS:
        c = cfg.updated(orientations=setting)
        feats = extract_features(graph, fit, c.preprocess, orientations=setting)
        banks = fit_banks(c, feats)
        s = frame_scores([c], banks, frames)[0]
        n_h, n_b = len(hold_f), len(bad)
        proxy = auroc(np.r_[np.zeros(n_h), np.ones(n_b)], s[:n_h + n_b])
        res["settings"][setting] = {"test": s[n_h + n_b:].tolist(), "proxy_auroc": proxy,
                                    "bank_rows": int(sum(len(b) for b in banks))}
        print(f"  {name}{' (randomised)' if randomised else ''} {setting}: real AUROC "
              f"{auroc(labels, s[n_h + n_b:]):.3f}, proxy {proxy:.3f}, bank {res['settings'][setting]['bank_rows']}, "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return res


def table(rows: list[dict]) -> str:
    out = ["| set | as delivered | fixed | flips | all | proxy AUROC fixed / flips / all |", "|---|---|---|---|---|---|"]
    for r in rows:
        labels = np.array(r["labels"])
        a, b = halves(labels, np.random.default_rng(zlib.crc32(r["set"].encode())))
        cells = []
        for s in SETTINGS:
            scores = np.array(r["settings"][s]["test"])
            cells.append(f"{auroc(labels, scores):.3f} ({auroc(labels[a], scores[a]):.3f} / {auroc(labels[b], scores[b]):.3f})")
        proxy = " / ".join(f"{r['settings'][s]['proxy_auroc']:.3f}" for s in SETTINGS)
        out.append(f"| {r['set']} | {'any orientation (turned at random)' if r['randomised'] else 'as captured'} | "
                   + " | ".join(cells) + f" | {proxy} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path)
    p.add_argument("--sets", default="casting,bsdata,magnetic_tile,elpv_poly,deeppcb")
    p.add_argument("--max-train", type=int, default=100)
    p.add_argument("--max-test", type=int, default=300)
    p.add_argument("--randomised", choices=("no", "yes", "both"), default="both")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path)
    p.add_argument("--table", type=Path, help="print the table of a --json file and exit")
    args = p.parse_args(argv)
    if args.table:
        print(table([json.loads(x) for x in args.table.read_text().splitlines() if x.strip()]))
        return 0
    torch.set_num_threads(args.threads)
    for name in args.sets.split(","):
        for randomised in {"no": (False,), "yes": (True,), "both": (False, True)}[args.randomised]:
            res = run_set(args.root, name, randomised, args)
            if args.json:
                with args.json.open("a") as fh:
                    fh.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
