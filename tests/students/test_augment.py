"""Augmentation: bounded normals, policy distributions, geometry, photometrics, tensors."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from agedistill_core.errors import ConfigError
from agedistill_core.images import VGGFACE2_MEAN_RGB
from agedistill_core.students.augment import (
    AugmentConfig,
    AugmentParams,
    augment_face,
    bounded_normal,
    sample_params,
    to_tensor,
    warp_matrix,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared/data"
UTK = SHARED / "utkface/crop_part1"


def _phi(z: float) -> float:
    return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def _Phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


# moments of N(0, 1) clipped (not truncated) to [-2, 2]: mass Phi(-2) sits on each bound
CLIPPED_STD = math.sqrt((1 - 2 * _Phi(-2)) - 4 * _phi(2) + 8 * _Phi(-2))  # ~0.9594
CLIPPED_ABS_MEAN = 2 * (_phi(0) - _phi(2)) + 4 * _Phi(-2)  # E|X| ~0.7809


def _real_faces(k: int) -> list[np.ndarray]:
    if not UTK.is_dir():
        pytest.skip(f"needs ../shared/data/utkface/crop_part1 (looked in {UTK})")
    files = sorted(UTK.glob("*.jpg"))[:: 997][:k]
    return [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]


def _pattern(size: int = 120) -> np.ndarray:
    """A deterministic, asymmetric colour image."""
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([(x * 2) % 256, (y * 3) % 256, ((x + 2 * y) * 5) % 256], axis=-1)
    img[10:40, 15:30] = (250, 20, 20)  # left-upper block makes flips detectable
    return img.astype(np.uint8)


def test_bounded_normal_bounds_and_moments():
    rng = np.random.default_rng(0)
    x = bounded_normal(rng, 3.0, 2.0, size=200_000)
    assert x.min() >= -1.0 and x.max() <= 7.0
    assert x.min() == -1.0 and x.max() == 7.0  # ~2.3% clipped on each side
    assert abs(x.mean() - 3.0) < 0.02
    assert abs(x.std() - CLIPPED_STD * 2.0) < 0.02
    assert np.isscalar(bounded_normal(rng, 0.0, 1.0)) or np.ndim(bounded_normal(rng, 0.0, 1.0)) == 0


def test_sample_params_distributions_match_spec():
    cfg = AugmentConfig()
    rng = np.random.default_rng(1)
    ps = [sample_params(rng, cfg) for _ in range(20_000)]
    arr = {f: np.array([getattr(p, f) for p in ps], dtype=float) for f in AugmentParams.__dataclass_fields__}
    k = 0.045
    spec = {  # name: (mu, sigma)
        "rotation_deg": (0.0, 5.0),
        "offset_x": (-k / 5, k / 2),
        "offset_y": (-k / 5, k / 2),
        "size_change": (k / 2, k),
        "contrast": (1.0, 0.25),
        "brightness": (0.0, 24.0),
    }
    for name, (mu, sigma) in spec.items():
        a = arr[name]
        assert a.min() >= mu - 2 * sigma - 1e-12 and a.max() <= mu + 2 * sigma + 1e-12, name
        assert abs(a.mean() - mu) < 0.03 * sigma, name
        assert abs(a.std() - CLIPPED_STD * sigma) < 0.03 * sigma, name
    for name in ("shear_x", "shear_y"):
        a = arr[name]
        assert a.min() >= 0.0 and a.max() <= 0.1 + 1e-12
        assert abs(a.mean() - 0.05 * CLIPPED_ABS_MEAN) < 0.001
    assert abs(np.corrcoef(arr["shear_x"], arr["shear_y"])[0, 1]) < 0.03  # drawn independently
    assert abs(arr["flip"].mean() - 0.5) < 0.015


def test_flip_probability_and_config_validation():
    rng = np.random.default_rng(2)
    assert not any(sample_params(rng, AugmentConfig(flip_p=0.0)).flip for _ in range(500))
    assert all(sample_params(rng, AugmentConfig(flip_p=1.0)).flip for _ in range(500))
    with pytest.raises(ConfigError, match="flip_p"):
        AugmentConfig(flip_p=1.5)
    with pytest.raises(ConfigError, match="rotation_sigma"):
        AugmentConfig(rotation_sigma=-1)
    with pytest.raises(ConfigError, match="rotaton"):
        AugmentConfig.from_dict({"rotaton_sigma": 3})
    assert AugmentConfig.from_dict({"flip_p": 0.2}).flip_p == 0.2


@pytest.mark.parametrize("out_size", [96, 224, 64])
def test_disabled_equals_plain_resize_and_identity_warp_matches(out_size):
    crop = _pattern(120)
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    off = augment_face(crop, out_size, 0.2, rng, AugmentConfig(enabled=False))
    ref = cv2.resize(crop, (out_size, out_size), interpolation=cv2.INTER_LINEAR)
    assert off.shape == (out_size, out_size, 3) and off.dtype == np.uint8
    np.testing.assert_array_equal(off, ref)
    assert rng.bit_generator.state == state  # disabled draws nothing
    # the identity policy samples on the same grid as cv2.resize (fixed-point rounding aside);
    # a smooth image shows any sub-pixel misalignment (0.3 px gives a mean error ~0.6)
    y, x = np.mgrid[0:120, 0:120]
    smooth = np.ascontiguousarray(np.stack([x * 2, y * 2, x + y], axis=-1).astype(np.uint8))
    ref = cv2.resize(smooth, (out_size, out_size), interpolation=cv2.INTER_LINEAR)
    ident = augment_face(smooth, out_size, 0.2, rng, AugmentConfig(), params=AugmentParams.identity())
    d = np.abs(ident.astype(int) - ref.astype(int))
    assert d.max() <= 1 and d.mean() < 0.2


def test_geometry_of_individual_parameters():
    S, out, margin = 120, 120, 0.2
    box = S / 1.4
    crop = _pattern(S)
    base = augment_face(crop, out, margin, None, AugmentConfig(), params=AugmentParams())
    # flip only: exactly the mirrored identity
    flipped = augment_face(crop, out, margin, None, AugmentConfig(), params=AugmentParams(flip=True))
    np.testing.assert_array_equal(flipped, base[:, ::-1])
    # offset: box moved right by 0.05 box heights -> image content moves left by that many pixels
    m = warp_matrix(S, out, margin, AugmentParams(offset_x=0.05))
    np.testing.assert_allclose(m[:, :2], np.eye(2))
    np.testing.assert_allclose(m[:, 2], [0.05 * box, 0.0])
    # size change: box side grows by 10% -> 10% more source pixels per output pixel, centre fixed
    m = warp_matrix(S, out, margin, AugmentParams(size_change=0.1))
    np.testing.assert_allclose(m[:, :2], 1.1 * np.eye(2))
    centre_out = np.array([out / 2 - 0.5, out / 2 - 0.5, 1.0])
    np.testing.assert_allclose(m @ centre_out, [S / 2 - 0.5, S / 2 - 0.5])
    # rotation about the centre: the centre maps to itself, the matrix is a scaled rotation
    m = warp_matrix(S, out, margin, AugmentParams(rotation_deg=7.0))
    np.testing.assert_allclose(m @ centre_out, [S / 2 - 0.5, S / 2 - 0.5])
    np.testing.assert_allclose(m[:, :2] @ m[:, :2].T, np.eye(2), atol=1e-12)
    # shear coefficients land off the diagonal
    m = warp_matrix(S, out, margin, AugmentParams(shear_x=0.05, shear_y=0.02))
    np.testing.assert_allclose(m[:, :2], [[1.0, 0.05], [0.02, 1.0]])


def test_photometric_formula():
    crop = np.full((50, 50, 3), 100, np.uint8)
    crop[:, :25] = 200
    cfg = AugmentConfig()
    out = augment_face(crop, 50, 0.2, None, cfg, params=AugmentParams(contrast=1.5, brightness=10.0))
    # (x - 128) * a + 128 + b: 200 -> 246, 100 -> 96
    assert out[25, 5].tolist() == [246, 246, 246]
    assert out[25, 45].tolist() == [96, 96, 96]
    out = augment_face(crop, 50, 0.2, None, cfg, params=AugmentParams(contrast=2.0, brightness=20.0))
    assert out[25, 5].tolist() == [255] * 3  # 292 clipped
    assert out[25, 45].tolist() == [92] * 3
    out = augment_face(crop, 50, 0.2, None, cfg, params=AugmentParams(contrast=1.0, brightness=-120.0))
    assert out[25, 45].tolist() == [0] * 3  # -20 clipped


def test_deterministic_given_rng_and_varies_between_draws():
    crop = _pattern(100)
    cfg = AugmentConfig()
    a = [augment_face(crop, 64, 0.2, np.random.default_rng(7), cfg) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    rng = np.random.default_rng(7)
    b = [augment_face(crop, 64, 0.2, rng, cfg) for _ in range(2)]
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(b[0], b[1])


def test_bad_crops_rejected():
    cfg = AugmentConfig()
    with pytest.raises(ValueError, match="square"):
        augment_face(np.zeros((10, 12, 3), np.uint8), 8, 0.2, np.random.default_rng(0), cfg)
    with pytest.raises(ValueError, match="uint8"):
        augment_face(np.zeros((10, 10, 3), np.float32), 8, 0.2, np.random.default_rng(0), cfg)


@pytest.mark.shared_data
def test_real_faces_keep_shape_and_vary():
    faces = _real_faces(3)
    cfg = AugmentConfig()
    rng = np.random.default_rng(11)
    for face in faces:
        assert face.shape == (200, 200, 3)
        plain = augment_face(face, 96, 0.2, rng, AugmentConfig(enabled=False))
        outs = [augment_face(face, 96, 0.2, rng, cfg) for _ in range(6)]
        for o in outs:
            assert o.shape == (96, 96, 3) and o.dtype == np.uint8
            # never identical to the plain resize, but still the same face (flip aside)
            assert np.abs(o.astype(float) - plain.astype(float)).mean() > 0.5
            corr = max(_corr(o, plain), _corr(o[:, ::-1], plain))
            assert corr > 0.5  # different faces correlate < 0.45
        assert len({o.tobytes() for o in outs}) == len(outs)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(float).mean(axis=2).ravel()
    b = b.astype(float).mean(axis=2).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_to_tensor_layout_and_mean():
    rng = np.random.default_rng(5)
    batch = rng.integers(0, 256, size=(2, 8, 6, 3), dtype=np.uint8)
    t = to_tensor(batch)
    assert t.shape == (2, 3, 8, 6) and t.dtype == torch.float32 and t.is_contiguous()
    for c in range(3):
        np.testing.assert_allclose(t[:, c].numpy(), batch[..., c].astype(np.float32) - VGGFACE2_MEAN_RGB[c], rtol=0, atol=1e-4)
    with pytest.raises(ValueError):
        to_tensor(batch[0])


# -- in-the-wild options (color_p, quality_p): off by default, SPEC's stream untouched --

def test_wild_options_off_keep_specs_random_stream():
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(20):
        assert sample_params(a, AugmentConfig()) == sample_params(
            b, AugmentConfig(color_p=0.0, quality_p=0.0, noise_p=0.0, occlude_p=0.0))
    assert a.random() == b.random()  # nothing extra was drawn
    p = sample_params(np.random.default_rng(5), AugmentConfig())
    assert (p.saturation, p.gains, p.resolution, p.jpeg_quality) == (1.0, (1.0, 1.0, 1.0), 1.0, 0)
    assert (p.noise_sigma, p.blots) == (0.0, ())


def test_wild_draws_have_their_documented_ranges():
    rng, cfg = np.random.default_rng(0), AugmentConfig(color_p=0.5, quality_p=0.5)
    ps = [sample_params(rng, cfg) for _ in range(4000)]
    coloured = [p for p in ps if p.gains != (1.0, 1.0, 1.0)]
    degraded = [p for p in ps if p.resolution < 1.0]
    assert 0.45 < len(coloured) / len(ps) < 0.55 and 0.45 < len(degraded) / len(ps) < 0.55
    grey = np.mean([p.saturation == 0.0 for p in coloured])
    assert 0.25 < grey < 0.35
    assert all(0.3 <= p.saturation <= 1.6 for p in coloured if p.saturation)
    assert all(0.84 <= g <= 1.16 for p in coloured for g in p.gains)
    assert all(0.25 <= p.resolution < 1.0 for p in degraded)
    jpeg = [p.jpeg_quality for p in degraded if p.jpeg_quality]
    assert 0.4 < len(jpeg) / len(degraded) < 0.6 and min(jpeg) >= 15 and max(jpeg) <= 80
    assert not any(p.jpeg_quality for p in ps if p.resolution == 1.0)


def test_grey_photo_low_resolution_and_jpeg_on_a_real_face():
    face = _real_faces(1)[0]
    base = dict(contrast=1.0, brightness=0.0)
    plain = augment_face(face, 96, 0.2, None, AugmentConfig(), params=AugmentParams(**base))
    grey = augment_face(face, 96, 0.2, None, AugmentConfig(), params=AugmentParams(**base, saturation=0.0))
    assert np.abs(grey[..., 0].astype(int) - grey[..., 2].astype(int)).max() <= 1  # no colour left
    assert np.abs(plain[..., 0].astype(int) - plain[..., 2].astype(int)).mean() > 5  # a face has colour
    assert abs(grey.mean() - plain.mean()) < 4  # the same light
    blurry = augment_face(face, 96, 0.2, None, AugmentConfig(), params=AugmentParams(**base, resolution=0.25))

    def detail(img):  # high-frequency energy
        g = img.astype(np.float32).mean(axis=2)
        return float(np.abs(g - cv2.GaussianBlur(g, (0, 0), 1.0)).mean())
    assert detail(blurry) < 0.5 * detail(plain)
    assert _corr(blurry, plain) > 0.9  # still the same face
    jpeg = augment_face(face, 96, 0.2, None, AugmentConfig(), params=AugmentParams(**base, jpeg_quality=15))
    assert jpeg.shape == plain.shape and jpeg.dtype == np.uint8
    assert 0.5 < np.abs(jpeg.astype(float) - plain.astype(float)).mean() < 12 and _corr(jpeg, plain) > 0.9


def test_noise_and_blot_draws_have_their_documented_ranges():
    rng, cfg = np.random.default_rng(1), AugmentConfig(noise_p=0.5, occlude_p=0.3)
    ps = [sample_params(rng, cfg) for _ in range(4000)]
    noisy = [p.noise_sigma for p in ps if p.noise_sigma]
    blotted = [p.blots for p in ps if p.blots]
    assert 0.45 < len(noisy) / len(ps) < 0.55 and 0.25 < len(blotted) / len(ps) < 0.35
    assert 3.0 <= min(noisy) and max(noisy) <= 50.0
    # log-uniform: as many draws below the geometric middle sqrt(3 * 50) as above it
    assert 0.45 < np.mean(np.array(noisy) < np.sqrt(150.0)) < 0.55
    assert {len(b) for b in blotted} == {1, 2, 3, 4}
    for cx, cy, ax, ay, angle, opacity, *rgb in (blot for b in blotted for blot in b):
        assert 0 <= cx <= 1 and 0 <= cy <= 1 and 0.03 <= ax <= 0.12 and 0.03 <= ay <= 0.12
        assert 0 <= angle <= 180 and 0.5 <= opacity <= 1 and all(0 <= c <= 255 for c in rgb)
    # the same draw gives the same image: the noise field has its own seed in the draw
    face = _pattern(96)
    p = next(p for p in ps if p.noise_sigma and p.blots)
    once, again = (augment_face(face, 96, 0.2, None, cfg, params=p) for _ in range(2))
    assert np.array_equal(once, again) and not np.array_equal(once, augment_face(
        face, 96, 0.2, None, cfg, params=dataclasses.replace(p, seed=p.seed + 1)))


def test_sensor_noise_and_a_blot_on_a_real_face():
    face = cv2.resize(_real_faces(1)[0], (96, 96), interpolation=cv2.INTER_AREA)
    base = dict(contrast=1.0, brightness=0.0)
    plain = augment_face(face, 96, 0.2, None, AugmentConfig(), params=AugmentParams(**base))
    for sigma in (4.0, 40.0):
        noisy = augment_face(face, 96, 0.2, None, AugmentConfig(),
                             params=AugmentParams(**base, noise_sigma=sigma, seed=3))
        diff = noisy.astype(float) - plain.astype(float)
        # std of the added noise: sigma, less only where clipping at 0 or 255 bites
        assert 0.8 * sigma < diff.std() < 1.05 * sigma and abs(diff.mean()) < 0.2 * sigma
        assert _corr(noisy, plain) > (0.99 if sigma < 10 else 0.6)  # still the same face
    red = (0.5, 0.5, 0.1, 0.1, 0.0, 1.0, 255, 0, 0)  # an opaque red disc of radius 9.6 px in the middle
    blotted = augment_face(face, 96, 0.2, None, AugmentConfig(), params=AugmentParams(**base, blots=(red,)))
    assert tuple(blotted[48, 48]) == (255, 0, 0) and tuple(blotted[44, 51]) == (255, 0, 0)
    outside = np.ones((96, 96), bool)
    outside[30:67, 30:67] = False
    assert np.array_equal(blotted[outside], plain[outside])  # nothing changes away from the blot
    edge = (0.0, 0.0, 0.1, 0.1, 0.0, 1.0, 0, 0, 255)  # centred on the corner: clipped, not an error
    cornered = augment_face(face, 96, 0.2, None, AugmentConfig(), params=AugmentParams(**base, blots=(edge,)))
    assert tuple(cornered[0, 0]) == (0, 0, 255) and np.array_equal(cornered[60:], plain[60:])


def test_augment_setting_is_a_switch_or_a_mapping_of_options():
    assert AugmentConfig.from_setting(True) == AugmentConfig()
    assert not AugmentConfig.from_setting(False).enabled
    cfg = AugmentConfig.from_setting({"color_p": 0.5, "quality_p": 0.25})
    assert cfg.enabled and (cfg.color_p, cfg.quality_p, cfg.rotation_sigma) == (0.5, 0.25, 5.0)
    with pytest.raises(ConfigError, match="colour_p.*color_p"):
        AugmentConfig.from_setting({"colour_p": 0.5})
    with pytest.raises(ConfigError, match="quality_p must be in"):
        AugmentConfig.from_setting({"quality_p": 2})
    with pytest.raises(ConfigError, match="noise_p must be in"):
        AugmentConfig.from_setting({"noise_p": -0.1})
    assert AugmentConfig(noise_p=0.5, occlude_p=0.3).describe() == (
        "SPEC augmentation + sensor noise on 50% of faces + smudges and blots on 30% of faces")
    with pytest.raises(ConfigError, match="students.augment must be"):
        AugmentConfig.from_setting("yes")
