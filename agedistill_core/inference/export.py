"""ONNX export of a trained student and a torch-vs-onnxruntime parity check.

Uses torch's TorchScript-based exporter (``dynamo=False``): the dynamo exporter
needs ``onnxscript``, which is not a dependency.  Input ``input`` is
``(batch, 3, size, size)`` float32, mean-subtracted (see ``augment.to_tensor``);
output ``output`` is the raw head (``(batch, n_outputs)``); the batch axis is
dynamic.  Weights are stored inside the .onnx file.

``write_model_metadata(onnx_path, config)`` writes what inference needs beside the
network (``model.json`` next to ``model.onnx``, and the same JSON in the ONNX file's
``agedistill`` metadata property): the input size and mean, how the head becomes an
age, and the framing (``faces``) of the crops the student was trained on.
``inference.student.load_onnx_student`` reads it without torch.  ``export_checkpoint``
(``agedistill export``, and ``ship``) writes it with every export.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from agedistill_core.shards import atomic_path, atomic_write_text
from agedistill_core.students.checkpoint import unwrap_model

INPUT_NAME = "input"
OUTPUT_NAME = "output"


def _device_of(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def export_onnx(model: torch.nn.Module, path, input_size: int, *, opset: int = 17) -> Path:
    """Export ``model`` (eval mode) to ``path`` atomically; returns the path."""
    path = Path(path)
    net = unwrap_model(model)
    was_training = net.training
    net.eval()
    dummy = torch.zeros(2, 3, input_size, input_size, device=_device_of(net))
    try:
        with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                net, (dummy,), str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
    finally:
        net.train(was_training)
    return path


def onnx_parity(model: torch.nn.Module, onnx_path, input_size: int, n: int = 4, seed: int = 0) -> float:
    """Max abs difference between torch (eval) and onnxruntime (CPU) on ``n`` random inputs.

    Inputs are standard normal; ``n`` need not equal the export batch, which
    also exercises the dynamic batch axis.
    """
    import onnxruntime as ort

    net = unwrap_model(model)
    was_training = net.training
    net.eval()
    try:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 3, input_size, input_size, generator=g)
        with torch.no_grad():
            ref = net(x.to(_device_of(net))).float().cpu().numpy()
    finally:
        net.train(was_training)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    if out.shape != ref.shape:
        raise ValueError(f"onnx output shape {out.shape} != torch output shape {ref.shape}")
    return float(np.max(np.abs(out.astype(np.float64) - ref.astype(np.float64))))


# framing keys that do not change a crop (how many processes make them)
_NOT_FRAMING = ("workers",)


def model_metadata(config: dict) -> dict:
    """The metadata of an exported student, from its checkpoint's ``config``."""
    from agedistill_core.images import VGGFACE2_MEAN_RGB
    from agedistill_core.inference.student import METADATA_FORMAT, METADATA_VERSION, checkpoint_resize
    from agedistill_core.students.losses import make_loss

    loss_name = config.get("students", {}).get("loss", "paper")
    loss = make_loss(loss_name)
    if hasattr(loss, "cap"):
        head = {"name": OUTPUT_NAME, "ages": "clamp", "cap": float(loss.cap)}
    else:
        head = {"name": OUTPUT_NAME, "ages": "softmax_expectation", "bins": int(config["n_outputs"])}
    faces = config.get("faces")
    if isinstance(faces, dict):
        faces = {k: v for k, v in faces.items() if k not in _NOT_FRAMING}
    return {
        "format": METADATA_FORMAT, "version": METADATA_VERSION,
        "arch": config.get("arch"), "timm": config.get("timm"), "n_outputs": int(config["n_outputs"]),
        "loss": loss_name, "profile": config.get("profile"),
        "input": {"name": INPUT_NAME, "size": int(config["input_size"]), "layout": "NCHW", "channels": "RGB",
                  "resize": checkpoint_resize(config), "mean": [float(v) for v in VGGFACE2_MEAN_RGB], "scale": 1.0},
        "output": head,
        "faces": faces,
    }


def write_model_metadata(onnx_path, config: dict) -> Path:
    """Write ``model.json`` beside ``onnx_path`` (and, when the ``onnx`` package is there, the same
    JSON into the file's ``agedistill`` metadata property); returns the JSON's path."""
    from agedistill_core.inference.student import METADATA_KEY, metadata_path

    onnx_path = Path(onnx_path)
    meta = model_metadata(config)
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        model = onnx.load(str(onnx_path))
        for prop in [p for p in model.metadata_props if p.key == METADATA_KEY]:
            model.metadata_props.remove(prop)
        model.metadata_props.add(key=METADATA_KEY, value=text)
        with atomic_path(onnx_path) as tmp:
            onnx.save(model, str(tmp))
    return atomic_write_text(metadata_path(onnx_path), text)


def export_checkpoint(checkpoint, out, *, arch: str | None = None, tolerance: float = 1e-3) -> str:
    """``agedistill export``: checkpoint -> ONNX, then the parity check; returns a one-line report.

    ``arch`` (when given) must match the checkpoint's; a parity error above
    ``tolerance`` raises ``ExportError``.
    """
    from agedistill_core.errors import AgedistillError, CheckpointError
    from agedistill_core.inference.student import load_student

    student = load_student(checkpoint)
    if arch is not None and arch != student.arch:
        raise CheckpointError(f"{checkpoint} holds a {student.arch} student, not {arch}; pass --arch {student.arch}")
    path = export_onnx(student.model, out, student.input_size)
    meta_path = write_model_metadata(path, student.config)
    diff = onnx_parity(student.model, path, student.input_size)
    if not diff <= tolerance:
        raise AgedistillError(f"ONNX export {path}: torch vs onnxruntime differ by {diff:.3g} (> {tolerance}); "
                              "report this with the checkpoint")
    return (f"exported {student.arch} ({checkpoint}) -> {path}: input (batch, 3, {student.input_size}, "
            f"{student.input_size}) mean-subtracted RGB, metadata {meta_path.name}; "
            f"parity max |torch - onnxruntime| = {diff:.2e}")
