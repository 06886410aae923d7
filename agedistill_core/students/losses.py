"""Student losses (SPEC section 4) and per-sample weighting.

Every loss object has

* ``n_outputs`` - the width of the network head it expects;
* ``ages(outputs) -> (N,)`` - the predicted age in years;
* ``__call__(outputs, target_age, target_probs=None, weight=None)`` - a scalar.

``weight`` (N,) is detached and normalised to mean 1 over the batch, so the
loss scale does not depend on the weighting; the result is
``mean(w_i / mean(w) * loss_i)``.

Registered names (``make_loss(name, **kwargs)``):

``paper``         one output, ReLU capped at 100 (``clamp(0, 100)``), MSE to
                  ``target_age``.  The paper's student.  Note: the clamp has zero
                  gradient outside [0, 100]; start the head bias inside the range.
``l1``            same head, L1 to ``target_age`` (extra baseline).
``distribution``  101 outputs (ages 0..100), age = softmax expectation; loss =
                  ``KL(p || softmax(outputs)) + l1_weight * |E[age] - target_age|``
                  with ``p`` the teacher's probabilities.  ``l1_weight`` defaults
                  to 0.1: KL is O(1) nats while the L1 term is in years (a few
                  years for a useful student), so 0.1 keeps the two comparable
                  without letting the mean term dominate.  Without teacher
                  probabilities (ground-truth baseline) ``p`` is a discretised
                  Gaussian around ``target_age`` with ``label_sigma`` = 2 years.
``children``      the same loss on 13 outputs (ages 0..12): SPEC 3's children-specialist
                  teacher members, trained on real ages 0..12 (``students.max_age: 12``);
                  ``label_sigma`` 1 year, since 2 would spread a toddler's label over a
                  sixth of the whole axis.

Heads over ages expose ``bins`` (the age of each output), which a teacher member
reports to the ensemble so that ``teacher.ensemble.rebin`` maps them onto ages 0..100.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from agedistill_core.ages import age_band
from agedistill_core.errors import ConfigError
from agedistill_core.registry import Registry

LOSSES: Registry = Registry("loss")

N_AGE_BINS = 101  # ages 0..100
MAX_AGE = 100.0


def _weighted_mean(per_sample: torch.Tensor, weight) -> torch.Tensor:
    if weight is None:
        return per_sample.mean()
    w = torch.as_tensor(weight, dtype=per_sample.dtype, device=per_sample.device).detach().reshape(-1)
    if w.shape[0] != per_sample.shape[0]:
        raise ValueError(f"weight has {w.shape[0]} entries for a batch of {per_sample.shape[0]}")
    if bool((w < 0).any()):
        raise ValueError("sample weights must be >= 0")
    w = w / w.mean().clamp_min(1e-12)
    return (w * per_sample).mean()


def _target(target_age, ref: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(target_age, dtype=ref.dtype, device=ref.device).reshape(-1)
    if t.shape[0] != ref.shape[0]:
        raise ValueError(f"target_age has {t.shape[0]} entries for a batch of {ref.shape[0]}")
    return t


def gaussian_labels(target_age, sigma: float = 2.0, n_bins: int = N_AGE_BINS) -> torch.Tensor:
    """(N, n_bins) discretised Gaussian over ages ``0..n_bins-1``, rows sum to 1."""
    t = torch.as_tensor(target_age, dtype=torch.float32).reshape(-1, 1)
    bins = torch.arange(n_bins, dtype=t.dtype, device=t.device).view(1, -1)
    logits = -((bins - t) ** 2) / (2.0 * float(sigma) ** 2)
    return torch.softmax(logits, dim=1)


class _ScalarHeadLoss:
    """One output, read as ``clamp(x, 0, cap)`` (a ReLU capped at ``cap``)."""

    n_outputs = 1

    def __init__(self, cap: float = MAX_AGE):
        if not cap > 0:
            raise ConfigError(f"loss cap must be > 0, got {cap!r}")
        self.cap = float(cap)

    def ages(self, outputs: torch.Tensor) -> torch.Tensor:
        if outputs.ndim == 2 and outputs.shape[1] != 1:
            raise ValueError(f"{type(self).__name__} expects 1 output per sample, got {outputs.shape[1]}")
        return outputs.reshape(-1).clamp(0.0, self.cap)

    def _per_sample(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, outputs, target_age, target_probs=None, weight=None) -> torch.Tensor:
        pred = self.ages(outputs)
        return _weighted_mean(self._per_sample(pred, _target(target_age, pred)), weight)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cap={self.cap})"


@LOSSES.register("paper")
class PaperLoss(_ScalarHeadLoss):
    """The paper's student: capped-ReLU regression head, MSE (years^2)."""

    def _per_sample(self, pred, target):
        return (pred - target) ** 2


@LOSSES.register("l1")
class L1AgeLoss(_ScalarHeadLoss):
    """Capped-ReLU regression head, mean absolute error (years)."""

    def _per_sample(self, pred, target):
        return (pred - target).abs()


