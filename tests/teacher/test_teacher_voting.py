"""Re-binning, soft voting over members x variants, and the children gate."""
from __future__ import annotations

import numpy as np
import pytest

from agedistill_core.teacher import AGE_AXIS, Member, Teacher, rebin
from agedistill_core.teacher.ensemble import entropy


class FakeMember(Member):
    """Returns fixed vectors per face (by the crop's first pixel) and per variant."""

    def __init__(self, name, bins, table, input_size=16):
        super().__init__(name=name, input_size=input_size, bins=np.asarray(bins, float),
                         mean=(0, 0, 0), scale=1.0)
        self.table = table  # face key -> (V, len(bins)) or (len(bins),)
        self.calls = 0

    def predict(self, crops):
        self.calls += 1
        n_var = self.n_var
        keys = crops[::n_var, 0, 0, 0]  # variant 0 (original) keeps the marker pixel
        rows = []
        for k in keys:
            t = np.asarray(self.table[int(k)], float)
            rows.append(np.broadcast_to(t, (n_var, t.shape[-1])))
        return np.concatenate(rows)


def faces(keys, size=16):
    out = np.zeros((len(keys), size, size, 3), np.uint8)
    out[:, 0, 0, 0] = keys
    return out


def onehot(n, i):
    v = np.zeros(n)
    v[i] = 1
    return v


def test_rebin_keeps_mass_and_expectation():
    bins = np.array([0.25, 1, 2.5, 10, 80])
    p = np.array([[0.1, 0.2, 0.3, 0.2, 0.2]])
    r = rebin(p, bins)
    assert r.shape == (1, 101)
    assert r.sum() == pytest.approx(1)
    assert (r @ AGE_AXIS)[0] == pytest.approx((p @ bins)[0])
    np.testing.assert_allclose(rebin(np.eye(101), AGE_AXIS), np.eye(101))


def test_soft_vote_is_the_mean_over_members_and_variants():
    n_var = 8
    # member a: variant-dependent one-hots (mean age = mean of the 8 ages)
    a_ages = [20, 22, 24, 26, 28, 30, 32, 34]
    a = FakeMember("a", AGE_AXIS, {7: np.stack([onehot(101, x) for x in a_ages])})
    # member b: 11 coarse bins every 10 years, all mass at 50
    b = FakeMember("b", np.arange(0, 101, 10), {7: onehot(11, 5)})
    for m in (a, b):
        m.n_var = n_var
    out = Teacher([a, b], variants=n_var).label(faces([7]))
    assert out.member_ages[0] == pytest.approx([27.0, 50.0])
    assert out.age[0] == pytest.approx((27 + 50) / 2)
    expected = (np.mean([onehot(101, x) for x in a_ages], 0) + onehot(101, 50)) / 2
    np.testing.assert_allclose(out.probs[0], expected)
    assert out.age_spread[0] == pytest.approx(np.std([27.0, 50.0]))
    assert out.entropy[0] == pytest.approx(entropy(expected))
    assert out.member_probs.shape == (1, 2, 101) and not out.gated[0]


@pytest.mark.parametrize("general_age, fires", [(11.5, True), (12.0, True), (12.5, False), (30.0, False)])
def test_children_gate_fires_only_at_or_below_12(general_age, fires):
    lo = int(np.floor(general_age))
    general_vec = np.zeros(101)
    general_vec[lo] = 1 - (general_age - lo)
    general_vec[min(lo + 1, 100)] += general_age - lo
    gen = FakeMember("general", AGE_AXIS, {3: general_vec})
    kid1 = FakeMember("kid1", np.arange(13), {3: onehot(13, 4)})    # ages 0..12
    kid2 = FakeMember("kid2", np.arange(13), {3: onehot(13, 8)})
    for m in (gen, kid1, kid2):
        m.n_var = 8
    out = Teacher([gen], [kid1, kid2], variants=8, children_gate=12).label(faces([3]))
    assert out.gated[0] == fires
    assert out.member_ages[0, 0] == pytest.approx(general_age)  # general members are kept
    if fires:
        assert out.age[0] == pytest.approx(6.0)                 # (4 + 8) / 2: the children decide
        np.testing.assert_allclose(out.probs[0], (onehot(101, 4) + onehot(101, 8)) / 2)
        assert out.children_ages[0] == pytest.approx([4.0, 8.0])
    else:
        assert out.age[0] == pytest.approx(general_age)
        assert kid1.calls == 0 and np.isnan(out.children_ages[0]).all()


def test_gate_runs_children_only_on_gated_faces():
    gen = FakeMember("general", AGE_AXIS, {1: onehot(101, 5), 2: onehot(101, 40)})
    kid = FakeMember("kid", np.arange(13), {1: onehot(13, 3), 2: onehot(13, 9)})
    gen.n_var = kid.n_var = 1
    out = Teacher([gen], [kid], variants=1).label(faces([1, 2]))
    assert out.gated.tolist() == [True, False]
    assert out.age.tolist() == pytest.approx([3.0, 40.0])


def test_no_children_never_gates():
    gen = FakeMember("general", AGE_AXIS, {1: onehot(101, 5)})
    gen.n_var = 1
    out = Teacher([gen]).label(faces([1]))
    assert not out.gated[0] and out.age[0] == pytest.approx(5)
