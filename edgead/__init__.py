"""edgead: edge inference daemon for industrial visual anomaly detection.

Pipeline (one folder or module per stage):
capture -> preprocess -> backbone -> scorer -> decision -> outputs (HTTP, GPIO, log).
"""

__version__ = "0.1.0"
# the manifest version this edgead writes, and those it reads.  2: preprocess.photometric (a
# version-1 runtime would ignore the field and score the frames of such a model wrongly).
ARTIFACT_SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
