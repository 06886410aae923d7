"""ONNX export of a real timm student and parity with onnxruntime."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import timm
import torch

from agedistill_core.inference.export import export_onnx, onnx_parity


def test_mobilenetv3_small_export_parity(tmp_path: Path):
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=1)
    model.train()
    path = export_onnx(model, tmp_path / "onnx" / "student.onnx", 96)
    assert path == tmp_path / "onnx" / "student.onnx" and path.is_file()
    assert model.training  # the caller's mode is restored
    assert sorted(p.name for p in path.parent.iterdir()) == ["student.onnx"]  # no temp or external-data files

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 96, 96]

    diff = onnx_parity(model, path, 96, n=4, seed=0)
    assert diff < 1e-3
    assert model.training

    # dynamic batch: a batch of 1 and of 5 both run and match torch
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model.eval()
    for n in (1, 5):
        x = torch.randn(n, 3, 96, 96)
        out = sess.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            ref = model(x).numpy()
        assert out.shape == (n, 1)
        np.testing.assert_allclose(out, ref, atol=1e-3)
