"""ONNX export of the feature graph and static INT8 quantization (onnxruntime.quantization)."""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import torch

INPUT_NAME = "image"
OUTPUT_NAME = "features"
OPSET = 17
TAIL_OPS = ("AveragePool", "Resize", "Concat", "Gather")
# EfficientNet-Lite's first two MBConv blocks (full-resolution, few channels): kept float
EARLY_BLOCKS = ("/backbone/blocks.0/", "/backbone/blocks.1/")


def export_onnx(graph: torch.nn.Module, input_size: tuple[int, int], path: Path,
                output_name: str = OUTPUT_NAME) -> Path:
    """Trace the graph to ONNX and check it. Batch, height and width are free axes: the
    runtime feeds ``input_size`` (the manifest's), `edgead bench --resolutions` other sizes."""
    dummy = torch.zeros(1, 3, *input_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph, (dummy,), str(path),
            input_names=[INPUT_NAME], output_names=[output_name],
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                          output_name: {0: "batch", 2: "grid_height", 3: "grid_width"}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return path


class _Calibration:
    """onnxruntime CalibrationDataReader over preprocessed training images."""

    def __init__(self, batches: Iterable[np.ndarray]):
        self._it: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict | None:
        batch = next(self._it, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax calibration
        pass


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: Iterable[np.ndarray],
                  method: str = "minmax", float_prefixes: tuple[str, ...] = (), *,
                  percentile: float = 99.999, symmetric: bool = False, reduce_range: bool = False,
                  float_stem: bool = True, float_early: bool = False) -> dict:
    """Static QDQ INT8, per-channel weights (int8), uint8 activations, calibrated on ``calibration``.

    Every backbone op is quantized but the stem convolution (quantizing only the convolutions
    leaves float islands that re-quantize at each block: 3x the feature error, measured); the
    stem convolution (3 input channels: a tiny share of the compute, but its error propagates
    through every block) and the small aggregation tail (pooling, resize, concat) stay float.
    The float stem lowers the patch-feature error and raises the INT8-vs-FP32 rank correlation at
    no measurable cost; keeping the depthwise convolutions float as well makes it worse (float
    islands again). ``float_early`` keeps the first two blocks after the stem (EfficientNet-Lite)
    float too: their error is carried through every later block, and keeping them float roughly
    halves the patch-feature error, which is what cost image AUROC on the parts where INT8 lost,
    for a share more backbone time. It is off by default because float convolutions round
    differently on x86 and ARM, and a value that lands on the other side of a quantization step
    moves the integers of every later layer: with only the 3-channel stem float (and onnxruntime's
    NCHWc layout off, edgead/backbone.py) a Pi computes the same integers as the workstation on
    most models and frames, and the stem's own float sums can still round a value across a step
    (image scores then differ by up to ~2e-3, docs/howto/check-on-arm64.md), which an integer stem
    would remove at a cost of up to 4 pt AUROC. Figures: docs/benchmarks.md, "INT8 parity".
    Nodes whose names start with one of ``float_prefixes`` stay float too (a score head whose
    output is the anomaly score itself: 256 levels would tie the scores).
    ``percentile`` (method "percentile"), ``symmetric`` (int8 activations symmetric around 0),
    ``reduce_range`` (7-bit weights) and ``float_stem`` are onnxruntime's options, kept so that
    bench/int8_calibration.py measures each against the default.
    Returns the settings for the manifest.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    calib_method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                    "entropy": CalibrationMethod.Entropy}[method]
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        tail = [n.name for n in graph.node if n.op_type in TAIL_OPS]
        prefixes = tuple(float_prefixes) + (EARLY_BLOCKS if float_early else ())
        head = [n.name for n in graph.node if prefixes and n.name.startswith(prefixes)]
        float_nodes = tail + (stem_convs(graph) if float_stem else []) + head
        quantize_static(
            str(pre), str(int8_path), _Calibration(calibration),
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=float_nodes, calibrate_method=calib_method,
            extra_options={"CalibMovingAverage": False, "ActivationSymmetric": symmetric,
                           **({"CalibPercentile": percentile} if method == "percentile" else {})},
        )
    return {"format": "QDQ", "per_channel": True, "activations": "int8" if symmetric else "uint8",
            "weights": "int8 (7-bit range)" if reduce_range else "int8",
            "float_ops": sorted(TAIL_OPS), "float_stem": float_stem,
            **({"float_blocks": [b.strip("/").split("/")[-1] for b in EARLY_BLOCKS]} if float_early else {}),
            "calibration": method + (f" {percentile:g}" if method == "percentile" else ""),
            **({"float_nodes": list(float_prefixes)} if float_prefixes else {})}


def stem_convs(graph: onnx.GraphProto) -> list[str]:
    """Names of the convolutions that read the image input directly (the stem)."""
    inputs = {i.name for i in graph.input}
    return [n.name for n in graph.node if n.op_type == "Conv" and n.input and n.input[0] in inputs]
