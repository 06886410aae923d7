"""JPEG re-encoding and pixelation (SPEC section 6); uint8 in, uint8 out."""
from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from .base import register_corruption


def jpeg_raw(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at ``quality`` with Pillow (libjpeg-turbo, its default
    4:2:0 chroma subsampling, as ImageNet-C's ``jpeg_compression``) and decode.

    The image is encoded as RGB.  The authors' code passed OpenCV's BGR arrays,
    so its encoder saw red and blue swapped (a different luma/chroma split,
    hence slightly different artefacts); we encode the true colours.
    """
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.array(im.convert("RGB"))


def pixelate_raw(image: np.ndarray, q: float) -> np.ndarray:
    """Box-filter downscale to ``q`` x size, box-filter upscale back.

    Downscale: OpenCV ``INTER_AREA`` to ``int(W q) x int(H q)`` (at least 1 px):
    each low-resolution pixel is the area-weighted mean of the source pixels
    its box covers (fractional coverage at the box edges).  ImageNet-C's
    ``pixelate`` uses Pillow's ``BOX``, which instead averages the whole pixels
    whose centres fall in the box; the two agree (up to rounding) for integer
    factors (q = .5, .25) and differ by a fraction of a pixel's weight
    otherwise.  Upscale: box reconstruction, each output pixel taking the
    low-resolution pixel whose box holds its centre (OpenCV
    ``INTER_NEAREST_EXACT``, = Pillow ``NEAREST``/``BOX`` upsampling except
    where a centre lies exactly on a box edge).
    """
    h, w = image.shape[:2]
    sw, sh = max(1, int(w * q)), max(1, int(h * q))
    small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)


@register_corruption("jpeg")
def _jpeg(image, p, rng):
    return jpeg_raw(image, int(p))


@register_corruption("pixelation")
def _pixelation(image, p, rng):
    return pixelate_raw(image, float(p))
