"""The backbone stage: one onnxruntime session over the exported feature graph.

Input ``image`` (N x 3 x H x W float32, normalised); output ``features`` (N x D x h x w),
the patch features the scorer consumes. Few threads, no spinning: made for a Pi.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgead.errors import ArtifactError


def session_options(threads: int = 1) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


# onnxruntime's NCHWc layout (x86 only) re-blocks float convolutions into kernels that round
# differently from the im2col path every other CPU, a Pi's included, takes. An INT8 graph keeps its
# stem convolution in float and quantizes its output: a last-bit difference there moves single
# values across a rounding boundary, and the integer layers carry that through to scores ~1e-3
# apart between workstation and Pi. Without NCHWc every integer tensor is the same on x86 (VNNI,
# AMX) and arm64 (SDOT, plain NEON): the integer kernels themselves agree bit for bit.
INT8_DISABLED_OPTIMIZERS = ("NchwcTransformer",)


class Backbone:
    """Runs the feature graph on CPU. ``integer``: the graph is quantized (INT8), computed the
    same way on every CPU (see INT8_DISABLED_OPTIMIZERS)."""

    def __init__(self, onnx_path: str | Path, threads: int = 1, integer: bool = False):
        self.path = Path(onnx_path)
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=session_options(threads), providers=["CPUExecutionProvider"],
                disabled_optimizers=list(INT8_DISABLED_OPTIMIZERS) if integer else [],
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ArtifactError(f"{self.path}: onnxruntime cannot load the model ({exc})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]
