"""Scoring stage: memory-bank nearest-neighbour search, PatchCore / PaDiM scores, anomaly maps."""