@LOSSES.register("distribution")
class DistributionLoss:
    """Softmax over ages 0..100: KL to the teacher's distribution + weighted L1."""

    n_outputs = N_AGE_BINS

    @property
    def bins(self) -> np.ndarray:
        """The age (years) of each output: 0..n_outputs-1."""
        return np.arange(self.n_outputs, dtype=np.float64)

    def __init__(self, l1_weight: float = 0.1, label_sigma: float = 2.0):
        if not (math.isfinite(l1_weight) and l1_weight >= 0):
            raise ConfigError(f"distribution loss l1_weight must be >= 0, got {l1_weight!r}")
        if not (math.isfinite(label_sigma) and label_sigma > 0):
            raise ConfigError(f"distribution loss label_sigma must be > 0, got {label_sigma!r}")
        self.l1_weight = float(l1_weight)
        self.label_sigma = float(label_sigma)

    def _check(self, outputs: torch.Tensor) -> None:
        if outputs.ndim != 2 or outputs.shape[1] != self.n_outputs:
            raise ValueError(f"distribution loss expects (N, {self.n_outputs}) outputs, got {tuple(outputs.shape)}")

    def ages(self, outputs: torch.Tensor) -> torch.Tensor:
        self._check(outputs)
        bins = torch.arange(self.n_outputs, dtype=outputs.dtype, device=outputs.device)
        return torch.softmax(outputs, dim=1) @ bins

    def __call__(self, outputs, target_age, target_probs=None, weight=None) -> torch.Tensor:
        self._check(outputs)
        log_q = torch.log_softmax(outputs, dim=1)
        target = _target(target_age, outputs)
        if target_probs is None:
            p = gaussian_labels(target.detach().cpu(), self.label_sigma, self.n_outputs)
        else:
            p = torch.as_tensor(target_probs)
            if p.shape != outputs.shape:
                raise ValueError(f"target_probs has shape {tuple(p.shape)}, expected {tuple(outputs.shape)}")
            p = p.clamp_min(0)
            p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)
        p = p.to(dtype=outputs.dtype, device=outputs.device).detach()
        cross = torch.where(p > 0, p * log_q, torch.zeros_like(log_q))  # 0 * log 0 = 0
        kl = (torch.xlogy(p, p) - cross).sum(dim=1)
        bins = torch.arange(self.n_outputs, dtype=outputs.dtype, device=outputs.device)
        expected = log_q.exp() @ bins
        per = kl + self.l1_weight * (expected - target).abs()
        return _weighted_mean(per, weight)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(l1_weight={self.l1_weight}, label_sigma={self.label_sigma})"


CHILDREN_MAX_AGE = 12  # SPEC 3: the children members' 13 probabilities are ages 0..12


@LOSSES.register("children")
class ChildrenLoss(DistributionLoss):
    """``distribution`` over ages 0..12 only: a children-specialist teacher member's head.

    Trained on real ages (no teacher vectors over 0..100 fit 13 bins), so the target is a
    discretised Gaussian (``label_sigma`` 1 year, renormalised inside 0..12) plus the L1
    term on the expected age, which pulls back the ends (0 and 12), where a truncated
    Gaussian and an unsure softmax both lean inwards (docs/teacher.md measures what is left:
    +0.5 year on 1-year-olds)."""

    n_outputs = CHILDREN_MAX_AGE + 1

    def __init__(self, l1_weight: float = 0.1, label_sigma: float = 1.0):
        super().__init__(l1_weight=l1_weight, label_sigma=label_sigma)


def make_loss(name: str, **kwargs: Any):
    """Create a registered loss; unknown names or options raise ``ConfigError``."""
    factory = LOSSES.get(name)
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad option(s) for loss {name!r}: {e}; fix train.loss in params.yaml") from None


def agreement_weights(age_spread, tau: float):
    """Per-sample weights ``w = exp(-spread / tau)``.

    ``age_spread`` is the teacher members' disagreement in years (e.g. the std
    of their age estimates); ``tau`` (years, > 0) is the spread at which a
    sample's weight falls to 1/e.  Negative spreads are treated as 0.  Returns
    the same kind (numpy array or tensor) as given, unnormalised - the losses
    normalise weights to mean 1 over each batch.
    """
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ConfigError(f"agreement weighting needs tau > 0 (years), got {tau!r}")
    if isinstance(age_spread, torch.Tensor):
        s = age_spread.detach()
        if not s.is_floating_point():
            s = s.float()
        return torch.exp(-s.clamp_min(0) / tau)
    s = np.asarray(age_spread, dtype=np.float64)
    return np.exp(-np.maximum(s, 0.0) / tau)


def band_weights(target_age, power: float = 1.0) -> np.ndarray:
    """Per-sample weights against age imbalance: ``(1 / share of the sample's age band) ** power``.

    Bands are SPEC section 5's corpus groups (0-15, 16-25, 26-35, 36-45, 46-60,
    61+), taken from the training targets (the teacher's ages when distilling),
    so every band weighs the same in the loss with ``power`` 1 (``balance:
    band``) and less extremely with 0.5 (``balance: band_sqrt``).  Returned with
    mean 1 over the samples; samples without a target weigh 1.
    """
    ages = np.asarray(target_age, np.float64)
    known = np.isfinite(ages)
    w = np.ones(len(ages), np.float64)
    if known.any():
        bands = np.array(age_band(ages[known]))
        names, inverse, counts = np.unique(bands, return_inverse=True, return_counts=True)
        share = counts / counts.sum()
        w[known] = (1.0 / share[inverse]) ** float(power)
    return w / w.mean()


