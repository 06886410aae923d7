"""Write a tiny Caffe network (prototxt + binary caffemodel) for backend tests.

The caffemodel is a ``NetParameter`` protobuf encoded by hand (wire format):
layer = field 100, LayerParameter name = 1, type = 2, blobs = 7; BlobProto
data = 5 (packed floats), shape = 7 (BlobShape, dim = 1 packed int64).
The net: global average pooling of a 3-channel image, a linear layer with the
given weights, softmax.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:  # length-delimited
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _blob(arr: np.ndarray) -> bytes:
    shape = _field(1, b"".join(_varint(int(d)) for d in arr.shape))
    data = _field(5, struct.pack(f"<{arr.size}f", *arr.astype(np.float32).ravel()))
    return _field(7, shape) + data


def write_tiny_caffe(folder: Path, weight: np.ndarray, bias: np.ndarray, size: int = 8) -> tuple[Path, Path]:
    n_out = weight.shape[0]
    proto = folder / "tiny_age.prototxt"
    proto.write_text(f'''name: "tiny_age"
input: "data"
input_dim: 1
input_dim: 3
input_dim: {size}
input_dim: {size}
layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool"
        pooling_param {{ pool: AVE global_pooling: true }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
        inner_product_param {{ num_output: {n_out} }} }}
layer {{ name: "prob" type: "Softmax" bottom: "fc" top: "prob" }}
''')
    layer = _field(1, b"fc") + _field(2, b"InnerProduct") + _field(7, _blob(weight)) + _field(7, _blob(bias))
    model = folder / "tiny_age.caffemodel"
    model.write_bytes(_field(100, layer))
    return proto, model
