"""A trained student, loaded for inference: the one path evaluation, ``predict``, export,
fine-tuning and the ``torch`` teacher member use.

Two runtimes, the same ages (within float rounding):

* ``load_student(checkpoint.pt) -> LoadedStudent``: the torch network (timm), through the
  students' evaluation input pipeline (the validation path of ``students.data.FaceDataset``:
  a bilinear resize, channels-last, the VGGFace2 mean).
* ``load_onnx_student(model.onnx) -> OnnxStudent``: the exported network on onnxruntime,
  with the input recipe (size, mean, how the head becomes an age) and the framing the
  student was trained on (``faces``) read from the model's metadata (``model.json``
  beside it, written by ``inference.export.write_model_metadata``; or the same JSON in
  the ONNX file's ``agedistill`` metadata property).  Imports neither torch nor timm.
* ``load_model(path)``: either, by the file's format (an .onnx file is never unpickled).

This module imports torch only inside the torch path, so ``predict`` with an ONNX
model starts without the training stack.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agedistill_core.errors import CheckpointError
from agedistill_core.images import STUDENT_RESIZES, decode_image, resize_input

REPO_ROOT = Path(__file__).resolve().parents[2]
# The shipped default model (a model of this project); `agedistill predict` uses it when
# neither --checkpoint nor --teacher is given: model.onnx (with model.json) when present,
# else best.pt through torch.
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "mn3_small_distilled"
DEFAULT_CHECKPOINT = DEFAULT_MODEL_DIR / "best.pt"
DEFAULT_ONNX = DEFAULT_MODEL_DIR / "model.onnx"

METADATA_FORMAT = "agedistill-onnx-student"
METADATA_VERSION = 1
METADATA_KEY = "agedistill"  # the ONNX metadata property holding the same JSON


def metadata_path(onnx_path: str | Path) -> Path:
    """Where a model's metadata lives beside it: ``model.onnx`` -> ``model.json``."""
    return Path(onnx_path).with_suffix(".json")


def is_onnx_file(path: str | Path) -> bool:
    """An ONNX model by name (``.onnx``) or by its first byte (protobuf field 1, ``ir_version``);
    a torch checkpoint is a zip (``PK``)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x08 and head != b"PK"


def read_model_metadata(onnx_path: str | Path, session=None) -> dict:
    """The metadata of an exported student (``model.json`` beside it, else the ONNX property).

    Raises ``CheckpointError`` (one line, with the fix) when neither is there or it is not ours.
    """
    onnx_path = Path(onnx_path)
    side = metadata_path(onnx_path)
    meta, where = None, None
    if side.is_file():
        where = str(side)
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"model metadata {side} is not readable JSON ({exc}); rewrite it with "
                                  f"`agedistill export --checkpoint best.pt --out {onnx_path}`") from None
    elif session is not None:
        raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw:
            where = f"{onnx_path} (metadata property {METADATA_KEY!r})"
            try:
                meta = json.loads(raw)
            except json.JSONDecodeError:
                meta = None
    if meta is None:
        raise CheckpointError(
            f"{onnx_path} is an ONNX model without agedistill metadata ({side.name} beside it, or the "
            f"{METADATA_KEY!r} metadata property): its input size, mean and framing are unknown; export it "
            f"with `agedistill export --checkpoint best.pt --out {onnx_path}`, or pass the .pt checkpoint")
    if not isinstance(meta, dict) or meta.get("format") != METADATA_FORMAT:
        raise CheckpointError(f"{where} is not agedistill model metadata (format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                              f"expected {METADATA_FORMAT!r}); re-export the model with `agedistill export`")
    if int(meta.get("version", 0)) > METADATA_VERSION:
        raise CheckpointError(f"{where} has metadata version {meta.get('version')}, this code reads "
                              f"{METADATA_VERSION}; update agedistill")
    return meta


def known_resize(rule: str | None, where: str = "the student") -> str:
    """``rule`` (``bilinear`` when absent: students from before the rule), or a one-line
    ``CheckpointError`` naming ``where`` when this code does not know it."""
    rule = rule or "bilinear"
    if rule not in STUDENT_RESIZES:
        raise CheckpointError(f"{where}: input resize {rule!r} is unknown to this code "
                              f"({', '.join(STUDENT_RESIZES)}); update agedistill")
    return rule


def checkpoint_resize(config: dict) -> str:
    """A student's input resize rule (``images.resize_input``) from its training config: its
    ``students.resize``, ``bilinear`` for students trained before the rule existed."""
    return known_resize((config.get("students") or {}).get("resize"))


def student_inputs(crops: list[np.ndarray], size: int, rule: str) -> np.ndarray:
    """uint8 ``(N, S, S, 3)``: each crop resized by the student's rule (its validation input)."""
    return np.stack([resize_input(c, size, rule) for c in crops])


