"""Anomaly models beyond the memory bank: each fitted on the cached patch features."""
