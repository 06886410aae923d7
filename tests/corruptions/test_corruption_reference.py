"""Our formulas against the imagecorruptions (ImageNet-C) reference on real faces.

Where our formula equals an imagecorruptions function we call our raw function
with the reference's own parameter values (and, for the noisy ones, the same
``RandomState`` draws) and compare the float outputs before quantisation.

imagecorruptions 1.1.2 is broken on current libraries for gaussian_blur and
glass_blur (``skimage.filters.gaussian(multichannel=...)`` was removed in
scikit-image 0.19) and fog (``np.float_`` was removed in NumPy 2.0); our
Gaussian blur is compared with scikit-image's ``gaussian`` directly instead.
Pixelation (Pillow BOX down, BOX up; ImageNet-C upscales with NEAREST) is
compared with ImageNet-C for integer factors only.  The SPEC section 6 formulas
of motion blur, defocus blur and pixelation at 200 and 448 px are checked
against independent references in ``test_corruption_spec_formulas.py``.
"""
from __future__ import annotations

import numpy as np
import pytest
import skimage as sk
from PIL import Image

from agedistill_core.corruptions import corrupt
from agedistill_core.corruptions.blur import (
    defocus_blur_raw, disc_kernel, gaussian_blur_raw, motion_blur_raw, zoom_blur_raw,
)
from agedistill_core.corruptions.digital import jpeg_raw, pixelate_raw
from agedistill_core.corruptions.noise import (
    gaussian_noise_raw, shot_noise_levels, shot_noise_raw,
)
from agedistill_core.corruptions.photometric import brightness_raw, contrast_raw
from agedistill_core.corruptions.spatter import spatter_raw

from _corruption_data import needs_faces

pytestmark = [needs_faces, pytest.mark.shared_data]

# imagecorruptions 1.1.2's own per-severity parameters
IC_NOISE = (.08, .12, 0.18, 0.26, 0.38)
IC_SHOT = (60, 25, 12, 5, 3)
IC_DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))
IC_MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
IC_ZOOM = ((1.11, .01), (1.16, .01), (1.21, .02), (1.26, .02), (1.31, .03))
IC_CONTRAST = (0.4, .3, .2, .1, .05)
IC_BRIGHTNESS = (.1, .2, .3, .4, .5)
IC_JPEG = (25, 18, 15, 10, 7)
IC_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
IC_SPATTER = ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
              (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
              (0.67, 0.4, 1, 0.65, 1.5, 1))
SEV = range(1, 6)


def f32(img):
    return img.astype(np.float32) / 255


def as255(x):
    return np.clip(np.asarray(x, np.float64), 0, 1) * 255


