"""Spatter: ImageNet-C's spatter (liquid or mud), SPEC section 6 parameters.

Parameters per severity: ``c0..c4`` from ``params.PARAMS['spatter']`` (c0, c1:
mean and std of the random layer; c2: its blur sigma in pixels; c3: the
threshold; c4: 0 liquid, 1 mud) and the extra parameter
``params.SPATTER_EXTRA`` (liquid: strength of the spatter layer; mud: sigma of
the mud-mask blur).  No size scaling (SPEC: only defocus and motion blur scale).

Colours are the intended RGB ones: pale turquoise water (175, 238, 238) and
brown mud (63, 42, 20) -- what ImageNet-C produces on an RGB image.  The
authors' code ran on OpenCV's BGR arrays, so in LFW+C as published the water
came out pale yellow (238, 238, 175) and the mud dark blue (20, 42, 63).
"""
from __future__ import annotations

import cv2
import numpy as np

from .base import register_corruption, to_float
from .params import PARAMS, SPATTER_EXTRA

WATER_RGB = np.array([175, 238, 238], np.float32) / np.float32(255)
MUD_RGB = np.array([63, 42, 20], np.float32) / np.float32(255)
_EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float32)


def _gaussian(a: np.ndarray, sigma: float) -> np.ndarray:
    """skimage/scipy Gaussian (truncate 4, 'nearest' edges) in float64."""
    k = 2 * int(4.0 * sigma + 0.5) + 1
    return cv2.GaussianBlur(a.astype(np.float64), (k, k), sigmaX=sigma, sigmaY=sigma,
                            borderType=cv2.BORDER_REPLICATE)


def spatter_raw(x: np.ndarray, c, extra: float, rng) -> np.ndarray:
    """ImageNet-C spatter of float32 [0, 1] RGB ``x`` with ``c = (c0..c4)``.

    ``rng`` may be a ``Generator`` or a ``RandomState`` (the latter reproduces
    ImageNet-C's draws exactly).  When no pixel passes the threshold (possible
    on tiny images) the liquid mode returns ``x`` unchanged, where ImageNet-C
    would divide by zero.
    """
    c0, c1, c2, c3, mode = c
    h, w = x.shape[:2]
    liquid = rng.normal(size=(h, w), loc=c0, scale=c1)
    liquid = _gaussian(liquid, c2)
    liquid[liquid < c3] = 0
    if int(mode) == 0:
        liq8 = (liquid * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(liq8, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        dist = cv2.filter2D(dist, cv2.CV_8U, _EMBOSS)
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = liq8 * dist
        top = m.max()
        if not top > 0:
            return x
        m /= top
        m *= np.float32(extra)
        return x + m[..., None] * WATER_RGB
    m = (liquid > c3).astype(np.float32)
    m = _gaussian(m, extra).astype(np.float32)
    m[m < 0.8] = 0
    return x * (1 - m[..., None]) + m[..., None] * MUD_RGB


_TABLE = tuple((c, e) for c, e in zip(PARAMS["spatter"], SPATTER_EXTRA))


@register_corruption("spatter", params=_TABLE, random=True)
def _spatter(image, p, rng):
    c, extra = p
    return spatter_raw(to_float(image), c, extra, rng)
