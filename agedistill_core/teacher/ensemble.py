"""Soft voting on one age axis (0..100), and the per-face agreement measures."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agedistill_core.settings import TeacherSettings
from agedistill_core.teacher.members import Member, make_member

AGE_AXIS = np.arange(101, dtype=np.float64)  # ages 0..100, one bin per year


def rebin(probs: np.ndarray, bins: np.ndarray, axis: np.ndarray = AGE_AXIS) -> np.ndarray:
    """Move probability mass from arbitrary bin ages onto ``axis``.

    Each bin's mass is split linearly between the two neighbouring axis ages,
    which keeps the total mass and the expected age exactly (inside the axis).
    """
    probs = np.asarray(probs, np.float64)
    pos = np.clip(np.interp(bins, axis, np.arange(len(axis))), 0, len(axis) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(axis) - 1)
    w_hi = pos - lo
    out = np.zeros(probs.shape[:-1] + (len(axis),), np.float64)
    flat_out = out.reshape(-1, len(axis))
    flat_p = probs.reshape(-1, probs.shape[-1])
    np.add.at(flat_out.T, lo, (flat_p * (1 - w_hi)).T)
    np.add.at(flat_out.T, hi, (flat_p * w_hi).T)
    return out


def expected_age(probs: np.ndarray, axis: np.ndarray = AGE_AXIS) -> np.ndarray:
    return probs @ axis


def entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-12, 1)
    return -(p * np.log(p)).sum(-1)


@dataclass
class TeacherOutput:
    age: np.ndarray           # (N,) voted expected age
    probs: np.ndarray         # (N, 101) voted vector on AGE_AXIS
    member_probs: np.ndarray  # (N, M, 101) each member's vector (averaged over variants)
    member_ages: np.ndarray   # (N, M)
    age_spread: np.ndarray    # (N,) standard deviation of member ages
    entropy: np.ndarray       # (N,) entropy of the voted vector (nats)


class Teacher:
    """Members soft-voted together."""

    def __init__(self, members: list[Member]):
        self.members = members

    @property
    def input_sizes(self) -> set[int]:
        return {m.input_size for m in self.members}

    def label(self, crops: np.ndarray) -> TeacherOutput:
        """Label a batch of uint8 RGB face crops (N, S, S, 3)."""
        per_member = np.stack(
            [rebin(m.predict(crops), m.bins) for m in self.members], axis=1)  # (N, M, 101)
        per_member /= per_member.sum(-1, keepdims=True)
        voted = per_member.mean(1)
        member_ages = expected_age(per_member)
        return TeacherOutput(
            age=expected_age(voted),
            probs=voted,
            member_probs=per_member,
            member_ages=member_ages,
            age_spread=member_ages.std(1),
            entropy=entropy(voted),
        )


def build_teacher(cfg: TeacherSettings) -> Teacher:
    return Teacher([make_member(name, threads=cfg.threads) for name in cfg.members])
