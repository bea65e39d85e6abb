"""`edgead bench --resolutions` refits: the base artifact's export again at another input side
(registered as the ``refit`` workstation entry point)."""

from __future__ import annotations

from pathlib import Path

from edgead_export import pipeline


def write_refit_artifact(manifest: dict, images: Path, side: int, out: Path, threads: int) -> Path:
    """Export on ``images`` at ``side`` with the base artifact's settings (workstation: torch)."""
    from dataclasses import replace

    from edgead.preprocess import PreprocessConfig
    from edgead.tiling import TilingConfig

    pc, pre = manifest.get("patchcore", {}), PreprocessConfig.from_dict(manifest["preprocess"])
    cfg = pipeline.ExportConfig(
        data=images, out=out, method=manifest["method"], backbone=manifest["backbone"]["name"],
        taps=manifest["backbone"].get("taps"), preprocess=replace(pre, input_size=(side, side)),
        tiling=TilingConfig.from_dict(manifest.get("tiling")), coreset=pc.get("coreset", 0.1),
        proj_dim=pc.get("projection_dim", 128), num_neighbors=pc.get("num_neighbors", 9),
        target_dim=manifest["backbone"].get("target_dim"), seed=int(manifest.get("seed", 0)),
        threads=threads, progress=False,
    )
    if "coreset_max" in pc:
        cfg.coreset_max = pc["coreset_max"]
    if manifest["method"] == "padim":
        cfg.padim_dim = manifest.get("padim", {}).get("d", cfg.padim_dim)
    return pipeline.export_model(cfg)[0]