@dataclass
class OnnxStudent:
    """An exported student on onnxruntime (CPU): the ``LoadedStudent`` interface without torch."""
    path: Path
    meta: dict
    threads: int = 0                 # onnxruntime intra-op threads; 0 = its default (all cores)
    name: str = "student"
    _session: object = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def arch(self) -> str:
        return str(self.meta.get("arch", "student"))

    @property
    def input_size(self) -> int:
        return int(self.meta["input"]["size"])

    @property
    def resize(self) -> str:
        return known_resize(self.meta["input"].get("resize"), f"{self.path} (metadata)")

    @property
    def config(self) -> dict:
        """The training config's parts that inference needs (``faces``: the framing)."""
        return {"arch": self.arch, "input_size": self.input_size, "faces": self.meta.get("faces"),
                "students": {"resize": self.resize}}

    @property
    def session(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = _ort_session(self.path, self.threads)
        return self._session

    def ages_from_outputs(self, out: np.ndarray) -> np.ndarray:
        head = self.meta["output"]
        out = np.asarray(out, np.float32)
        if head["ages"] == "clamp":
            return np.clip(out.reshape(-1), 0.0, float(head["cap"])).astype(np.float32)
        if head["ages"] == "softmax_expectation":
            z = out - out.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            return (p @ np.arange(out.shape[1], dtype=np.float32)).astype(np.float32)
        raise CheckpointError(f"{self.path}: unknown output rule {head['ages']!r} in its metadata; update agedistill")

    def predict_inputs(self, batch: np.ndarray) -> np.ndarray:
        """Ages for uint8 ``(N, S, S, 3)`` inputs already at the input size: minus the mean, NCHW float32."""
        mean = np.asarray(self.meta["input"]["mean"], np.float32).reshape(1, 3, 1, 1)
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) - mean
        sess = self.session
        return self.ages_from_outputs(sess.run(None, {sess.get_inputs()[0].name: x})[0])

    def predict_crops(self, crops: list[np.ndarray], batch_size: int = 128) -> np.ndarray:
        """Ages for uint8 RGB crops (any size): the student's resize, then ``predict_inputs``."""
        out = [self.predict_inputs(student_inputs(crops[i:i + batch_size], self.input_size, self.resize))
               for i in range(0, len(crops), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def predict_jpegs(self, jpegs: list[bytes], batch_size: int = 128) -> np.ndarray:
        """Ages for JPEG crops: decode, then ``predict_crops``."""
        return self.predict_crops([decode_image(j) for j in jpegs], batch_size) if jpegs else np.zeros(0, np.float32)


def _ort_session(path: Path, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf / NoSuchFile
        first = " ".join(str(exc).split())[:160]
        raise CheckpointError(f"{path} is not a loadable ONNX model ({first}); re-export it with "
                              f"`agedistill export --checkpoint best.pt --out {path}`") from None


def load_onnx_student(path: str | Path, threads: int = 0) -> OnnxStudent:
    """An exported student (``model.onnx`` + its metadata); ``CheckpointError`` when unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model {path} not found; pass --checkpoint with an existing .onnx or .pt file")
    meta = None
    if metadata_path(path).is_file():
        meta = read_model_metadata(path)
        student = OnnxStudent(path, meta, threads)
    else:  # the metadata may be inside the file: open it now
        session = _ort_session(path, threads)
        meta = read_model_metadata(path, session)
        student = OnnxStudent(path, meta, threads, _session=session)
    student.name = f"student {student.arch} (onnxruntime)"
    return student


def load_model(path: str | Path, threads: int = 0):
    """A student from an ONNX model or a torch checkpoint, by the file's format."""
    return load_onnx_student(path, threads) if is_onnx_file(path) else load_student(path)


def default_model() -> Path:
    """The shipped model: its ONNX when it has metadata, else its torch checkpoint."""
    if DEFAULT_ONNX.is_file() and metadata_path(DEFAULT_ONNX).is_file():
        return DEFAULT_ONNX
    return DEFAULT_CHECKPOINT


# --- the torch path (imports torch and timm when used) ----------------------------


@dataclass
class LoadedStudent:
    arch: str
    model: "torch.nn.Module"  # noqa: F821
    loss: object
    input_size: int
    config: dict
    name: str = "student"

    @property
    def resize(self) -> str:
        return checkpoint_resize(self.config)

    def inputs(self, crops: list[np.ndarray]) -> np.ndarray:
        """uint8 ``(N, S, S, 3)``: the crops as the student sees them in validation
        (``FaceDataset`` without augmentation): resized to the input size by the student's rule."""
        return student_inputs(crops, self.input_size, self.resize)

    def predict_crops(self, crops: list[np.ndarray], batch_size: int = 128) -> np.ndarray:
        """Ages for uint8 RGB crops (any size), through ``inputs`` and ``batch_tensor``."""
        import torch

        from agedistill_core.students.augment import batch_tensor

        self.model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(crops), batch_size):
                batch = self.inputs(crops[i:i + batch_size])
                x = batch_tensor(batch, channels_last=True)  # the layout training used (faster convolutions)
                out.append(self.loss.ages(self.model(x)).float().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def predict_jpegs(self, jpegs: list[bytes], batch_size: int = 128) -> np.ndarray:
        """Ages for JPEG crops: decode, then ``predict_crops`` (the benchmark's path)."""
        ages = []
        for i in range(0, len(jpegs), batch_size):
            ages.append(self.predict_crops([decode_image(j) for j in jpegs[i:i + batch_size]], batch_size))
        return np.concatenate(ages) if ages else np.zeros(0, np.float32)


def load_student(path: str | Path) -> LoadedStudent:
    """A student from its torch checkpoint (``CheckpointError`` when missing or corrupt).

    An ONNX file is refused by name (it is not a checkpoint; ``load_model`` runs it)."""
    import torch

    from agedistill_core.students.checkpoint import load_checkpoint
    from agedistill_core.students.losses import make_loss

    if Path(path).is_file() and is_onnx_file(path):
        raise CheckpointError(f"{path} is an ONNX model, not a torch checkpoint; `agedistill predict "
                              f"--checkpoint {path}` runs it on onnxruntime, or pass the .pt checkpoint here")
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    loss = make_loss(cfg["students"]["loss"])
    bad = [k for k, v in ckpt["model"].items() if torch.is_tensor(v) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {path} holds NaN or infinite weights ({len(bad)} tensors, e.g. {bad[0]}): "
                              "its training diverged; retrain with a lower students.lr, or use another checkpoint")
    model = create_student_quiet(cfg["arch"], int(cfg["n_outputs"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:140]
        raise CheckpointError(f"checkpoint {path} says arch {cfg['arch']!r} with {cfg['n_outputs']} output(s), but its "
                              f"weights do not fit that network ({first} ...); the file is damaged or mislabelled: "
                              "retrain, or point --checkpoint at the right file") from None
    model = model.to(memory_format=torch.channels_last).eval()
    return LoadedStudent(cfg["arch"], model, loss, int(cfg["input_size"]), cfg, name=f"student {cfg['arch']}")


def create_student_quiet(arch: str, n_outputs: int):
    """The architecture only: its weights come from our checkpoint."""
    from agedistill_core.students.zoo import create_student

    return create_student(arch, n_outputs, None, warm_start=True)
