"""JPEG re-encoding and pixelation (SPEC section 6); uint8 in, uint8 out."""
from __future__ import annotations

import io

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
    """Pillow ``BOX`` downscale to ``(int(W q), int(H q))``, then Pillow ``BOX``
    upscale back to ``(W, H)`` (SPEC section 6, the authors' code).

    Pillow's BOX weights whole source pixels: a low-resolution pixel is the
    plain mean of the source pixels whose centres fall in its box.  OpenCV's
    ``INTER_AREA`` weights fractional coverage instead and differs from it by
    up to 129 grey levels at q = .6, .41, .3, so Pillow is used here.  Upscaling
    with BOX takes, for each output pixel, the low-resolution pixel whose box
    holds its centre.  A low-resolution side below 1 px (a side under
    1 / q px) is raised to 1, where the authors' code would fail.
    """
    h, w = image.shape[:2]
    sw, sh = max(1, int(w * q)), max(1, int(h * q))
    im = Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(im.resize((sw, sh), Image.BOX).resize((w, h), Image.BOX))


@register_corruption("jpeg")
def _jpeg(image, p, rng):
    return jpeg_raw(image, int(p))


@register_corruption("pixelation")
def _pixelation(image, p, rng):
    return pixelate_raw(image, float(p))