def blend_ground_truth(target_age, target_probs, gt_age, weight: float, sigma: float = 2.0):
    """Targets that mix real ages into the teacher's (Hinton et al.'s soft + hard targets).

    Where ``gt_age`` is known, the age becomes ``(1 - weight) * teacher + weight * real`` and the
    probability vector the same mix of the teacher's vector and a discretised Gaussian of ``sigma``
    years around the real age.  Cross-entropy is linear in its target, so training on the mixed
    vector is exactly ``(1 - weight)`` x the loss to the teacher + ``weight`` x the loss to the real
    age.  Faces without a real age keep the teacher's targets.  Returns new ``(age, probs)`` arrays.
    """
    age = np.asarray(target_age, np.float32).copy()
    probs = np.asarray(target_probs, np.float32).copy()
    gt = np.asarray(gt_age, np.float32)
    if not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"gt weight must be in [0, 1], got {weight!r}")
    mix = np.flatnonzero(np.isfinite(gt) & np.isfinite(age))
    if len(mix) and weight:
        w = np.float32(weight)
        age[mix] = (1 - w) * age[mix] + w * gt[mix]
        real = gaussian_labels(gt[mix], sigma, probs.shape[1]).numpy()
        probs[mix] = (1 - w) * probs[mix] + w * real
    return age, probs


# --- group heads (SPEC 5 group protocol): targets are group indices 0..K-1 -----------------

class _GroupLoss:
    """A head over ``n_groups`` ordered age groups; ``ages`` gives the predicted group index
    (so the engine's MAE is the mean distance in groups, and 0 means every face right)."""

    def __init__(self, n_groups: int = 2):
        if not (isinstance(n_groups, int) and n_groups >= 2):
            raise ConfigError(f"a group head needs at least 2 groups, got {n_groups!r}")
        self.n_groups = int(n_groups)

    def _check(self, outputs: torch.Tensor) -> None:
        if outputs.ndim != 2 or outputs.shape[1] != self.n_outputs:
            raise ValueError(f"{type(self).__name__} expects (N, {self.n_outputs}) outputs, got {tuple(outputs.shape)}")

    def _groups(self, target, ref: torch.Tensor) -> torch.Tensor:
        t = _target(target, ref).round().long()
        if bool(((t < 0) | (t >= self.n_groups)).any()):
            raise ValueError(f"group targets must be in 0..{self.n_groups - 1}")
        return t

    def groups(self, outputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def ages(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.groups(outputs).to(outputs.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_groups={self.n_groups})"


@LOSSES.register("groups")
class GroupSoftmaxLoss(_GroupLoss):
    """SPEC 5 (Adience protocol): a softmax over the groups, cross-entropy."""

    @property
    def n_outputs(self) -> int:
        return self.n_groups

    def groups(self, outputs):
        self._check(outputs)
        return outputs.argmax(1)

    def __call__(self, outputs, target_age, target_probs=None, weight=None) -> torch.Tensor:
        self._check(outputs)
        per = torch.nn.functional.cross_entropy(outputs, self._groups(target_age, outputs), reduction="none")
        return _weighted_mean(per, weight)


@LOSSES.register("ordinal")
class OrdinalLoss(_GroupLoss):
    """Ordinal head with cumulative logits, trained as CORN (Shi, Cao and Raschka 2023).

    ``K - 1`` outputs; output ``k`` is the logit of P(group > k | group > k - 1), learned only
    on the faces whose group is above ``k - 1`` (binary cross-entropy).  The cumulative
    probability P(group > k) is the product of the first ``k + 1`` conditional ones, so it
    never rises with ``k`` (rank-consistent), and the predicted group is the number of
    thresholds whose cumulative probability exceeds 0.5.  A plain linear head: checkpoints
    load into the architecture with ``K - 1`` outputs.
    """

    @property
    def n_outputs(self) -> int:
        return self.n_groups - 1

    def cumulative(self, outputs: torch.Tensor) -> torch.Tensor:
        """(N, K-1): P(group > k)."""
        self._check(outputs)
        return torch.cumprod(torch.sigmoid(outputs), dim=1)

    def groups(self, outputs):
        return (self.cumulative(outputs) > 0.5).sum(1)

    def __call__(self, outputs, target_age, target_probs=None, weight=None) -> torch.Tensor:
        self._check(outputs)
        y = self._groups(target_age, outputs).view(-1, 1)
        k = torch.arange(self.n_outputs, device=outputs.device).view(1, -1)
        active = (y > k - 1).to(outputs.dtype)           # task k sees the faces above group k - 1
        label = (y > k).to(outputs.dtype)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(outputs, label, reduction="none")
        per = (bce * active).sum(1) / active.sum(1).clamp_min(1)  # mean over each face's active tasks
        return _weighted_mean(per, weight)


GROUP_LOSSES = ("groups", "ordinal")
