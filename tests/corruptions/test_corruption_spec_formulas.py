"""Motion blur, defocus blur and pixelation against SPEC section 6, at every
severity, on real faces of 200 px (UTKFace) and 448 px (FairFace).

The references here are written from the SPEC text alone, directly and slowly
(Python loops over taps / pixels, NumPy gathers, the literal Pillow / OpenCV
calls the SPEC names), independently of ``agedistill_core.corruptions``; the
corruption output must be within 1 grey level of them.  Motion blur's random
angle is fixed by the seed: ``corrupt(..., seed=k)`` draws it as
``numpy.random.default_rng(k).uniform(-45, 45)``.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from PIL import Image

from agedistill_core.corruptions import corrupt
from agedistill_core.corruptions.blur import disc_kernel, motion_blur_raw

from _corruption_data import FAIRFACE, UTK, load_fairface, load_faces

SEV = (1, 2, 3, 4, 5)
# SPEC section 6
MOTION_R0_S0 = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
DEFOCUS_R_SIGMA = ((1.5, .1), (2, .2), (2, .3), (2.5, .4), (3, .4))
PIXELATION_Q = (.6, .5, .41, .3, .25)

# (radius, sigma) = (floor(r0 H/48 / 3), floor(s0 H/48 / 3)), worked out by hand
MOTION_AT = {
    200: ((13, 4), (20, 6), (20, 11), (20, 16), (27, 20)),
    448: ((31, 9), (46, 15), (46, 24), (46, 37), (62, 46)),
}
# defocus kernel side: 17 when r <= 8, else len(arange(-r, r + 1)) = ceil(2 r + 1)
DISC_SIDE_AT = {200: (17, 18, 18, 22, 26), 448: (29, 39, 39, 48, 57)}


# ------------------------------------------------------------------- the faces
@pytest.fixture(scope="module", params=[200, 448], ids=["utkface200", "fairface448"])
def face(request) -> np.ndarray:
    size = request.param
    path, load = (UTK, load_faces) if size == 200 else (FAIRFACE, load_fairface)
    if not path.exists():
        pytest.skip(f"needs {path} (real {size}x{size} faces)")
    img = load(2)[1]
    assert img.shape == (size, size, 3)
    return img


def maxdiff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# ----------------------------------------------------------------- motion blur
def ref_motion_params(h: int, r0: int, s0: int) -> tuple[int, int]:
    """The authors: c = (r0, s0) scaled by H/48, then ``c[0] // 3``."""
    c = (r0 * (h / 48), s0 * (h / 48))
    return int(c[0] // 3), int(c[1] // 3)


def ref_motion_blur(img: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage, by hand, in float64 on the 0..255 scale.

    width = 2 radius + 1 taps; tap i has weight exp(-i^2 / (2 sigma^2)) (all
    normalised to sum 1; sigma below MagickEpsilon is raised to it) and reads
    the pixel at (x + offset.x, y + offset.y), where point = (width sin a,
    width cos a), offset.x = ceil(i point.y / |point| - 1/2) and offset.y =
    ceil(i point.x / |point| - 1/2): a one-sided line.  Outside the image the
    edge pixel is read (ImageMagick's default "edge" virtual pixels).
    """
    h, w = img.shape[:2]
    width = 2 * radius + 1
    sigma = max(float(sigma), 1e-12)
    weights = [math.exp(-(i * i) / (2.0 * sigma * sigma)) for i in range(width)]
    total = sum(weights)
    point_x = width * math.sin(math.radians(angle))
    point_y = width * math.cos(math.radians(angle))
    hyp = math.hypot(point_x, point_y)
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    src = img.astype(np.float64)
    out = np.zeros(img.shape, np.float64)
    for i in range(width):
        ox = math.ceil(i * point_y / hyp - 0.5)
        oy = math.ceil(i * point_x / hyp - 0.5)
        tap = src[np.clip(rows + oy, 0, h - 1), np.clip(cols + ox, 0, w - 1)]
        out += (weights[i] / total) * tap
    return out


def test_motion_params_by_hand():
    for h, table in MOTION_AT.items():
        assert tuple(ref_motion_params(h, r0, s0) for r0, s0 in MOTION_R0_S0) == table


@pytest.mark.shared_data
@pytest.mark.parametrize("sev", SEV)
def test_motion_blur_matches_imagemagick_formula(face, sev):
    h = face.shape[0]
    radius, sigma = ref_motion_params(h, *MOTION_R0_S0[sev - 1])
    assert (radius, sigma) == MOTION_AT[h][sev - 1]
    seed = 1000 + sev
    angle = np.random.default_rng(seed).uniform(-45.0, 45.0)
    ref = ref_motion_blur(face, radius, sigma, angle)
    ours = corrupt(face, "motion_blur", sev, seed=seed)
    assert maxdiff(ours, ref) <= 1, (h, sev, angle)
    assert (ours == np.floor(ref + 0.5)).mean() > 0.99
    # and a kernel 3x as long (the old bug) is far from it
    if sev == 5:
        long = ref_motion_blur(face, 3 * radius, 3 * sigma, angle)
        assert maxdiff(ours, long) > 10


@pytest.mark.shared_data
@pytest.mark.parametrize("angle", [-45.0, -31.7, -8.0, 0.0, 12.5, 30.0, 45.0])
def test_motion_blur_fixed_angles(face, angle):
    h = face.shape[0]
    radius, sigma = MOTION_AT[h][4 if h == 200 else 0]
    ours = motion_blur_raw(face.astype(np.float32) / 255, radius, sigma, angle) * 255
    assert maxdiff(ours, ref_motion_blur(face, radius, sigma, angle)) < 0.01


def test_motion_blur_angle_is_the_seeds_uniform_draw(synthetic):
    # seed k -> angle default_rng(k).uniform(-45, 45), so the angles are
    # uniform in [-45, 45]; each output matches the formula at its angle and
    # not at the mirrored one (the sign convention)
    img = synthetic  # 48 px high: severity 5 is radius 6, sigma 5
    radius, sigma = ref_motion_params(img.shape[0], *MOTION_R0_S0[4])
    assert (radius, sigma) == (6, 5)
    angles = []
    for seed in range(20):
        angle = np.random.default_rng(seed).uniform(-45.0, 45.0)
        ours = corrupt(img, "motion_blur", 5, seed=seed)
        assert maxdiff(ours, ref_motion_blur(img, radius, sigma, angle)) <= 1
        if abs(angle) > 10:
            assert maxdiff(ours, ref_motion_blur(img, radius, sigma, -angle)) > 5
        angles.append(angle)
    assert min(angles) < -20 and max(angles) > 20


# ---------------------------------------------------------------- defocus blur
def ref_disc(r: float, sigma: float) -> np.ndarray:
    """The SPEC's disc: grid = the integers -8..8 when r <= 8, else
    ``arange(-r, r + 1)`` (not centred on integers for a non-integer r); 1
    where x^2 + y^2 <= r^2; normalised; cv2.GaussianBlur with a 3x3 (r <= 8)
    or 5x5 window and sigma."""
    if r <= 8:
        grid, ksize = list(range(-8, 9)), (3, 3)
    else:
        grid, ksize = list(np.arange(-r, r + 1)), (5, 5)
    disc = np.array([[1.0 if x * x + y * y <= r * r else 0.0 for x in grid] for y in grid],
                    np.float32)
    disc /= disc.sum()
    return cv2.GaussianBlur(disc, ksize, sigma)


def ref_defocus_float(img: np.ndarray, r: float, sigma: float) -> np.ndarray:
    """Per channel cv2.filter2D of img / 255 (float64) with the disc, clipped,
    on the 0..255 scale, before the truncation to uint8."""
    k = ref_disc(r, sigma)
    x = img / 255.0
    out = np.stack([cv2.filter2D(x[..., c], -1, k) for c in range(3)], axis=2)
    return np.clip(out, 0, 1) * 255


def correlate_at(img: np.ndarray, k: np.ndarray, points) -> np.ndarray:
    """filter2D by hand at ``points``: sum_ij k[i, j] x[y + i - a, x + j - a]
    with OpenCV's default anchor a = side // 2 and its default border
    (reflect-101, NumPy's 'reflect'), on img / 255, times 255."""
    side = k.shape[0]
    a = side // 2
    pad = np.pad(img / 255.0, ((side, side), (side, side), (0, 0)), mode="reflect")
    out = []
    for y, x in points:
        win = pad[y - a + side: y - a + 2 * side, x - a + side: x - a + 2 * side]
        out.append(np.einsum("ij,ijc->c", k.astype(np.float64), win))
    return np.clip(np.array(out), 0, 1) * 255


def test_defocus_grid_is_not_centred_for_non_integer_radius():
    r = 2 * (200 / 48)  # severity 2 at 200 px: 8.33
    grid = np.arange(-r, r + 1)
    assert len(grid) == 18
    assert grid[0] == pytest.approx(-8.3333333) and grid[-1] == pytest.approx(8.6666667)
    k = ref_disc(r, 0.2 * 200 / 48)
    assert k.shape == (18, 18)
    assert not np.allclose(k, k[::-1, ::-1])  # the disc is off the grid's centre
    np.testing.assert_array_equal(disc_kernel(r, 0.2 * 200 / 48), k)


@pytest.mark.shared_data
@pytest.mark.parametrize("sev", SEV)
def test_defocus_blur_matches_formula(face, ic, sev):
    h = face.shape[0]
    r0, s0 = DEFOCUS_R_SIGMA[sev - 1]
    r, sigma = r0 * (h / 48), s0 * (h / 48)
    k = ref_disc(r, sigma)
    assert k.shape == (DISC_SIDE_AT[h][sev - 1],) * 2
    # the kernel is ImageNet-C's (the authors') disk at the scaled r, sigma
    np.testing.assert_array_equal(k, ic.disk(r, sigma))
    np.testing.assert_array_equal(disc_kernel(r, sigma), k)

    ref = ref_defocus_float(face, r, sigma)
    ours = corrupt(face, "defocus_blur", sev, seed=0)
    truncated = ref.astype(np.uint8)
    assert maxdiff(ours, truncated) <= 1
    assert (ours == truncated).mean() > 0.999
    # truncated, not rounded: rounding would change a large share of pixels
    assert (ours != np.floor(ref + 0.5)).mean() > 0.2

    # filter2D itself, by hand at sampled pixels (corners and edges included)
    rng = np.random.default_rng(sev)
    pts = [(0, 0), (0, h - 1), (h - 1, 0), (h - 1, h - 1), (h // 2, 0), (1, h // 3)]
    pts += [tuple(p) for p in rng.integers(0, h, (60, 2))]
    by_hand = correlate_at(face, k, pts)
    np.testing.assert_allclose(by_hand, np.array([ref[y, x] for y, x in pts]), atol=1e-6)
    assert maxdiff(np.array([ours[y, x] for y, x in pts]), by_hand.astype(np.uint8)) <= 1


# ----------------------------------------------------------------- pixelation
def ref_pixelate_pil(img: np.ndarray, q: float) -> np.ndarray:
    """The SPEC's words: BOX down to (int(W q), int(H q)), BOX up to (W, H)."""
    h, w = img.shape[:2]
    im = Image.fromarray(img)
    return np.asarray(im.resize((int(w * q), int(h * q)), Image.BOX).resize((w, h), Image.BOX))


def box_down(n: int, m: int) -> np.ndarray:
    """(m, n): low-res pixel o is the plain mean of the source pixels whose
    centres j + 1/2 lie in its box (o n/m, (o + 1) n/m]."""
    scale = n / m
    rows = [[1.0 if o * scale < j + 0.5 <= (o + 1) * scale else 0.0 for j in range(n)]
            for o in range(m)]
    a = np.array(rows)
    return a / a.sum(axis=1, keepdims=True)


def box_up(n: int, m: int) -> np.ndarray:
    """Output pixel o of n (upscaled from m) takes the low-res pixel whose box
    holds its centre: floor((o + 1/2) m / n)."""
    return np.array([math.floor((o + 0.5) * m / n) for o in range(n)])


def ref_pixelate_numpy(img: np.ndarray, q: float) -> np.ndarray:
    """Pillow's BOX by hand: horizontal pass then vertical, each rounded to
    8 bits (as Pillow's two-pass resampler), then the box upscale."""
    h, w = img.shape[:2]
    sh, sw = int(h * q), int(w * q)
    f = img.astype(np.float64)
    horiz = np.floor(np.einsum("oj,hjc->hoc", box_down(w, sw), f) + 0.5)
    small = np.floor(np.einsum("oi,ijc->ojc", box_down(h, sh), horiz) + 0.5)
    return small[box_up(h, sh)][:, box_up(w, sw)]


@pytest.mark.shared_data
@pytest.mark.parametrize("sev", SEV)
def test_pixelation_matches_pillow_box(face, sev):
    q = PIXELATION_Q[sev - 1]
    ours = corrupt(face, "pixelation", sev, seed=0)
    np.testing.assert_array_equal(ours, ref_pixelate_pil(face, q))
    assert maxdiff(ours, ref_pixelate_numpy(face, q)) <= 1
