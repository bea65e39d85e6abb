"""The runtime's only door to the workstation features (`edgead export`, `bench --resolutions`
refits). They are found by entry-point name (group ``edgead.workstation``), never imported by
module path, so the runtime does not depend on the workstation package; a Pi install without
the ``export`` extra (no torch) gets one clear line instead of an ImportError."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from edgead.errors import EdgeadError

GROUP = "edgead.workstation"
INSTALL_HINT = "pip install 'edgead[export]' on a workstation (it needs torch; a Pi never does)"


class WorkstationMissing(EdgeadError):
    """The workstation side (edgead[export]) is not installed here."""


def available(name: str = "export") -> bool:
    """True when ``name`` loads, i.e. the workstation extra and torch are installed."""
    try:
        feature(name)
    except WorkstationMissing:
        return False
    return True


def feature(name: str) -> Any:
    """The workstation callable registered as ``name``, or WorkstationMissing with the install hint."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        raise WorkstationMissing(f"`{name}` is a workstation feature and is not installed: {INSTALL_HINT}")
    try:
        return found[0].load()
    except ImportError as exc:
        raise WorkstationMissing(f"`{name}` needs the workstation extra ({exc}): {INSTALL_HINT}") from None
