"""A minimal ONNX ModelProto writer for the one-node graphs the runtime builds itself.

The runtime builds small onnxruntime graphs at load time (the int8 nearest-neighbour GEMM,
:mod:`edgead.scorer.search.int8_layout`) around constants it only knows then (the memory bank).  The
``onnx`` package would do this, but importing it (protobuf + onnx's C extension) costs far more
resident memory on the Pi than the few hundred bytes of protobuf it would write.  This module
encodes exactly the fields those graphs need (ONNX's ``onnx.proto``, protobuf wire format);
``tests/test_int8_search.py`` checks the bytes with ``onnx.checker`` where onnx is installed.
"""

from __future__ import annotations

import numpy as np

# TensorProto.DataType
FLOAT, INT8, INT64 = 1, 3, 7
_DTYPES = {np.dtype(np.float32): FLOAT, np.dtype(np.int8): INT8, np.dtype(np.int64): INT64}

IR_VERSION = 8


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf does
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(int(value))


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _str_field(number: int, text: str) -> bytes:
    return _bytes_field(number, text.encode())


def tensor(name: str, array: np.ndarray) -> bytes:
    """TensorProto: dims (1), data_type (2), name (8), raw_data (9, little-endian)."""
    arr = np.ascontiguousarray(array)
    if arr.dtype not in _DTYPES:
        raise TypeError(f"unsupported initializer dtype {arr.dtype}")
    body = b"".join(_int_field(1, d) for d in arr.shape)
    body += _int_field(2, _DTYPES[arr.dtype]) + _str_field(8, name)
    body += _bytes_field(9, arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return body


def value_info(name: str, elem_type: int, shape: list[int | str]) -> bytes:
    """ValueInfoProto name (1), type (2): TypeProto.tensor_type (1) {elem_type (1), shape (2)};
    a str dimension is symbolic (dim_param), an int fixed (dim_value)."""
    dims = b"".join(_bytes_field(1, _str_field(2, d) if isinstance(d, str) else _int_field(1, d))
                    for d in shape)
    tensor_type = _int_field(1, elem_type) + _bytes_field(2, dims)
    return _str_field(1, name) + _bytes_field(2, _bytes_field(1, tensor_type))


def node(op_type: str, inputs: list[str], outputs: list[str], domain: str = "") -> bytes:
    """NodeProto: input (1), output (2), op_type (4), domain (7)."""
    body = b"".join(_str_field(1, i) for i in inputs) + b"".join(_str_field(2, o) for o in outputs)
    body += _str_field(4, op_type)
    return body + (_str_field(7, domain) if domain else b"")


def model(nodes: list[bytes], inputs: list[bytes], outputs: list[bytes], initializers: list[bytes],
          opsets: dict[str, int], name: str = "edgead") -> bytes:
    """ModelProto bytes: ir_version (1), graph (7) {node (1), name (2), initializer (5),
    input (11), output (12)}, opset_import (8) {domain (1), version (2)}."""
    graph = b"".join(_bytes_field(1, n) for n in nodes) + _str_field(2, name)
    graph += b"".join(_bytes_field(5, t) for t in initializers)
    graph += b"".join(_bytes_field(11, v) for v in inputs) + b"".join(_bytes_field(12, v) for v in outputs)
    out = _int_field(1, IR_VERSION) + _str_field(2, "edgead")  # producer_name (2)
    out += _bytes_field(7, graph)
    for domain, version in opsets.items():
        out += _bytes_field(8, (_str_field(1, domain) if domain else b"") + _int_field(2, version))
    return out
