"""The workstation's coreset is the Pi's own (numpy, :mod:`edgead.fit.coreset`): export and
teach select the same memory bank from the same features."""

from edgead.fit.coreset import CoresetResult, coreset_size, covering_radius, greedy_coreset, project  # noqa: F401
