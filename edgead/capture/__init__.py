"""Capture stage: frame sources (camera, video, folder replay) and their supervisor."""

from edgead.capture.base import CaptureError, Frame, FrameSource, SourceUnavailable
from edgead.capture.registry import open_source, parse_source
from edgead.capture.supervisor import SourceSupervisor

__all__ = [
    "CaptureError",
    "Frame",
    "FrameSource",
    "SourceSupervisor",
    "SourceUnavailable",
    "open_source",
    "parse_source",
]