def maxdiff(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.mark.parametrize("sev", SEV)
def test_gaussian_noise_same_draws(faces, ic, sev):
    for k, img in enumerate(faces):
        np.random.seed(k)
        ref = ic.gaussian_noise(img, sev)
        ours = gaussian_noise_raw(img / 255.0, IC_NOISE[sev - 1], np.random.RandomState(k))
        assert maxdiff(ref, as255(ours)) < 1e-9


@pytest.mark.parametrize("sev", SEV)
def test_shot_noise_same_draws(faces, ic, sev):
    for k, img in enumerate(faces):
        np.random.seed(k)
        ref = ic.shot_noise(img, sev)
        ours = shot_noise_raw(img / 255.0, IC_SHOT[sev - 1], np.random.RandomState(k))
        assert maxdiff(ref, as255(ours)) < 1e-4


def test_noise_statistics_of_the_generator_path(faces):
    img = faces[0]
    x = img / 255.0
    mid = (x > 0.3) & (x < 0.7)  # away from clipping
    for sev, sigma in zip(SEV, (.08, .12, .18, .24, .30)):
        res = corrupt(img, "gaussian_noise", sev, seed=sev) / 255.0 - x
        inside = mid & (np.abs(res) < 0.29)
        assert abs(res[mid].mean()) < 0.01
        if sev <= 2:  # no clipping at all in the mid range
            assert res[mid].std() == pytest.approx(sigma, rel=0.05)
        assert inside.any()
    for sev, q in zip(SEV, (60, 29, 15, 8, 5)):
        xs = x[mid]
        ys = shot_noise_levels(img, q, np.random.default_rng(sev))[mid]
        assert abs((ys - xs).mean()) < 0.01
        # Var(Poisson(xq)/q) = x / q
        assert ((ys - xs) ** 2).mean() == pytest.approx((xs / q).mean(), rel=0.1)


@pytest.mark.parametrize("sev", SEV)
def test_defocus_blur(faces, ic, sev):
    r, s = IC_DEFOCUS[sev - 1]
    np.testing.assert_array_equal(disc_kernel(float(r), float(s)), ic.disk(r, s))
    for img in faces:
        assert maxdiff(ic.defocus_blur(img, sev), as255(defocus_blur_raw(f32(img), r, s))) < 1e-3


@pytest.mark.parametrize("sev", SEV)
def test_zoom_blur(faces, ic, sev):
    zmax, step = IC_ZOOM[sev - 1]
    for img in faces:
        ref = ic.zoom_blur(img, sev)
        ours = zoom_blur_raw(f32(img), np.arange(1, zmax, step))
        assert maxdiff(ref, as255(ours)) < 1e-3


@pytest.mark.parametrize("shape", [(37, 53), (64, 41), (100, 100)])
def test_zoom_blur_odd_sizes(ic, shape):
    img = np.random.default_rng(7).integers(0, 256, (*shape, 3), dtype=np.uint8)
    for sev in SEV:
        zmax, step = IC_ZOOM[sev - 1]
        assert maxdiff(ic.zoom_blur(img, sev),
                       as255(zoom_blur_raw(f32(img), np.arange(1, zmax, step)))) < 1e-3


@pytest.mark.parametrize("sev", SEV)
def test_motion_blur_same_angle(faces, ic, sev):
    radius, sigma = IC_MOTION[sev - 1]
    for k, img in enumerate(faces):
        np.random.seed(k)
        ref = ic.motion_blur(img, sev)
        angle = np.random.RandomState(k).uniform(-45, 45)
        ours = motion_blur_raw(img.astype(np.float32), radius, sigma, angle)
        assert maxdiff(ref, np.clip(ours, 0, 255)) < 1e-2


def test_motion_blur_scaled_kernel_and_angles(faces, ic):
    # our SPEC (radius, sigma) at H = 200 (severities 1 and 5) and at H = 448
    # (severity 5; 125 taps, still inside a 200 px image) match the port
    img = faces[0]
    for radius, sigma in ((13, 4), (27, 20), (62, 46)):
        for angle in (-45.0, -20.5, 0.0, 33.3, 45.0):
            ref = ic._motion_blur(img, radius, sigma, angle)
            ours = motion_blur_raw(img.astype(np.float32), radius, sigma, angle)
            assert maxdiff(ref, ours) < 1e-2


@pytest.mark.parametrize("sev", SEV)
def test_contrast(faces, ic, sev):
    for img in faces:
        ref = ic.contrast(img, sev)
        assert maxdiff(ref, as255(contrast_raw(f32(img), IC_CONTRAST[sev - 1]))) < 1e-2
    for q in (1.5, 5, 0.1):  # SPEC increase/decrease values
        img = faces[0] / 255.0
        mean = img.mean(axis=(0, 1), keepdims=True)
        assert maxdiff(as255((img - mean) * q + mean), as255(contrast_raw(f32(faces[0]), q))) < 1e-2


@pytest.mark.parametrize("sev", SEV)
def test_brightness(faces, ic, sev):
    q = IC_BRIGHTNESS[sev - 1]
    for img in faces:
        assert maxdiff(ic.brightness(img, sev), as255(brightness_raw(f32(img), q))) < 1e-2
        # and the decrease, against scikit-image's round trip directly
        hsv = sk.color.rgb2hsv(img / 255.0)
        hsv[..., 2] = np.clip(hsv[..., 2] - q, 0, 1)
        assert maxdiff(as255(sk.color.hsv2rgb(hsv)), as255(brightness_raw(f32(img), -q))) < 1e-2


def test_brightness_black_and_grey_pixels():
    img = np.array([[[0, 0, 0], [128, 128, 128], [255, 0, 0], [10, 200, 30]]], np.uint8)
    for q in (-0.5, -0.1, 0.1, 0.5):
        hsv = sk.color.rgb2hsv(img / 255.0)
        hsv[..., 2] = np.clip(hsv[..., 2] + q, 0, 1)
        assert maxdiff(as255(sk.color.hsv2rgb(hsv)), as255(brightness_raw(f32(img), q))) < 1e-3


@pytest.mark.parametrize("sev", SEV)
def test_jpeg_exact(faces, ic, sev):
    for img in faces:
        ref = np.asarray(ic.jpeg_compression(Image.fromarray(img), sev))
        np.testing.assert_array_equal(ref, jpeg_raw(img, IC_JPEG[sev - 1]))
        np.testing.assert_array_equal(ref, corrupt(img, "jpeg", sev, seed=0))


@pytest.mark.parametrize("sev", [2, 5])  # integer factors 2 and 4
def test_pixelate_integer_factors(faces, ic, sev):
    for img in faces:
        ref = np.asarray(ic.pixelate(Image.fromarray(img), sev))
        assert maxdiff(ref, pixelate_raw(img, IC_PIXELATE[sev - 1])) <= 1


@pytest.mark.parametrize("sev", SEV)
def test_spatter_same_draws(faces, ic, sev):
    c = IC_SPATTER[sev - 1]
    for k, img in enumerate(faces):
        np.random.seed(k)
        ref = ic.spatter(Image.fromarray(img), sev)
        ours = spatter_raw(f32(img), c[:4] + c[5:], c[4], np.random.RandomState(k))
        assert maxdiff(ref, as255(ours)) < 1e-2


def test_spatter_table_is_imagenet_c(ic):
    from agedistill_core.corruptions import CORRUPTIONS
    table = CORRUPTIONS.get("spatter").params
    assert tuple(tuple(c[:4]) + (e, c[4]) for c, e in table) == IC_SPATTER


@pytest.mark.parametrize("sigma", [1, 1.8, 2.6, 3.4, 4])
def test_gaussian_blur_against_skimage(faces, sigma):
    # imagecorruptions.gaussian_blur passes multichannel=, removed from scikit-image
    for img in faces:
        ref = sk.filters.gaussian(img / 255.0, sigma=sigma, channel_axis=-1)
        assert maxdiff(as255(ref), as255(gaussian_blur_raw(f32(img), sigma))) < 1e-2
        np.testing.assert_allclose(
            corrupt(img, "gaussian_blur", [1, 1.8, 2.6, 3.4, 4].index(sigma) + 1, seed=0),
            np.clip(ref * 255 + 0.5, 0, 255).astype(np.uint8), atol=1)


def test_spec_scaling_of_defocus(faces):
    # r and sigma scale by H / 48; the result is truncated to uint8
    img = faces[0]
    h = img.shape[0]
    for sev, (r0, s0) in enumerate(((1.5, .1), (2, .2), (2, .3), (2.5, .4), (3, .4)), 1):
        ours = corrupt(img, "defocus_blur", sev, seed=0)
        direct = np.clip(defocus_blur_raw(img / 255.0, r0 * (h / 48), s0 * (h / 48)), 0, 1) * 255
        np.testing.assert_array_equal(ours, direct.astype(np.uint8))
