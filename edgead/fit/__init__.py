"""Fitting a model from good frames without torch: the memory bank's greedy coreset, PaDiM's
Gaussians, the threshold. The workstation export and the Pi's teach both call these."""
