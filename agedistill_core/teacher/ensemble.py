"""Soft voting on one age axis (0..100), and the per-face agreement measures."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agedistill_core.errors import ConfigError
from agedistill_core.images import resize
from agedistill_core.settings import TeacherSettings
from agedistill_core.teacher.members import Member, make_member
from agedistill_core.teacher.variants import make_variants

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
    age: np.ndarray           # (N,) voted expected age (the children vote where gated)
    probs: np.ndarray         # (N, 101) voted vector on AGE_AXIS (the children vote where gated)
    member_probs: np.ndarray  # (N, M, 101) each general member's vector (averaged over variants)
    member_ages: np.ndarray   # (N, M)
    age_spread: np.ndarray    # (N,) standard deviation of member ages
    entropy: np.ndarray       # (N,) entropy of the voted vector (nats)
    gated: np.ndarray | None = None          # (N,) bool: the children members decided
    children_ages: np.ndarray | None = None  # (N, C) children members' ages, nan where not gated

    def __post_init__(self):
        n = len(self.age)
        if self.gated is None:
            self.gated = np.zeros(n, bool)
        if self.children_ages is None:
            self.children_ages = np.full((n, 0), np.nan)


class Teacher:
    """General members soft-voted over test-time variants, plus the children gate (SPEC 3).

    For each face: every member sees every variant (``variants`` 8 or 1); each
    member's vectors are re-binned onto ages 0..100 and averaged over the
    variants (kept per member), then averaged over members (soft voting; equal
    to the average over all member x variant vectors) and the age is the
    expectation.  When children members exist and the general age is
    ``<= children_gate``, the children's member x variant average replaces the
    vector and the age, and ``gated`` is set.
    """

    def __init__(self, members: list[Member], children: list[Member] | None = None, *,
                 variants: int = 1, children_gate: float = 12.0):
        if not members:
            raise ValueError("a teacher needs at least one member")
        self.members = list(members)
        self.children = list(children or [])
        self.variants = int(variants)
        self.children_gate = float(children_gate)

    @property
    def input_sizes(self) -> set[int]:
        return {m.input_size for m in self.members + self.children}

    @property
    def stack_size(self) -> int | None:
        """The size to resize crops to before ``label``: every member's input size when they share
        one; None (keep the crops' own size) when they do not, e.g. 96 px children members beside
        the 64 px general member, so that each member resizes the crop itself and none sees a face
        resampled twice (a 160 -> 96 -> 64 px general member moved its MAE by 0.1 year)."""
        sizes = self.input_sizes
        return next(iter(sizes)) if len(sizes) == 1 else None

    def stack(self, crops: list[np.ndarray]) -> np.ndarray:
        """Decoded uint8 crops -> one (N, S, S, 3) batch for ``label`` (``stack_size``; crops of
        unequal sizes, with no common input size, go to the largest of them)."""
        size = self.stack_size or max(max(c.shape[:2]) for c in crops)
        return np.stack([resize(c, size) for c in crops])

    def member_vectors(self, crops: np.ndarray, members: list[Member]) -> np.ndarray:
        """(N, M, 101): each member's variant-averaged vector on AGE_AXIS."""
        n = len(crops)
        cache: dict[tuple, np.ndarray] = {}
        out = np.empty((n, len(members), len(AGE_AXIS)))
        for j, m in enumerate(members):
            key = (type(m).resize, m.input_size)  # variants made once per resizing, at the member's size
            if key not in cache:
                v = make_variants(m.resize(crops), self.variants)
                cache[key] = v.reshape((-1,) + v.shape[2:])
            p = rebin(m.predict(cache[key]), m.bins)  # (N * V, 101)
            p /= p.sum(-1, keepdims=True)
            out[:, j] = p.reshape(n, self.variants, -1).mean(1)
        return out

    def label(self, crops: np.ndarray) -> TeacherOutput:
        """Label a batch of uint8 RGB face crops (N, S, S, 3)."""
        crops = np.asarray(crops)
        per_member = self.member_vectors(crops, self.members)  # (N, M, 101)
        voted = per_member.mean(1)
        member_ages = expected_age(per_member)
        age = expected_age(voted)
        gated = np.zeros(len(crops), bool)
        children_ages = np.full((len(crops), len(self.children)), np.nan)
        if self.children:
            gated = age <= self.children_gate
            if gated.any():
                kids = self.member_vectors(crops[gated], self.children)  # (G, C, 101)
                voted = voted.copy()
                voted[gated] = kids.mean(1)
                age = expected_age(voted)
                children_ages[gated] = expected_age(kids)
        return TeacherOutput(
            age=age,
            probs=voted,
            member_probs=per_member,
            member_ages=member_ages,
            age_spread=member_ages.std(1),
            entropy=entropy(voted),
            gated=gated,
            children_ages=children_ages,
        )


def member_from_spec(spec, *, threads: int = 0, base_dir=None) -> Member:
    """A member from a params entry: a registered name, or ``{name: ..., options}``."""
    if isinstance(spec, str):
        return make_member(spec, threads=threads, base_dir=base_dir)
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        opts = {k: v for k, v in spec.items() if k != "name"}
        return make_member(spec["name"], threads=threads, base_dir=base_dir, **opts)
    raise ConfigError(f"teacher member {spec!r}: expected a registered name or a mapping with 'name'")


def build_teacher(cfg: TeacherSettings, base_dir=None) -> Teacher:
    """The teacher of ``cfg``; relative member file paths resolve against ``base_dir``."""
    members = [member_from_spec(m, threads=cfg.threads, base_dir=base_dir) for m in cfg.members]
    children = [member_from_spec(m, threads=cfg.threads, base_dir=base_dir) for m in cfg.children]
    return Teacher(members, children, variants=cfg.variants, children_gate=cfg.children_gate)
