"""Shared fixtures for the corruption tests.

Real faces come from ../shared/data (repo at /work/main, data at
/work/shared/data); tests that need them are skipped, with the path named,
when it is absent.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from _corruption_data import UTK, load_faces  # noqa: E402


@pytest.fixture(scope="session")
def faces() -> list[np.ndarray]:
    if not UTK.exists():
        pytest.skip("needs ../shared/data/utkface/crop_part1 (real faces)")
    return load_faces(3)


@pytest.fixture(scope="session")
def ic():
    """The imagecorruptions reference module (its pkg_resources warning muted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import imagecorruptions.corruptions as mod
    return mod


@pytest.fixture
def synthetic() -> np.ndarray:
    """A 48x52 image with structure (gradients + a bright square) and noise.

    48 px high: below that, motion blur's severity-1 sigma floor(3 H / 144) is 0,
    i.e. ImageMagick's identity (see test_tiny_motion_blur_is_identity)."""
    rng = np.random.default_rng(123)
    yy, xx = np.mgrid[0:48, 0:52]
    img = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=2).astype(np.float64)
    img[10:25, 15:35] = 230
    img += rng.normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
