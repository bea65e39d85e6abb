"""`edgead bench --resolutions` refits: the base artifact's export again at another input side
(registered as the ``refit`` workstation entry point)."""

from __future__ import annotations

from pathlib import Path

from edgead.manifest import Manifest
from edgead_export import pipeline
from edgead_export.config import ExportConfig


def write_refit_artifact(manifest: Manifest, images: Path, side: int, out: Path, threads: int) -> Path:
    """Export on ``images`` at ``side`` with the base artifact's settings (workstation: torch)."""
    cfg = ExportConfig.from_manifest(manifest, data=images, out=out, threads=threads, progress=False)
    return pipeline.export_model(cfg.updated(input_size=(side, side)))[0]
