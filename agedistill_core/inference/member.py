"""The ``torch`` teacher member: a student checkpoint of this project as a teacher member.

It lives with the student loader (``inference.student``) rather than with the other members
(``teacher.members``): loading a student needs the students' networks, which sit above the
teacher (students learn from the teacher's labels).  Importing this module registers ``torch``
in ``teacher.members.MEMBERS``; settings name this module as the registry of teacher members
(``settings.fields.REGISTRIES``), so any validated profile may use it, and code that builds a
member from a spec without settings imports this module first.
"""
from __future__ import annotations

import numpy as np

from agedistill_core.errors import CheckpointError, ConfigError
from agedistill_core.inference.student import load_student
from agedistill_core.teacher.members import (AGE_BINS_101, MEMBERS, Member, narrow_distribution,
                                             reject_unknown, resolve_file)

__all__ = ["MEMBERS", "TorchMember", "make_torch"]


class TorchMember(Member):
    """A student checkpoint of this project used as a teacher member.

    * 1-output (regression) checkpoints: the predicted age ``a`` becomes a
      two-bin distribution on ages 0..100 (mass ``ceil(a) - a`` at
      ``floor(a)``, the rest at ``floor(a) + 1``): the narrowest vector whose
      expectation is exactly ``a``.  Its entropy says nothing about confidence.
    * softmax heads over ages (``distribution``: 101 outputs, ages 0..100; ``children``: 13,
      ages 0..12): the softmax of the outputs, on the loss's ``bins``, which the ensemble
      re-bins onto ages 0..100 (SPEC 3's children-specialist members are such checkpoints).
    """

    def __init__(self, name, student, threads: int = 0):
        from agedistill_core.images import VGGFACE2_MEAN_RGB as mean

        n_out = int(student.config.get("n_outputs", 1))
        bins = getattr(student.loss, "bins", None)  # a softmax head over ages says which
        softmax = n_out > 1 and bins is not None and len(bins) == n_out
        super().__init__(name=name, input_size=int(student.input_size),
                         bins=np.asarray(bins, np.float64) if softmax else AGE_BINS_101,
                         mean=tuple(float(v) for v in mean), scale=1.0, color_order="RGB",
                         framing="as the student's training crops (square box + 0.2 margin)")
        if n_out != 1 and not softmax:
            raise ConfigError(f"teacher member {name}: checkpoint has {n_out} outputs that are not ages "
                              f"(loss {student.config.get('students', {}).get('loss')!r}); a member needs a "
                              f"1-output regressor or a softmax over ages (loss distribution or children)")
        self.student, self.n_outputs, self.threads = student, n_out, int(threads)

    def resize(self, crops: np.ndarray) -> np.ndarray:
        from agedistill_core.inference.student import student_inputs

        s = self.input_size
        if crops.shape[1] != s or crops.shape[2] != s:  # the student's own rule, as in its validation
            crops = student_inputs(list(crops), s, self.student.resize)
        return crops

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        x = self.resize(crops).astype(np.float32) - np.asarray(self.mean, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            out = self.student.model(torch.from_numpy(x))
            if self.n_outputs > 1:
                return torch.softmax(out.float(), 1).numpy().astype(np.float64)
            ages = self.student.loss.ages(out).double().numpy()
        return narrow_distribution(ages)


@MEMBERS.register("torch")
def make_torch(checkpoint=None, *, label: str | None = None, threads: int = 0, base_dir=None,
               **unknown) -> Member:
    """A student checkpoint (``students/<arch>/best.pt``) as a member."""
    where = f"teacher member torch{f' ({label})' if label else ''}"
    reject_unknown(where, unknown, "checkpoint, label")
    path = resolve_file(checkpoint, base_dir, where, "checkpoint")
    try:
        student = load_student(path)
    except CheckpointError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return TorchMember(label or f"torch:{student.arch}:{path.stem}", student, threads)
