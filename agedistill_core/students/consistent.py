"""Consistent teaching (function matching; Beyer et al., CVPR 2022, "Knowledge distillation:
A good teacher is patient and consistent"): the teacher labels the very view the student sees.

``TeacherInLoop`` wraps a training ``FaceDataset``: each batch is the faces' SPEC-augmented
views, mixed pairwise with mixup (``lam ~ Beta(a, a)`` per face, partner drawn from the
same batch) when ``mixup`` > 0, and the targets are the profile's teacher's labels of those
exact uint8 images (1 test-time variant: the view is the augmentation).  ``iter_batches``
builds batch k + 1 in its thread while the model trains on batch k, so the teacher (ONNX
Runtime, which releases the GIL) runs beside the step, not in it.  Deterministic per
(seed, epoch, batch): a resumed run sees the same views and targets.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from agedistill_core.students.augment import batch_tensor

LOG = logging.getLogger("agedistill.students.consistent")


def mix(images: np.ndarray, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Mixup between the faces of a batch: ``lam * x_i + (1 - lam) * x_perm(i)``, uint8."""
    if alpha <= 0 or len(images) < 2:
        return images
    lam = rng.beta(alpha, alpha, len(images)).astype(np.float32).reshape(-1, 1, 1, 1)
    partner = images[rng.permutation(len(images))]
    mixed = lam * images.astype(np.float32) + (1 - lam) * partner.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


class TeacherInLoop:
    """A ``FaceDataset`` whose training targets come from the teacher, per augmented view."""

    def __init__(self, ds, settings, *, mixup: float = 0.0, seed: int = 0, teacher=None, threads: int = 1):
        from agedistill_core.teacher.label import get_teacher

        self.ds, self.mixup, self.seed = ds, float(mixup), int(seed)
        self.teacher = teacher if teacher is not None else get_teacher(
            replace(settings, teacher=replace(settings.teacher, variants=1, threads=threads)))
        self.faces = ds.faces

    def __len__(self) -> int:
        return len(self.ds)

    def set_epoch(self, epoch: int) -> None:
        self.ds.set_epoch(epoch)

    def views(self, idx: np.ndarray) -> np.ndarray:
        """uint8 ``(B, S, S, 3)``: the augmented, mixed views of faces ``idx`` this epoch."""
        idx = np.asarray(idx, np.int64)
        imgs = np.stack([self.ds.image(int(i)) for i in idx])
        rng = np.random.default_rng([self.seed, self.ds.epoch, int(idx[0]) if len(idx) else 0, len(idx), 77])
        return mix(imgs, self.mixup, rng)

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, teacher age, teacher probs, teacher spread)`` of the views of faces ``idx``."""
        imgs = self.views(idx)
        out = self.teacher.label(imgs)
        return (batch_tensor(imgs, self.ds.channels_last), torch.from_numpy(out.age.astype(np.float32)),
                torch.from_numpy(out.probs.astype(np.float32)), torch.from_numpy(out.age_spread.astype(np.float32)))
