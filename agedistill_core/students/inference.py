"""A trained student, loaded for inference: the one path evaluation, ``predict``, export,
fine-tuning and the ``torch`` teacher member use.

``load_student(checkpoint) -> LoadedStudent``: ``predict_crops`` / ``predict_jpegs``
give ages through the students' evaluation input pipeline (the validation path of
``students.data.FaceDataset``: a bilinear resize, channels-last, the VGGFace2 mean).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from agedistill_core.errors import CheckpointError
from agedistill_core.images import decode_image
from agedistill_core.students.augment import AugmentConfig, augment_face, batch_tensor
from agedistill_core.students.checkpoint import load_checkpoint
from agedistill_core.students.losses import make_loss
from agedistill_core.students.zoo import create_student

REPO_ROOT = Path(__file__).resolve().parents[2]
# The shipped default model (a checkpoint of this project); `agedistill predict` uses it
# when neither --checkpoint nor --teacher is given.
DEFAULT_CHECKPOINT = REPO_ROOT / "models" / "mn3_small_distilled" / "best.pt"

# The students' evaluation input: the validation path of FaceDataset (augmentation off).
_EVAL_AUGMENT = AugmentConfig(enabled=False)


@dataclass
class LoadedStudent:
    arch: str
    model: torch.nn.Module
    loss: object
    input_size: int
    config: dict
    name: str = "student"

    def inputs(self, crops: list[np.ndarray]) -> np.ndarray:
        """uint8 ``(N, S, S, 3)``: the crops as the student sees them in validation.

        Square crops (every stored crop) go through ``augment_face`` with
        augmentation disabled, the students' validation input (``FaceDataset``
        without augmentation: a bilinear resize to the input size); a
        non-square array gets the same bilinear resize.
        """
        s = self.input_size
        rng = np.random.default_rng(0)  # never drawn from: augmentation is off
        return np.stack([augment_face(c, s, 0.2, rng, _EVAL_AUGMENT) if c.shape[0] == c.shape[1]
                         else cv2.resize(c, (s, s), interpolation=cv2.INTER_LINEAR) for c in crops])

    @torch.no_grad()
    def predict_crops(self, crops: list[np.ndarray], batch_size: int = 128) -> np.ndarray:
        """Ages for uint8 RGB crops (any size), through ``inputs`` and ``batch_tensor``."""
        self.model.eval()
        out = []
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
    """A student from its checkpoint (``CheckpointError`` when missing or corrupt)."""
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


def create_student_quiet(arch: str, n_outputs: int) -> torch.nn.Module:
    """The architecture only: its weights come from our checkpoint."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_student(arch, n_outputs, None)
