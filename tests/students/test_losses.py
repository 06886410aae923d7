"""Student losses: hand-computed values, gradients, weighting, registry."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agedistill_core.errors import ConfigError
from agedistill_core.students.losses import (
    LOSSES,
    DistributionLoss,
    PaperLoss,
    agreement_weights,
    blend_ground_truth,
    gaussian_labels,
    make_loss,
)


def test_registry_and_factory():
    assert LOSSES.names() == ["children", "distribution", "groups", "l1", "ordinal", "paper"]
    assert make_loss("paper").n_outputs == 1
    assert make_loss("l1").n_outputs == 1
    d = make_loss("distribution", l1_weight=0.5)
    assert d.n_outputs == 101 and d.l1_weight == 0.5
    with pytest.raises(ConfigError, match="unknown loss 'mse'"):
        make_loss("mse")
    with pytest.raises(ConfigError, match="paper"):
        make_loss("paper", l1_weight=1.0)
    with pytest.raises(ConfigError, match="l1_weight"):
        make_loss("distribution", l1_weight=-1.0)


def test_paper_loss_values_cap_and_grad():
    loss = make_loss("paper")
    out = torch.tensor([[-5.0], [30.0], [120.0], [50.0]], requires_grad=True)
    ages = loss.ages(out)
    assert ages.tolist() == [0.0, 30.0, 100.0, 50.0]  # ReLU capped at 100
    target = torch.tensor([10.0, 20.0, 90.0, 50.0])
    value = loss(out, target, None, None)
    assert value.item() == pytest.approx((100 + 100 + 100 + 0) / 4)
    value.backward()
    # gradient flows inside [0, 100] only: d/dx (x - t)^2 / N
    assert out.grad.reshape(-1).tolist() == pytest.approx([0.0, 2 * 10 / 4, 0.0, 0.0])


def test_l1_loss_values():
    loss = make_loss("l1")
    out = torch.tensor([[12.0], [40.0]], requires_grad=True)
    value = loss(out, torch.tensor([10.0, 45.0]))
    assert value.item() == pytest.approx(3.5)
    value.backward()
    assert out.grad.reshape(-1).tolist() == pytest.approx([0.5, -0.5])


def test_weighting_normalised_to_mean_one():
    loss = make_loss("paper")
    out = torch.tensor([[10.0], [20.0]])
    target = torch.tensor([12.0, 30.0])  # per-sample 4 and 100
    assert loss(out, target).item() == pytest.approx(52.0)
    # weights (1, 3) -> (0.5, 1.5): mean(0.5 * 4, 1.5 * 100) = 76
    assert loss(out, target, None, torch.tensor([1.0, 3.0])).item() == pytest.approx(76.0)
    # scale-free: (10, 30) gives the same; uniform weights give the plain mean
    assert loss(out, target, None, np.array([10.0, 30.0])).item() == pytest.approx(76.0)
    assert loss(out, target, None, torch.tensor([7.0, 7.0])).item() == pytest.approx(52.0)
    # down-weighting the bad sample lowers the loss
    assert loss(out, target, None, torch.tensor([1.0, 0.1])).item() < 52.0
    with pytest.raises(ValueError, match="weight"):
        loss(out, target, None, torch.tensor([1.0]))


def test_distribution_loss_zero_when_student_equals_teacher():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(3, 101) * 3, dim=1).double()
    expected = probs @ torch.arange(101.0, dtype=torch.float64)
    loss = DistributionLoss()
    student = probs.log().clone().requires_grad_(True)
    assert torch.allclose(loss.ages(student), expected, atol=1e-6)
    assert abs(loss(student, expected, probs, None).item()) < 1e-6
    # The KL term has a true minimum here, so its gradient vanishes.  The L1 term
    # has a kink at zero error, where the subgradient's sign depends on rounding
    # (it differs between processors), so it is checked without the L1 term.
    kl_only = DistributionLoss(l1_weight=0.0)
    value = kl_only(student, expected, probs, None)
    value.backward()
    assert student.grad.abs().max().item() < 1e-6


def test_distribution_loss_hand_computed_and_grad():
    loss = DistributionLoss(l1_weight=0.1)
    # student: uniform over 101 ages -> expectation 50; teacher: all mass on age 30
    out = torch.zeros(1, 101, requires_grad=True)
    teacher = torch.zeros(1, 101)
    teacher[0, 30] = 1.0
    value = loss(out, torch.tensor([30.0]), teacher, None)
    # KL(delta_30 || uniform) = log(101); L1 = |50 - 30| = 20
    assert value.item() == pytest.approx(math.log(101) + 0.1 * 20, rel=1e-5)
    value.backward()
    g = out.grad[0]
    assert g[30] < 0 and g[90] > 0  # pushes mass towards 30, away from old ages


def test_distribution_loss_ground_truth_labels():
    p = gaussian_labels(torch.tensor([40.0, 0.0]), sigma=2.0)
    assert p.shape == (2, 101)
    assert torch.allclose(p.sum(1), torch.ones(2))
    assert p[0].argmax().item() == 40
    assert (p[0] @ torch.arange(101.0)).item() == pytest.approx(40.0, abs=1e-3)
    assert p[0, 42].item() / p[0, 40].item() == pytest.approx(math.exp(-4 / 8), rel=1e-4)
    loss = DistributionLoss()
    logits = torch.log(p).clone().requires_grad_(True)
    # student equal to the label distribution: only the L1 term on the truncated row remains
    v = loss(logits, torch.tensor([40.0, 0.0]))
    e0 = (p[1] @ torch.arange(101.0)).item()
    assert v.item() == pytest.approx(0.1 * e0 / 2, abs=1e-4)
    v.backward()
    assert logits.grad is not None
    with pytest.raises(ValueError, match="target_probs"):
        loss(logits, torch.tensor([1.0, 2.0]), torch.ones(2, 100) / 100)


def test_blend_ground_truth_mixes_real_ages_where_known():
    teacher = gaussian_labels(torch.tensor([30.0, 8.0, 60.0]), sigma=5.0).numpy()
    t_age = teacher @ np.arange(101.0)
    gt = np.array([20.0, np.nan, 70.0], np.float32)
    age, probs = blend_ground_truth(t_age, teacher, gt, 0.25)
    assert age[0] == pytest.approx(0.75 * t_age[0] + 0.25 * 20.0, abs=1e-4)
    assert age[1] == pytest.approx(t_age[1], abs=1e-5) and np.array_equal(probs[1], teacher[1])  # no real age
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert probs[0] @ np.arange(101.0) == pytest.approx(age[0], abs=1e-2)  # the vector's mean is the mixed age
    # cross-entropy is linear in its target: the mixed vector trains (1 - w) x teacher + w x real age
    logq = torch.log_softmax(torch.randn(3, 101, generator=torch.Generator().manual_seed(0)), 1).numpy()
    real = gaussian_labels(torch.tensor([20.0]), 2.0).numpy()[0]
    ce = lambda p: -(p * logq[0]).sum()  # noqa: E731
    assert ce(probs[0]) == pytest.approx(0.75 * ce(teacher[0]) + 0.25 * ce(real), rel=1e-4)
    same_age, same = blend_ground_truth(t_age, teacher, gt, 0.0)  # weight 0: the teacher's targets
    assert np.array_equal(same, teacher) and np.array_equal(same_age, t_age.astype(np.float32))
    assert np.allclose(blend_ground_truth(t_age, teacher, gt, 1.0)[1][2], gaussian_labels(torch.tensor([70.0])).numpy()[0],
                       atol=1e-6)
    with pytest.raises(ValueError, match="gt weight"):
        blend_ground_truth(t_age, teacher, gt, 1.5)


def test_distribution_weighting():
    torch.manual_seed(1)
    out = torch.randn(2, 101)
    tgt = torch.tensor([20.0, 70.0])
    loss = DistributionLoss()
    per = torch.stack([loss(out[i:i + 1], tgt[i:i + 1]) for i in range(2)])
    w = torch.tensor([3.0, 1.0])
    assert loss(out, tgt, None, w).item() == pytest.approx(((w / w.mean()) * per).mean().item(), rel=1e-5)


def test_agreement_weights():
    spread = np.array([0.0, 2.0, 4.0, -1.0])
    w = agreement_weights(spread, tau=2.0)
    assert isinstance(w, np.ndarray)
    np.testing.assert_allclose(w, [1.0, math.exp(-1), math.exp(-2), 1.0])
    t = agreement_weights(torch.tensor([0.0, 2.0]), 2.0)
    assert isinstance(t, torch.Tensor)
    assert t.tolist() == pytest.approx([1.0, math.exp(-1)])
    with pytest.raises(ConfigError, match="tau"):
        agreement_weights(spread, 0.0)
    # used as loss weights, agreed-upon samples dominate
    loss = PaperLoss()
    out = torch.tensor([[10.0], [20.0]])
    target = torch.tensor([12.0, 30.0])
    low = loss(out, target, None, agreement_weights(np.array([0.0, 10.0]), 2.0))
    assert low.item() < loss(out, target).item()


def test_children_loss_is_the_distribution_loss_over_ages_0_to_12():
    """SPEC 3's children members: 13 bins (ages 0..12), real-age targets as a 1-year Gaussian."""
    loss = make_loss("children")
    assert loss.n_outputs == 13 and loss.bins.tolist() == list(range(13)) and loss.label_sigma == 1.0
    target = torch.tensor([0.0, 5.0, 12.0])
    logits = torch.log(gaussian_labels(target, 1.0, 13))  # the target itself: only the L1 term is left
    np.testing.assert_allclose(loss.ages(logits).numpy(), [0.0, 5.0, 12.0], atol=0.6)
    assert float(loss(logits, target)) < float(loss(torch.zeros(3, 13), target))
    with pytest.raises(ValueError, match=r"\(N, 13\) outputs"):
        loss(torch.zeros(3, 101), target)
