"""Blurs: Gaussian, defocus, zoom and motion (SPEC section 6).

Each has a ``*_raw`` function taking the raw parameter values (used by the
reference-comparison tests) and a registered severity wrapper.  The raw
functions work on float images on [0, 1] (HxWx3; float32 except defocus blur,
which the authors ran in float64 and truncated to uint8, as we do).

Only defocus and motion blur scale with the image (by H/48); motion blur's
scaled ImageMagick arguments are then floor-divided by 3, as in the authors'
code (SPEC section 6).
"""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from .base import register_corruption, to_float
from .params import REFERENCE_HEIGHT


# ----------------------------------------------------------------- gaussian blur
def gaussian_blur_raw(x: np.ndarray, sigma: float) -> np.ndarray:
    """Each channel convolved with a Gaussian of ``sigma`` pixels.

    Same as ``skimage.filters.gaussian(x, sigma, channel_axis=-1)`` /
    ``scipy.ndimage.gaussian_filter`` (truncate 4, mode 'nearest'): kernel
    radius ``int(4 sigma + 0.5)``, edge pixels replicated.
    """
    if sigma <= 0:
        return x
    k = 2 * int(4.0 * sigma + 0.5) + 1
    return cv2.GaussianBlur(x, (k, k), sigmaX=sigma, sigmaY=sigma,
                            borderType=cv2.BORDER_REPLICATE)


@register_corruption("gaussian_blur")
def _gaussian_blur(image, p, rng):
    return gaussian_blur_raw(to_float(image), float(p))


# ----------------------------------------------------------------- defocus blur
@lru_cache(maxsize=256)
def disc_kernel(radius: float, alias_sigma: float) -> np.ndarray:
    """The authors' (ImageNet-C's ``disk``) defocus kernel, float32.

    Grid: the integers -8..8 (17x17) when ``radius <= 8``, else
    ``np.arange(-radius, radius + 1)`` -- for a non-integer radius that grid is
    NOT centred on integers (r = 8.33 gives -8.33, -7.33, ..., 8.67, 18 points)
    and we keep it, since it is what LFW+C used (SPEC section 6).  Pixels with
    ``x^2 + y^2 <= r^2`` (float64 test) are 1, the disc is normalised, then
    smoothed by ``cv2.GaussianBlur(kernel, ksize, alias_sigma)`` with
    ksize 3x3 (5x5 when ``radius > 8``).  An even-sized kernel is applied with
    OpenCV's default anchor (``ksize // 2``), as ``cv2.filter2D`` did for them.
    """
    radius = float(radius)
    if radius <= 8:
        ax = np.arange(-8, 8 + 1, dtype=np.float64)
        ksize = (3, 3)
    else:
        ax = np.arange(-radius, radius + 1)
        ksize = (5, 5)
    xx, yy = np.meshgrid(ax, ax)
    k = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float32)
    k /= k.sum()
    k = cv2.GaussianBlur(k, ksize, sigmaX=float(alias_sigma))
    k.setflags(write=False)
    return k


def defocus_blur_raw(x: np.ndarray, radius: float, alias_sigma: float) -> np.ndarray:
    """Every channel filtered with ``disc_kernel(radius, alias_sigma)`` (OpenCV
    ``filter2D``, reflect-101 border, as ImageNet-C); float in, same float out."""
    return cv2.filter2D(x, -1, disc_kernel(float(radius), float(alias_sigma)))


def defocus_blur_params(height: int, r0: float, s0: float) -> tuple[float, float]:
    """(r, sigma) = (r0, s0) * (height / 48)."""
    scale = height / REFERENCE_HEIGHT
    return r0 * scale, s0 * scale


@register_corruption("defocus_blur")
def _defocus_blur(image, p, rng):
    # as the authors: float64 image / 255., filter2D, clip, * 255, truncated to uint8
    r, s = defocus_blur_params(image.shape[0], *p)
    y = defocus_blur_raw(image / 255.0, r, s)
    np.clip(y, 0.0, 1.0, out=y)
    y *= 255.0
    return y.astype(np.uint8)


