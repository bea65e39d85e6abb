"""What ``edgead serve --check`` verifies beyond a valid configuration and a model that loads:
that the frame source can work on this machine, and where the inspection log will be written.

A configuration can be valid and still point at a folder that is not there (a typo, a config
copied from another machine); the daemon would start and retry that source for ever, so the
check says so at once, naming the path.
"""

from __future__ import annotations

from pathlib import Path

from edgead.capture.registry import source_kinds, split_spec
from edgead.service.config import EdgeadConfig


def source_problem(config: EdgeadConfig) -> str | None:
    """Why the configured frame source cannot work here, or None (also for ``none``)."""
    parsed = split_spec(config.source.spec)
    if parsed is None:
        return None
    kind, arg = parsed
    problem = source_kinds()[kind].check_ready(arg)
    return f"source.spec {config.source.spec!r}: {problem}" if problem else None


def log_folder(config: EdgeadConfig) -> Path:
    """The inspection log's folder as an absolute path (a relative one is below the working directory)."""
    return Path(config.inspection.data_dir).expanduser().resolve()
