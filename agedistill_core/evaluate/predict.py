"""Run a trained student on face crops."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agedistill_core.images import decode_image
from agedistill_core.students.augment import to_tensor
from agedistill_core.students.checkpoint import load_checkpoint
from agedistill_core.students.losses import make_loss
from agedistill_core.students.zoo import create_student

import cv2


@dataclass
class LoadedStudent:
    arch: str
    model: torch.nn.Module
    loss: object
    input_size: int
    config: dict

    @torch.no_grad()
    def predict_crops(self, crops: list[np.ndarray], batch_size: int = 128) -> np.ndarray:
        """Ages for uint8 RGB crops (any size: resized bilinearly like validation)."""
        self.model.eval()
        out = []
        s = self.input_size
        for i in range(0, len(crops), batch_size):
            batch = np.stack([cv2.resize(c, (s, s), interpolation=cv2.INTER_LINEAR) for c in crops[i:i + batch_size]])
            out.append(self.loss.ages(self.model(to_tensor(batch))).float().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def predict_jpegs(self, jpegs: list[bytes], batch_size: int = 128) -> np.ndarray:
        ages = []
        for i in range(0, len(jpegs), batch_size):
            ages.append(self.predict_crops([decode_image(j) for j in jpegs[i:i + batch_size]], batch_size))
        return np.concatenate(ages) if ages else np.zeros(0, np.float32)


def load_student(path: str | Path) -> LoadedStudent:
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    loss = make_loss(cfg["students"]["loss"])
    model = create_student_quiet(cfg["arch"], int(cfg["n_outputs"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return LoadedStudent(cfg["arch"], model, loss, int(cfg["input_size"]), cfg)


def create_student_quiet(arch: str, n_outputs: int) -> torch.nn.Module:
    """The architecture only: its weights come from our checkpoint."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_student(arch, n_outputs, None)