# -------------------------------------------------------------------- zoom blur
@lru_cache(maxsize=1024)
def _zoom_axis(n: int, factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of scipy ``zoom(order=1)`` applied to the
    centre crop of length ``ceil(n / factor)`` and cut back to ``n`` samples."""
    c = int(math.ceil(n / factor))
    top = (n - c) // 2
    out = int(round(c * factor))  # scipy's output length
    ratio = (c - 1) / (out - 1) if out > 1 else 1.0  # scipy, grid_mode=False
    pos = np.arange(n, dtype=np.float64) * ratio
    i0 = np.floor(pos).astype(np.intp)
    i0 = np.minimum(i0, c - 1)
    w1 = (pos - i0).astype(np.float32)
    i1 = np.minimum(i0 + 1, c - 1)
    for a in (i0, i1, w1):
        a.setflags(write=False)
    return i0 + top, i1 + top, w1


def zoom_blur_raw(x: np.ndarray, factors) -> np.ndarray:
    """Mean of ``x`` and its centre-cropped zooms by every factor in ``factors``
    (the factor-1 "zoom" is the identity, so the original counts twice when 1
    is in ``factors``).

    Bilinear, exactly scipy ``ndimage.zoom(crop, (z, z, 1), order=1)`` cut to
    HxW as ImageNet-C's ``clipped_zoom`` (same sample positions and weights,
    float32 arithmetic), implemented as two separable first-axis gathers per
    factor with an OpenCV transpose in between; the accumulator lives in the
    transposed (W, H, 3) layout.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    h, w = x.shape[:2]
    xt = cv2.transpose(x).reshape(w, h, -1)
    acc = xt.copy()
    for z in factors:
        z = float(z)
        if z == 1.0:
            acc += xt
            continue
        r0, r1, wr = _zoom_axis(h, z)
        c0, c1, wc = _zoom_axis(w, z)
        rows = x[r0]
        rows += (x[r1] - rows) * wr[:, None, None]
        t = cv2.transpose(rows).reshape(w, h, -1)
        cols = t[c0]
        cols += (t[c1] - cols) * wc[:, None, None]
        acc += cols
    acc *= np.float32(1.0 / (len(factors) + 1))
    return cv2.transpose(acc).reshape(h, w, -1)


@lru_cache(maxsize=16)
def zoom_factors(zmax: float, step: float) -> tuple[float, ...]:
    """``np.arange(1, zmax, step)`` as the SPEC (and ImageNet-C) define it --
    note floating-point arange may include a value at ~zmax (1.11 for
    (1.11, .01)); we keep numpy's behaviour, as the authors' code did."""
    return tuple(float(v) for v in np.arange(1, zmax, step))


@register_corruption("zoom_blur")
def _zoom_blur(image, p, rng):
    return zoom_blur_raw(to_float(image), zoom_factors(*p))


# ------------------------------------------------------------------ motion blur
def motion_kernel(radius: int, sigma: float, angle: float):
    """ImageMagick ``-motion-blur radius x sigma + angle`` as a 2-D kernel.

    A one-sided line of ``width = 2 radius + 1`` taps with weights
    ``exp(-i^2 / (2 sigma^2))`` (normalised), tap ``i`` sampling the pixel at
    offset ``(ceil(i cos a - .5), ceil(i sin a - .5))`` (x right, y down).
    Returns ``(kernel, anchor)`` for ``cv2.filter2D``, or ``None`` for the
    identity: ImageMagick replaces sigma < epsilon by epsilon, which puts all
    weight on tap 0, so radius 0 or sigma 0 (tiny images) leave the image as is.
    """
    radius = int(radius)
    if radius <= 0 or sigma <= 0:
        return None
    width = 2 * radius + 1
    i = np.arange(width, dtype=np.float64)
    k = np.exp(-(i ** 2) / (2.0 * float(sigma) ** 2))
    k /= k.sum()
    rad = np.deg2rad(angle)
    py, px = width * np.sin(rad), width * np.cos(rad)
    hyp = math.hypot(py, px)
    oy = np.ceil((i * py) / hyp - 0.5).astype(np.intp)
    ox = np.ceil((i * px) / hyp - 0.5).astype(np.intp)
    ky = oy - oy.min()
    kx = ox - ox.min()
    kern = np.zeros((ky.max() + 1, kx.max() + 1), np.float32)
    np.add.at(kern, (ky, kx), k.astype(np.float32))
    return kern, (int(-ox.min()), int(-oy.min()))


def motion_blur_raw(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """Motion blur of ``x`` (any float scale), edge pixels replicated.

    Same as ImageNet-C's ``_motion_blur`` port while the line stays inside the
    image; that port stops adding taps (dropping their weight, so darkening)
    once a shift exceeds the image, where ImageMagick (and we) keep sampling
    the replicated edge.
    """
    km = motion_kernel(radius, sigma, angle)
    if km is None:
        return x
    kern, anchor = km
    return cv2.filter2D(x, -1, kern, anchor=anchor, borderType=cv2.BORDER_REPLICATE)


#: The authors divide the scaled ImageMagick (r0, s0) by this (``c[0] // 3``).
MOTION_BLUR_DIVISOR = 3


def motion_blur_params(height: int, r0: int, s0: int) -> tuple[int, int]:
    """(radius, sigma) = (floor(r0 H/48 / 3), floor(s0 H/48 / 3)), in exact
    integers: the authors scale (r0, s0) by H/48 and floor-divide by 3
    (``c[0] // 3``).  Equal to their float ``(r0 * H / 48) // 3`` for every H:
    where ``r0 H / 144`` is an integer, H / 48 is a dyadic fraction, so their
    product is exact."""
    d = REFERENCE_HEIGHT * MOTION_BLUR_DIVISOR
    return (int(r0) * height) // d, (int(s0) * height) // d


@register_corruption("motion_blur", random=True)
def _motion_blur(image, p, rng):
    radius, sigma = motion_blur_params(image.shape[0], *p)
    angle = rng.uniform(-45.0, 45.0)
    return motion_blur_raw(to_float(image), radius, sigma, angle)
