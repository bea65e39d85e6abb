"""Output stage: HTTP-independent outputs of a result (GPIO, inspection log, metrics, heatmaps,
systemd notifications)."""
