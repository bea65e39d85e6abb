"""edgead: edge inference daemon for industrial visual anomaly detection.

Pipeline (one folder or module per stage):
capture -> preprocess -> backbone -> scorer -> decision -> outputs (HTTP, GPIO, log).
"""

__version__ = "0.1.0"
ARTIFACT_SCHEMA_VERSION = 1
