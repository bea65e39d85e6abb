"""Teach: a new version of the served model from good frames, fitted on the device.

``mode="new"`` refits from the frames alone, exactly as the workstation's export does from the
same images and backbone: the same seeded hold-out split, the same coreset
(:mod:`edgead.fit.coreset`), the same thresholds: the held-out rule (:mod:`edgead.fit.threshold`) and,
for the default precision, the parent's target false-reject rate from out-of-fold scores of every
training image plus the held-out ones (:mod:`edgead.fit.oof`).
``mode="add"`` (folding false rejects back in) adds to the parent's bank the frames' patches
that lie farther from it than half the distance its rows typically lie apart (the greedy
k-center step continued, :func:`edgead.fit.scorers.grow_bank`), bounded by ``coreset_max``; the threshold stays the
parent's, since a larger bank only lowers the scores of what it covers.

The version is written into the store atomically and is not served until installed
(:func:`edgead.teach.versions.install`): a failed or stopped teach changes nothing served.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

import edgead
from edgead.artifact import (
    ArtifactWriter,
    manifest_sha256,
    read_manifest_json,
    verify_artifact,
)
from edgead.bank.store import load_bank
from edgead.errors import EdgeadError
from edgead.false_rejects import DEFAULT_FOLDS
from edgead.fit.bank_files import (
    add_patchcore_bank,
    record_search,
    write_padim_gaussians,
)
from edgead.fit.oof import FoldSource, frr_calibration
from edgead.fit.scorers import (
    PatchCoreFit,
    bank_spacing,
    grow_bank,
    select_bank,
    tile_groups,
)
from edgead.fit.threshold import choose_threshold, split_holdout
from edgead.images import read_image
from edgead.manifest import BACKBONE_FILES, Manifest, scorer_files
from edgead.model import InspectionModel
from edgead.orientations import bank_share, maps_per_image
from edgead.teach import versions
from edgead.teach.features import RowBuffer, TeachCancelled, stream_features

Mode = Literal["new", "add"]
DEFAULT_BUDGET_MB = 256


@dataclass
class TeachResult:
    version: str
    path: Path
    parent: str
    mode: str
    frames: int
    bank_size: int
    threshold: float
    seconds: float


@dataclass
class _Settings:
    """The parent's fit settings (its export section, else what its manifest recorded)."""

    coreset: float
    coreset_max: int | None
    proj_dim: int | None
    bank_dtype: str
    num_neighbors: int
    reweighted: bool
    hnsw: str
    seed: int
    holdout: float
    min_holdout: int
    padim_dtype: str
    target_frr: float | None
    folds: int
    fold_order: str

    @classmethod
    def of(cls, m: Manifest) -> "_Settings":
        e = m.export or {}
        pc = m.patchcore
        return cls(
            coreset=float(e.get("coreset", pc.coreset if pc and pc.coreset else 0.1)),
            coreset_max=e.get("coreset_max", pc.coreset_max if pc else None),
            proj_dim=e.get("proj_dim", pc.projection_dim if pc else 128),
            bank_dtype=e.get("bank_dtype", (pc.bank_dtype if pc else None) or "int8"),
            num_neighbors=int(e.get("num_neighbors", pc.num_neighbors if pc else 9)),
            reweighted=(pc.image_score.rule if pc else "reweighted") == "reweighted",
            hnsw=e.get("hnsw", "auto"), seed=int(e.get("seed", m.seed)),
            holdout=float(e.get("holdout", 0.1)), min_holdout=int(e.get("min_holdout", 5)),
            padim_dtype=e.get("padim_dtype", (m.padim.model_extra or {}).get("precision_dtype", "float16")
                              if m.padim else "float16"),
            # no export section (older artifacts): the held-out rule, as they were exported with
            target_frr=e.get("target_frr"), folds=int(e.get("folds", DEFAULT_FOLDS)),
            fold_order=e.get("fold_order", "contiguous"))


