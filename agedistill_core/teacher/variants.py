"""The 8 test-time variants of SPEC section 3, applied to a square face crop.

Order (the variant axis everywhere): original, horizontal mirror, rotation +5
and -5 degrees, horizontal shift +5% and -5% of the width, scaling +5% and -5%.

Conventions (image coordinates, x right, y down, about the image centre):

* rotation ``+a`` turns the content counter-clockwise as displayed (OpenCV's
  ``getRotationMatrix2D`` sign);
* shift ``+s`` moves the content right by ``s * width`` pixels;
* scaling ``+s`` enlarges the content by ``1 + s`` (zoom in), ``-s`` shrinks it
  by ``1 - s`` (zoom out);
* resampling is bilinear; pixels that come from outside the crop repeat the
  border (like the crop itself, ``faces.crop.crop_square``).
"""
from __future__ import annotations

import cv2
import numpy as np

ROTATION_DEG = 5.0
SHIFT = 0.05
SCALE = 0.05

VARIANT_NAMES = ("original", "mirror", "rotate+5", "rotate-5", "shift+5%", "shift-5%", "scale+5%", "scale-5%")


def variant_matrices(size: int) -> list[np.ndarray | None]:
    """2x3 affine maps (source -> output) of the 6 warped variants for a ``size`` crop.

    ``None`` stands for original and mirror, which need no interpolation.
    """
    c = (size - 1) / 2.0  # centre in pixel-centre coordinates
    mats: list[np.ndarray | None] = [None, None]
    for angle in (ROTATION_DEG, -ROTATION_DEG):
        mats.append(cv2.getRotationMatrix2D((c, c), angle, 1.0))
    for s in (SHIFT, -SHIFT):
        mats.append(np.array([[1.0, 0.0, s * size], [0.0, 1.0, 0.0]]))
    for s in (SCALE, -SCALE):
        mats.append(cv2.getRotationMatrix2D((c, c), 0.0, 1.0 + s))
    return mats


def make_variants(crops: np.ndarray, n_variants: int = 8) -> np.ndarray:
    """uint8 (N, S, S, 3) crops -> (N, V, S, S, 3); ``n_variants`` 1 is the original only."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1] != crops.shape[2]:
        raise ValueError(f"expected square crops (N, S, S, C), got shape {crops.shape}")
    if n_variants not in (1, 8):
        raise ValueError(f"n_variants must be 1 or 8, got {n_variants}")
    n, size = crops.shape[0], crops.shape[1]
    if n_variants == 1:
        return crops[:, None].copy()
    out = np.empty((n, 8) + crops.shape[1:], crops.dtype)
    out[:, 0] = crops
    out[:, 1] = crops[:, :, ::-1]
    mats = variant_matrices(size)
    for i in range(n):
        src = crops[i]
        for v in range(2, 8):
            cv2.warpAffine(src, mats[v], (size, size), dst=out[i, v], flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    return out
