"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""

from __future__ import annotations


class EdgeadError(Exception):
    """A problem caused by input or configuration, explained in the message."""


class ImageError(EdgeadError):
    """An image could not be read or decoded (the message names the file)."""


class ArtifactError(EdgeadError):
    """A model artifact is missing, corrupt, tampered with or of an unknown schema."""


class ConfigError(EdgeadError):
    """A configuration value is invalid."""