def new_version_name() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def teach(model_path: str | Path, images: list[Path], *, mode: Mode = "new", added: str = "",
          result_ids: list[int] | None = None, request: str | None = None, precision: str | None = None,
          threads: int = 1, memory_budget_mb: float = DEFAULT_BUDGET_MB, keep: int = versions.DEFAULT_KEEP,
          stop: threading.Event | None = None, progress: Callable[[str, int, int], None] | None = None) -> TeachResult:
    """Fit a new version of the model served from ``model_path`` from good ``images`` and keep it
    in the store (not installed). ``precision``: the backbone that extracts the features (default:
    the artifact's default precision, what the daemon serves with)."""
    t0 = time.perf_counter()
    if mode not in ("new", "add"):
        raise EdgeadError(f"teach mode {mode!r}: expected new or add")
    if not images:
        raise EdgeadError("teach needs at least one good frame")
    with versions.locked(model_path, wait=False):
        versions.sweep_unfinished(model_path)
        parent_name = versions.archive_current(model_path)
        parent_dir = versions.store_dir(model_path) / parent_name
        parent = verify_artifact(parent_dir)
        raw = read_manifest_json(parent_dir)
        s = _Settings.of(parent)
        if parent.method not in ("patchcore", "padim"):
            raise EdgeadError(f"teach refits PatchCore and PaDiM models; a {parent.method} model is fitted on a "
                              "workstation (edgead export)")
        if mode == "new":
            fit_paths, hold = split_holdout(list(images), s.holdout, s.min_holdout, s.seed)
        else:
            if parent.method != "patchcore":
                raise EdgeadError("adding frames to a model needs a PatchCore memory bank (PaDiM refits: mode new)")
            fit_paths, hold = list(images), []
        name = new_version_name()
        out = versions.store_dir(model_path) / name
        with ArtifactWriter(out) as writer:
            for fname in BACKBONE_FILES.values():
                if fname in parent.files:
                    versions.link_file(parent_dir / fname, writer.path(fname))
            extractor = InspectionModel(parent_dir, precision=precision, threads=threads, search="exact")
            manifest = _manifest(raw, name, mode, added, len(images), result_ids or [], request, parent_name,
                                 manifest_sha256(parent_dir), len(fit_paths), len(hold))

            def report(done: int, stage: str = "features", total: int = len(fit_paths)) -> None:
                if progress is not None:
                    progress(stage, done, total)

            if parent.method == "patchcore":
                sources = _fit_patchcore(parent, parent_dir, extractor, fit_paths, mode, s, writer, manifest,
                               memory_budget_mb, stop, report)
            else:
                maps: list = []
                stream_features(extractor, fit_paths, [], False, keep_maps=maps, stop=stop, progress=report,
                                orientations=parent.orientations)
                groups = tile_groups(np.concatenate(maps), parent.tiling)
                del maps
                padim = write_padim_gaussians(writer.staging, groups, s.padim_dtype)
                per_image = maps_per_image(parent.tiling, parent.orientations, per_bank=True)
                sources = [FoldSource(features=f, map_image=np.arange(len(f)) // per_image) for _, f in groups]
                manifest["padim"] = {**raw.get("padim", {}), **padim}
                manifest["bank_size"] = padim["positions"]
            del extractor
            if stop is not None and stop.is_set():
                raise TeachCancelled("teach stopped: the served model is unchanged")
            writer.write_manifest(manifest)
            if mode == "new":
                manifest.update(calibrate(writer.staging, parent, hold, threads, stop,
                                          fit_paths=fit_paths, sources=sources, settings=s))
            path = writer.commit(manifest)
        versions.prune(model_path, keep)
    return TeachResult(name, path, parent_name, mode, len(images), int(manifest["bank_size"]),
                       float(manifest["threshold"]), time.perf_counter() - t0)


def _manifest(raw: dict, name: str, mode: str, added: str, frames: int, result_ids: list[int],
              request: str | None, parent: str, parent_sha: str, fit: int, hold: int) -> dict:
    m = {k: v for k, v in raw.items() if k not in ("files", "created", "export_seconds")}
    m.update(model_version=name, edgead_version=edgead.__version__, lineage={
        "parent_version": parent, "parent_sha256": parent_sha, "mode": mode, "added": added,
        "frames": frames, "result_ids": result_ids, "request": request,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    if mode == "new":
        m.update(training_images=fit, holdout_images=hold, validation_defect_images=0)
        m.pop("false_rejects", None)   # the parent's estimate: calibrate sets the new version's own
    else:
        m["training_images"] = int(raw.get("training_images") or 0) + fit
        m["threshold_rule"] = f"kept from {parent} (good frames added to the memory bank)"
    return m


def _fit_patchcore(parent: Manifest, parent_dir: Path, extractor: InspectionModel, fit_paths: list[Path],
                   mode: str, s: _Settings, writer: ArtifactWriter, manifest: dict, budget_mb: float,
                   stop: threading.Event | None, report: Callable[[int], None]) -> list[FoldSource]:
    """The bank files; returns what the out-of-fold scorers are built from, per bank (mode new)."""
    tiles = parent.scorer_tiles()
    per_tile = len(tiles) > 1
    d = parent.feature_dim
    h, w = parent.backbone.feature_grid
    maps = maps_per_image(parent.tiling, parent.orientations, per_bank=True)
    per_frame = h * w * maps
    olds = [load_bank(parent_dir, parent.files, scorer_files("patchcore", t)["tag"])[0] if mode == "add" else None
            for t in tiles]
    budget = int(budget_mb * 2**20) // len(tiles)
    sinks = [RowBuffer(len(fit_paths) * per_frame + (0 if old is None else len(old)), d, budget, writer.out.parent)
             for old in olds]
    try:
        for sink, old in zip(sinks, olds):
            if old is not None:
                sink.append(old)
        stream_features(extractor, fit_paths, sinks, per_tile, stop=stop, progress=report,
                        orientations=parent.orientations)
        cap = None if s.coreset_max is None else -(-s.coreset_max // len(tiles))
        pc = dict(manifest.get("patchcore") or {})
        pc.update(training_patches=int(sum(sk.rows for sk in sinks)), covering_radius=0.0, coreset_seconds=0.0)
        pc.pop("hnsw", None), pc.pop("hnsw_file", None)
        rows = 0
        sources = []
        for tile, sink, old in zip(tiles, sinks, olds):
            if stop is not None and stop.is_set():
                raise TeachCancelled("teach stopped: the served model is unchanged")
            if old is not None:
                fit = _folded(old, sink.data[len(old):], cap)
            else:
                fit = select_bank(sink.data, bank_share(s.coreset, parent.orientations), s.proj_dim, s.seed, max_size=cap)
            source = add_patchcore_bank(writer.staging, pc, fit, tile, bank_dtype=s.bank_dtype,
                                        num_neighbors=s.num_neighbors, reweighted=s.reweighted, hnsw=s.hnsw,
                                        seed=s.seed, patches_per_map=h * w,
                                        maps_per_image=maps)
            sources.append(source)
            rows += source.bank.shape[0]
        record_search(pc, rows // len(tiles), s.bank_dtype)
        pc["features_on_disk"] = any(sk.on_disk for sk in sinks)
        manifest["patchcore"], manifest["bank_size"] = pc, int(rows)
        return sources
    finally:
        for sink in sinks:
            sink.close()


def _folded(old: np.ndarray, new: np.ndarray, cap: int | None) -> PatchCoreFit:
    """Good frames folded into the parent's bank: their patches farther from the bank than half
    the distance its rows typically lie apart (:func:`bank_spacing`) join it, farthest first (the greedy
    k-center step continued), at most ``cap`` rows in all. The bank's covering radius is its
    worst-covered training patch: a marked part left that far out can still score above the
    threshold, and re-running the coreset would keep only a share of its patches. At the full
    typical spacing a marked part of a new variant was still rejected (tests/test_teach_e2e.py);
    the price of half is a larger bank for each folded frame, bounded by ``cap``."""
    t0 = time.perf_counter()
    radius = 0.5 * bank_spacing(old)
    bank, radius_new = grow_bank(old, np.asarray(new, dtype=np.float32), radius, max_rows=cap)
    return PatchCoreFit(bank, len(old) + len(new), max(radius, radius_new), time.perf_counter() - t0,
                        np.arange(len(bank)))


def calibrate(staging: Path, parent: Manifest, hold: list[Path], threads: int,
              stop: threading.Event | None = None, *, fit_paths: list[Path] = (), sources: list[FoldSource] = (),
              settings: _Settings | None = None) -> dict:
    """Thresholds of every backbone the artifact ships, by the export's rules: from the held-out
    goods, and the default precision's for the parent's target false-reject rate (when it set one)
    from the training images out of fold plus the held-out ones."""
    out: dict = {"thresholds": {}, "score_stats": {}}
    held_out: dict = {}
    frames = [read_image(p) for p in hold]
    for precision, fname in BACKBONE_FILES.items():
        if fname not in parent.files:
            continue
        if stop is not None and stop.is_set():
            raise TeachCancelled("teach stopped: the served model is unchanged")
        model = InspectionModel(staging, precision=precision, threads=threads, search="exact")
        good = held_out[precision] = np.array([model.score(f, with_map=False).score for f in frames])
        out["thresholds"][precision], out["threshold_rule"] = choose_threshold(good)
        out["score_stats"][precision] = {"good_mean": float(good.mean()), "good_std": float(good.std()),
                                         "good_max": float(good.max())}
    default = parent.default_precision if parent.default_precision in out["thresholds"] else next(iter(out["thresholds"]))
    s = settings
    if s is not None and s.target_frr is not None and sources:
        if stop is not None and stop.is_set():
            raise TeachCancelled("teach stopped: the served model is unchanged")
        model = InspectionModel(staging, precision=default, threads=threads, search="exact")
        cal = frr_calibration(model, list(fit_paths), list(sources), held_out[default], default, s.target_frr,
                              s.folds, s.fold_order, s.seed)
        out["thresholds"][default], out["threshold_rule"] = cal.estimate.threshold, cal.rule
        out["false_rejects"] = {default: cal.record}
    out["threshold"] = out["thresholds"][default]
    return out
