"""Contrast and brightness (SPEC section 6), on float32 [0, 1] images."""
from __future__ import annotations

import cv2
import numpy as np

from .base import register_corruption, to_float


def contrast_raw(x: np.ndarray, q: float) -> np.ndarray:
    """``(x - per-channel mean) q + per-channel mean``."""
    means = np.array(cv2.mean(x)[:3], np.float32)  # float64 accumulation
    return (x - means) * np.float32(q) + means


def brightness_raw(x: np.ndarray, q: float) -> np.ndarray:
    """Add ``q`` to V of HSV, clip V to [0, 1], back to RGB.

    Exactly scikit-image's ``hsv2rgb(rgb2hsv(x))`` with V shifted, in closed
    form: hue and saturation are kept and every RGB channel of an HSV colour is
    proportional to V (``hsv2rgb`` builds each channel from ``v``, ``v(1-s)``,
    ``v(1-fs)``, ``v(1-(1-f)s)``), so the result is ``x * V' / V``; a black
    pixel (V = 0, where ``rgb2hsv`` sets S = H = 0) becomes grey ``V'``.
    Equal to the scikit-image round trip up to float rounding (tested), about
    30x faster.
    """
    v = np.maximum(np.maximum(x[..., 0], x[..., 1]), x[..., 2])
    v_new = np.clip(v + np.float32(q), 0.0, 1.0)
    black = v <= 0
    ratio = np.divide(v_new, v, out=np.zeros_like(v), where=~black)
    out = x * ratio[..., None]
    if black.any():
        out[black] = v_new[black][:, None]
    return out


@register_corruption("contrast_increase")
def _contrast_increase(image, p, rng):
    return contrast_raw(to_float(image), float(p))


@register_corruption("contrast_decrease")
def _contrast_decrease(image, p, rng):
    return contrast_raw(to_float(image), float(p))


@register_corruption("brightness_increase")
def _brightness_increase(image, p, rng):
    return brightness_raw(to_float(image), float(p))


@register_corruption("brightness_decrease")
def _brightness_decrease(image, p, rng):
    return brightness_raw(to_float(image), float(p))
