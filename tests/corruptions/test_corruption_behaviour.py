"""Determinism, seeds, shapes and dtypes for every corruption x severity."""
from __future__ import annotations

import numpy as np
import pytest

from agedistill_core.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corruption_names

ALL = [(n, s) for n in corruption_names() for s in SEVERITIES]
RANDOM = [n for n in corruption_names() if CORRUPTIONS.get(n).random]


def test_random_flags():
    assert RANDOM == ["motion_blur", "gaussian_noise", "shot_noise", "spatter"]


@pytest.mark.parametrize("name,severity", ALL)
def test_deterministic_and_unmodified_input(synthetic, name, severity):
    before = synthetic.copy()
    a = corrupt(synthetic, name, severity, seed=42)
    b = corrupt(synthetic, name, severity, seed=42)
    np.testing.assert_array_equal(synthetic, before)
    assert a.dtype == np.uint8 and a.shape == synthetic.shape
    assert a.tobytes() == b.tobytes()
    c = corrupt(synthetic, name, severity, seed=43)
    if name in RANDOM:
        assert a.tobytes() != c.tobytes()
    else:
        assert a.tobytes() == c.tobytes()


@pytest.mark.parametrize("name,severity", ALL)
def test_changes_the_image(synthetic, name, severity):
    out = corrupt(synthetic, name, severity, seed=1)
    assert np.abs(out.astype(int) - synthetic).mean() > 0.5


@pytest.mark.parametrize("name", corruption_names())
def test_severity_is_monotone_on_average(synthetic, name):
    # mean absolute change grows (weakly) with severity, averaged over seeds;
    # the brightness/contrast/jpeg steps are tiny at the top, so allow slack
    diffs = [np.mean([np.abs(corrupt(synthetic, name, s, seed=k).astype(int) - synthetic).mean()
                      for k in range(3)]) for s in SEVERITIES]
    assert diffs[-1] > diffs[0]


SHAPES = [(1, 1), (2, 3), (5, 7), (20, 17), (17, 20), (31, 31), (33, 47), (64, 48)]


@pytest.mark.parametrize("shape", SHAPES)
def test_small_and_odd_sizes(shape):
    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    for name, severity in ALL:
        out = corrupt(img, name, severity, seed=3)
        assert out.shape == img.shape and out.dtype == np.uint8, (name, severity)


def test_non_contiguous_input(synthetic):
    view = synthetic[::2, ::-1]
    for name in corruption_names():
        np.testing.assert_array_equal(corrupt(view, name, 3, seed=0),
                                      corrupt(view.copy(), name, 3, seed=0))


def test_tiny_motion_blur_is_identity():
    # radius = floor(r0 H / 144), sigma = floor(s0 H / 144) (SPEC: scaled by H/48, // 3)
    # H = 10: sigma = floor(3 * 10 / 144) = 0 -> ImageMagick's epsilon sigma -> identity
    img = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    np.testing.assert_array_equal(corrupt(img, "motion_blur", 1, seed=0), img)
    # H = 47, severity 1: radius 3, sigma floor(141 / 144) = 0 -> still the identity
    img = np.random.default_rng(0).integers(0, 256, (47, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(corrupt(img, "motion_blur", 1, seed=0), img)
    # H = 48, severity 1: radius 3, sigma 1 -> a real blur
    img = np.random.default_rng(0).integers(0, 256, (48, 30, 3), dtype=np.uint8)
    assert not np.array_equal(corrupt(img, "motion_blur", 1, seed=0), img)
    # H = 20, severity 5: radius floor(400 / 144) = 2, sigma floor(300 / 144) = 2
    img = np.random.default_rng(0).integers(0, 256, (20, 17, 3), dtype=np.uint8)
    assert not np.array_equal(corrupt(img, "motion_blur", 5, seed=0), img)


def test_constant_image_is_fixed_by_blurs():
    img = np.full((37, 29, 3), 97, np.uint8)
    for name in ("gaussian_blur", "defocus_blur", "zoom_blur", "motion_blur", "pixelation",
                 "contrast_increase", "contrast_decrease"):
        for s in SEVERITIES:
            out = corrupt(img, name, s, seed=0)
            assert np.abs(out.astype(int) - 97).max() <= 1, (name, s)


def test_brightness_direction(synthetic):
    base = synthetic.astype(int).sum()
    assert corrupt(synthetic, "brightness_increase", 3, seed=0).astype(int).sum() > base
    assert corrupt(synthetic, "brightness_decrease", 3, seed=0).astype(int).sum() < base
    assert corrupt(synthetic, "contrast_increase", 3, seed=0).std() > synthetic.std()
    assert corrupt(synthetic, "contrast_decrease", 3, seed=0).std() < synthetic.std()


@pytest.mark.parametrize("q", [60, 29, 15, 8, 5])
def test_shot_noise_sampler_is_poisson(q):
    """The table sampler behind shot_noise draws Poisson(k q / 255) exactly."""
    import math

    from agedistill_core.corruptions.noise import shot_noise_levels

    rng = np.random.default_rng(q)
    for level in (0, 1, 50, 128, 255):
        img = np.full((200, 250, 1), level, np.uint8)
        counts = np.rint(shot_noise_levels(img, q, rng).ravel() * q).astype(int)
        lam = level / 255 * q
        if lam == 0:
            assert not counts.any()
            continue
        ks = np.arange(counts.max() + 1)
        pmf = np.exp(-lam + ks * math.log(lam) - np.array([math.lgamma(k + 1) for k in ks]))
        expected = pmf * counts.size
        observed = np.bincount(counts)
        keep = expected > 5
        chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
        dof = keep.sum() - 1
        # a chi-square well within 5 standard deviations of its mean
        assert chi2 < dof + 5 * math.sqrt(2 * max(dof, 1)) + 5, (level, chi2, dof)
        assert abs(counts.mean() - lam) < 5 * math.sqrt(lam / counts.size) + 1e-9


def test_read_only_input(synthetic):
    synthetic.setflags(write=False)
    for name in corruption_names():
        assert corrupt(synthetic, name, 5, seed=0).flags.writeable
