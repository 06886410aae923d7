"""SPEC 3 test-time variants: geometry measured on synthetic images."""
from __future__ import annotations

import numpy as np
import pytest

from agedistill_core.teacher.variants import VARIANT_NAMES, make_variants

S = 200


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_shapes_and_order():
    crops = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    v = make_variants(crops, 8)
    assert v.shape == (3, 8, 64, 64, 3) and v.dtype == np.uint8
    assert len(VARIANT_NAMES) == 8
    np.testing.assert_array_equal(v[:, 0], crops)
    assert make_variants(crops, 1).shape == (3, 1, 64, 64, 3)
    with pytest.raises(ValueError):
        make_variants(crops, 4)


def test_mirror_twice_is_identity():
    crops = np.random.default_rng(1).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    once = make_variants(crops, 8)[:, 1]
    twice = make_variants(once, 8)[:, 1]
    np.testing.assert_array_equal(twice, crops)
    assert not np.array_equal(once, crops)


def test_shift_moves_a_marker_by_five_percent_of_the_width():
    img = np.zeros((1, S, S, 3), np.uint8)
    img[0, 90:110, 90:110] = 255
    v = make_variants(img, 8)[0]
    c0 = _centroid(v[0, ..., 0] > 127)
    right, left = _centroid(v[4, ..., 0] > 127), _centroid(v[5, ..., 0] > 127)
    assert right[0] - c0[0] == pytest.approx(0.05 * S, abs=0.5)
    assert c0[0] - left[0] == pytest.approx(0.05 * S, abs=0.5)
    assert right[1] == pytest.approx(c0[1], abs=0.5)


def _line_angle(grey: np.ndarray) -> float:
    ys, xs = np.nonzero(grey > 127)
    slope = np.polyfit(xs, ys, 1)[0]
    return float(np.degrees(np.arctan(-slope)))  # counter-clockwise as displayed (y points down)


def test_rotation_angle_recovered_from_a_line():
    img = np.zeros((1, S, S, 3), np.uint8)
    img[0, 99:101, 30:170] = 255  # horizontal line through the centre
    v = make_variants(img, 8)[0]
    assert _line_angle(v[0, ..., 0]) == pytest.approx(0, abs=0.2)
    assert _line_angle(v[2, ..., 0]) == pytest.approx(5, abs=0.3)
    assert _line_angle(v[3, ..., 0]) == pytest.approx(-5, abs=0.3)


def test_scaling_changes_size_by_five_percent_about_the_centre():
    img = np.zeros((1, S, S, 3), np.uint8)
    img[0, 50:150, 50:150] = 255  # 100 px square centred
    v = make_variants(img, 8)[0]
    width = lambda a: (a[..., 0] > 127).any(0).sum()
    assert width(v[6]) == pytest.approx(105, abs=1.5)
    assert width(v[7]) == pytest.approx(95, abs=1.5)
    for k in (6, 7):
        np.testing.assert_allclose(_centroid(v[k, ..., 0] > 127), _centroid(v[0, ..., 0] > 127), atol=0.5)
